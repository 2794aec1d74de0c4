"""RFC 9162 section 2.1 Merkle tree hashing, proofs and proof verification.

The verifiers are a port of Go's `transparency-dev/merkle` (`proof/verify.go`,
Apache-2.0) and keep its names: `root_from_inclusion_proof`, `_chain_inner`,
`_chain_inner_right`, `_chain_border_right`, `_decomp_incl_proof`.

Conventions shared by every function here:

* a tree of `size` leaves is the RFC 9162 Merkle Tree Hash (MTH) over leaf
  hashes 0 .. size-1;
* ranges of leaves are half-open, `[begin, end)`;
* a node `(level, index)` is the *complete* subtree covering leaves
  `[index << level, (index + 1) << level)`; level 0 is the leaves.  A server
  that stores those hashes can serve any proof: `subtree_ranges_for_*` say
  which leaf ranges a proof's elements hash, `decompose_range` splits a range
  into stored nodes and `hash_from_subtrees` folds their hashes back together.

Proof verification raises `VerificationError` (check `inclusion` or
`consistency`) for a proof of the wrong shape and `RootMismatchError` for a
well-formed proof that leads elsewhere.  The O(n) reference generators and the
range helpers raise `ValueError` for arguments outside their preconditions:
those come from the caller's own code, not from an untrusted proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from shotstamp._exceptions import RootMismatchError, VerificationError

__all__: list[str] = []

# RFC 9162 section 2.1.1 domain separation: MTH({d(0)}) = SHA-256(0x00 || d(0))
# and MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), so no leaf can
# be passed off as an interior node or the reverse.
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
# MTH({}) = SHA-256() of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of one log entry: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


# ---------------------------------------------------------------------------
# Reference tree hashing and proof generation, straight from the RFC's
# recursive definitions.  O(n) per call: for tests and the naive benchmark.
# ---------------------------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than `n`. Requires n >= 2."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaf_hashes: Sequence[bytes], begin: int, end: int) -> bytes:
    """MTH(D[begin:end]) over already-hashed leaves. Requires begin < end."""
    if end - begin == 1:
        return leaf_hashes[begin]
    k = begin + _split(end - begin)
    return node_hash(_mth(leaf_hashes, begin, k), _mth(leaf_hashes, k, end))


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over a sequence of leaf hashes (already `leaf_hash`ed); O(n).

    The empty tree's root is SHA-256 of the empty string (`EMPTY_ROOT`).
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 PATH(index, D[n]) for n = len(leaf_hashes), leaf to root; O(n).

    Requires 0 <= index < n.
    """
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ValueError(f"index {index} out of range for tree size {size}")
    proof: list[bytes] = []
    begin, end = 0, size
    # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) (or mirrored): the sibling
    # found at each step down belongs *after* everything found below it.
    while end - begin > 1:
        k = begin + _split(end - begin)
        if index < k:
            proof.append(_mth(leaf_hashes, k, end))
            end = k
        else:
            proof.append(_mth(leaf_hashes, begin, k))
            begin = k
    proof.reverse()
    return proof


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """RFC 9162 PROOF(size1, D[n]) for n = len(leaf_hashes); O(n).

    Requires 0 < size1 <= n; the proof between equal sizes is empty.
    """
    size2 = len(leaf_hashes)
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency proof needs 0 < size1 <= size2, got {size1}, {size2}")
    proof: list[bytes] = []
    begin, end, m, complete = 0, size2, size1, True
    # SUBPROOF(m, D[n], b), unrolled: each step records one sibling and
    # descends; like PATH the siblings come out top-down.
    while m != end - begin:
        k = _split(end - begin)
        if m <= k:
            proof.append(_mth(leaf_hashes, begin + k, end))
            end = begin + k
        else:
            proof.append(_mth(leaf_hashes, begin, begin + k))
            begin, m, complete = begin + k, m - k, False
    if not complete:
        # The subtree where the old tree ends is not one the verifier knows
        # the root of (it is not the whole old tree), so it must be sent.
        proof.append(_mth(leaf_hashes, begin, end))
    proof.reverse()
    return proof


# ---------------------------------------------------------------------------
# Proof verification (port of transparency-dev/merkle proof/verify.go).
# ---------------------------------------------------------------------------


def _check_hash(what: str, value: bytes, check: str) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(
            f"{what} has unexpected size {len(value)}, want {HASH_SIZE}", check=check
        )


def _check_proof_hashes(proof: Sequence[bytes], check: str) -> None:
    for position, element in enumerate(proof):
        _check_hash(f"proof[{position}]", element, check)


def _inner_proof_size(index: int, size: int) -> int:
    # Height of the first node where the paths to |index| and |size-1| meet.
    return (index ^ (size - 1)).bit_length()


def _decomp_incl_proof(index: int, size: int) -> tuple[int, int]:
    """Lengths of the inner and border parts of the proof for |index| in |size|.

    The split is where the paths to leaves |index| and |size-1| diverge.  Inner
    nodes are left or right siblings; border nodes are left siblings only, one
    per level where |index| is a right child.  Requires 0 <= index < size.
    """
    inner = _inner_proof_size(index, size)
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Hash |seed| up through |proof| (lowest level first) below the border.

    |seed| is the subtree or leaf hash at position |index| on its level; bit i
    of |index| says whether the i-th proof hash is a left or right sibling.
    """
    for i, sibling in enumerate(proof):
        seed = node_hash(seed, sibling) if (index >> i) & 1 == 0 else node_hash(sibling, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Like `_chain_inner`, but only through the left siblings.

    Leaving out the right siblings yields the hash this subtree had in the
    older, smaller tree: what a consistency proof checks against root1.
    """
    for i, sibling in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(sibling, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    """Hash |seed| up the right border, where every proof hash is a left sibling."""
    for sibling in proof:
        seed = node_hash(sibling, seed)
    return seed


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root a tree of `size` leaves must have for `proof` to hold.

    Requires 0 <= index < size; checks the lengths of the leaf hash and of the
    proof before hashing anything.  Raises `VerificationError` (check
    `inclusion`) for any violation.
    """
    check = "inclusion"
    if index < 0:
        raise VerificationError(f"index {index} is negative", check=check)
    if index >= size:
        raise VerificationError(f"index is beyond size: {index} >= {size}", check=check)
    _check_hash("leaf hash", leaf_hash, check)
    inner, border = _decomp_incl_proof(index, size)
    if len(proof) != inner + border:
        raise VerificationError(
            f"wrong proof size {len(proof)}, want {inner + border}", check=check
        )
    _check_proof_hashes(proof, check)
    result = _chain_inner(leaf_hash, proof[:inner], index)
    return _chain_border_right(result, proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` sits at `index` in the tree of `size` with `root`.

    Requires 0 <= index < size.  Raises `VerificationError` for a malformed
    proof and `RootMismatchError` if it leads to another root.
    """
    calculated = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if calculated != root:
        raise RootMismatchError(root, calculated, check="inclusion", size=size)


def root_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> bytes:
    """The root the tree of `size2` must have if it extends `root1` at `size1`.

    Requires 0 < size1 <= size2: a proof from the empty tree proves nothing and
    is refused, and between equal sizes the proof must be empty.  Along the
    way checks that `proof` also rebuilds `root1` (`RootMismatchError` if not).
    """
    check = "consistency"
    if size2 < size1:
        raise VerificationError(f"size2 ({size2}) < size1 ({size1})", check=check)
    if size1 <= 0:
        raise VerificationError(
            f"consistency proof from size {size1} is meaningless, want size1 > 0", check=check
        )
    if size1 == size2:
        if proof:
            raise VerificationError(f"wrong proof size {len(proof)}, want 0", check=check)
        return root1
    if not proof:
        raise VerificationError("empty proof", check=check)
    _check_hash("root1", root1, check)

    inner, border = _decomp_incl_proof(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift  # shift < inner when size1 < size2.

    # The proof starts with the root of the subtree of size 2**shift that the
    # old tree ends with, unless that subtree is the whole old tree: then the
    # verifier already has it as root1.
    seed, start = proof[0], 1
    if size1 == 1 << shift:
        seed, start = root1, 0
    if len(proof) != start + inner + border:
        raise VerificationError(
            f"wrong proof size {len(proof)}, want {start + inner + border}", check=check
        )
    _check_proof_hashes(proof, check)
    proof = proof[start:]
    # Now len(proof) == inner + border: a suffix of the inclusion proof for
    # leaf |size1-1| in the tree of |size2|, starting at level |shift|.
    mask = (size1 - 1) >> shift

    hash1 = _chain_inner_right(seed, proof[:inner], mask)
    hash1 = _chain_border_right(hash1, proof[inner:])
    if hash1 != root1:
        raise RootMismatchError(root1, hash1, check=check, size=size1)

    hash2 = _chain_inner(seed, proof[:inner], mask)
    return _chain_border_right(hash2, proof[inner:])


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of `size2` with `root2` extends the one of `size1`.

    Requires 0 < size1 <= size2.  Raises `VerificationError` (check
    `consistency`) for a malformed proof and `RootMismatchError` if either
    root does not follow from it.
    """
    calculated = root_from_consistency_proof(size1, size2, proof, root1)
    if calculated != root2:
        raise RootMismatchError(root2, calculated, check="consistency", size=size2)


# ---------------------------------------------------------------------------
# Which stored nodes a proof needs.
# ---------------------------------------------------------------------------


def _require_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ValueError(f"index {index} out of range for tree size {size}")


def inner_proof_size(index: int, size: int) -> int:
    """How many proof elements sit below the level where |index| meets the border.

    Requires 0 <= index < size.
    """
    _require_index(index, size)
    return _inner_proof_size(index, size)


def decomp_incl_proof(index: int, size: int) -> tuple[int, int]:
    """`(inner, border)`: the two parts of the inclusion proof for `index` in `size`.

    Their sum is the length of the proof.  Requires 0 <= index < size.
    """
    _require_index(index, size)
    return _decomp_incl_proof(index, size)


def _path_ranges(leaf: int, size: int, level: int, inner: int) -> list[tuple[int, int]]:
    """Leaf ranges of the inclusion proof for the node above |leaf| at |level|.

    Inner siblings are clipped to |size|: the highest one may be an incomplete
    right-border subtree.  Border siblings are complete left subtrees.
    """
    ranges: list[tuple[int, int]] = []
    for height in range(level, inner):
        begin = ((leaf >> height) ^ 1) << height
        ranges.append((begin, min(begin + (1 << height), size)))
    for height in range(inner, leaf.bit_length()):
        if (leaf >> height) & 1:
            begin = ((leaf >> height) ^ 1) << height
            ranges.append((begin, begin + (1 << height)))
    return ranges


def subtree_ranges_for_inclusion(index: int, size: int) -> list[tuple[int, int]]:
    """For each element of the inclusion proof, the leaves `[begin, end)` it hashes.

    Element k of `inclusion_proof(leaves, index)` is `root_hash(leaves[begin:end])`
    for the k-th range.  A range whose length is a power of two and whose begin
    is a multiple of it is one complete subtree; the others (at most one per
    proof, on the right border) are built with `decompose_range` and
    `hash_from_subtrees`.  Requires 0 <= index < size.
    """
    _require_index(index, size)
    inner, _ = _decomp_incl_proof(index, size)
    return _path_ranges(index, size, 0, inner)


def subtree_ranges_for_consistency(size1: int, size2: int) -> list[tuple[int, int]]:
    """For each element of the consistency proof, the leaves `[begin, end)` it hashes.

    Same contract as `subtree_ranges_for_inclusion`, for
    `consistency_proof(leaves[:size2], size1)`.  Requires 0 < size1 <= size2.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency proof needs 0 < size1 <= size2, got {size1}, {size2}")
    if size1 == size2:
        return []
    inner, _ = _decomp_incl_proof(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    ranges: list[tuple[int, int]] = []
    if size1 != 1 << shift:
        ranges.append((size1 - (1 << shift), size1))
    ranges.extend(_path_ranges(size1 - 1, size2, shift, inner))
    return ranges


def decompose_range(begin: int, end: int) -> list[tuple[int, int]]:
    """The fewest complete subtrees `(level, index)` covering `[begin, end)`, left to right.

    Requires 0 <= begin <= end; an empty range has no subtrees.
    """
    if not 0 <= begin <= end:
        raise ValueError(f"range needs 0 <= begin <= end, got [{begin}, {end})")
    nodes: list[tuple[int, int]] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            # A subtree at |level| must start at a multiple of 2**level.
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def hash_from_subtrees(subtree_hashes: Sequence[bytes]) -> bytes:
    """MTH of a proof range from the hashes of its `decompose_range` subtrees.

    Valid for the ranges `subtree_ranges_for_*` return: their begin is aligned
    so the subtrees shrink left to right, and RFC 9162 splits such a range
    exactly between its first subtree and the rest.  Requires at least one hash.
    """
    if not subtree_hashes:
        raise ValueError("a range hash needs at least one subtree hash")
    result = subtree_hashes[-1]
    for left in reversed(subtree_hashes[:-1]):
        result = node_hash(left, result)
    return result
