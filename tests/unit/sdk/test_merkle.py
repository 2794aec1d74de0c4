"""RFC 9162 hashing, reference proofs, verifiers and the node-range helpers.

Fixed vectors come from transparency-dev/merkle (Apache-2.0): `rfc6962/
rfc6962_test.go`, `testonly/constants.go`, `testonly/reference_test.go` and
`proof/verify_test.go`, whose corruption generator is ported below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shotstamp import _merkle as merkle
from shotstamp._exceptions import RootMismatchError, VerificationError
from shotstamp._merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAF_PREFIX,
    NODE_PREFIX,
    consistency_proof,
    decomp_incl_proof,
    decompose_range,
    hash_from_subtrees,
    inclusion_proof,
    inner_proof_size,
    leaf_hash,
    node_hash,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_hash,
    subtree_ranges_for_consistency,
    subtree_ranges_for_inclusion,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# testonly/constants.go: LeafInputs(), RootHashes(), NodeHashes().
LEAF_INPUTS = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
LEAVES = [leaf_hash(data) for data in LEAF_INPUTS]
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
NODE_HASHES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]

# testonly/reference_test.go TestRefInclusionProof: (index, size, path).
REF_INCLUSION = [
    (0, 1, []),
    (0, 2, [h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")]),
    (1, 2, [h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")]),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    # proof/verify_test.go inclusionProofs (leaf counted from 1 there).
    (
        2,
        3,
        [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")],
    ),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# reference_test.go TestRefConsistencyProof plus verify_test.go consistencyProofs.
REF_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


# --- port of proof/verify_test.go's corruption generators -------------------


@dataclass(frozen=True)
class InclusionProbe:
    index: int
    size: int
    root: bytes
    leaf_hash: bytes
    proof: list[bytes]
    desc: str


@dataclass(frozen=True)
class ConsistencyProbe:
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: list[bytes]
    desc: str


def _flip(element: bytes, mask: int) -> bytes:
    return bytes([element[0] ^ mask]) + element[1:]


def corrupt_inclusion_proof(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[InclusionProbe]:
    probes = [
        InclusionProbe(index - 1, size, root, leaf, proof, "index - 1"),
        InclusionProbe(index + 1, size, root, leaf, proof, "index + 1"),
        InclusionProbe(index ^ 2, size, root, leaf, proof, "index ^ 2"),
        InclusionProbe(index, size * 2, root, leaf, proof, "size * 2"),
        InclusionProbe(index, size // 2, root, leaf, proof, "size / 2"),
        InclusionProbe(index, size, root, b"WrongLeaf", proof, "wrong leaf"),
        InclusionProbe(index, size, EMPTY_ROOT, leaf, proof, "empty root"),
        InclusionProbe(index, size, SOME_HASH, leaf, proof, "random root"),
        InclusionProbe(index, size, root, leaf, [*proof, b""], "trailing garbage"),
        InclusionProbe(index, size, root, leaf, [*proof, root], "trailing root"),
        InclusionProbe(index, size, root, leaf, [b"", *proof], "preceding garbage"),
        InclusionProbe(index, size, root, leaf, [root, *proof], "preceding root"),
    ]
    for i in range(len(proof)):
        wrong = [*proof[:i], _flip(proof[i], 8), *proof[i + 1 :]]
        probes.append(InclusionProbe(index, size, root, leaf, wrong, f"modified proof[{i}] bit 3"))
    if proof:
        probes.append(InclusionProbe(index, size, root, leaf, proof[:-1], "removed component"))
    if len(proof) > 1:
        wrong = [proof[0], SOME_HASH, *proof[1:]]
        probes.append(InclusionProbe(index, size, root, leaf, wrong, "inserted component"))
    return probes


def corrupt_consistency_proof(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[ConsistencyProbe]:
    probes = [
        ConsistencyProbe(size1 - 1, size2, root1, root2, proof, "size1 - 1"),
        ConsistencyProbe(size1 + 1, size2, root1, root2, proof, "size1 + 1"),
        ConsistencyProbe(size1 ^ 2, size2, root1, root2, proof, "size1 ^ 2"),
        ConsistencyProbe(size1, size2 * 2, root1, root2, proof, "size2 * 2"),
        ConsistencyProbe(size1, size2 // 2, root1, root2, proof, "size2 / 2"),
        ConsistencyProbe(size1, size2, b"WrongRoot", root2, proof, "wrong root1"),
        ConsistencyProbe(size1, size2, root1, b"WrongRoot", proof, "wrong root2"),
        ConsistencyProbe(size1, size2, root2, root1, proof, "swapped roots"),
        # Not in Go's list: a wrong root1 of the right length, which only the
        # check of root1 against the proof catches.
        ConsistencyProbe(size1, size2, SOME_HASH, root2, proof, "another root1"),
        ConsistencyProbe(size1, size2, root1, root2, [], "empty proof"),
        ConsistencyProbe(size1, size2, root1, root2, [*proof, b""], "trailing garbage"),
        ConsistencyProbe(size1, size2, root1, root2, [*proof, root1], "trailing root1"),
        ConsistencyProbe(size1, size2, root1, root2, [*proof, root2], "trailing root2"),
        ConsistencyProbe(size1, size2, root1, root2, [b"", *proof], "preceding garbage"),
        ConsistencyProbe(size1, size2, root1, root2, [root1, *proof], "preceding root1"),
        ConsistencyProbe(size1, size2, root1, root2, [root2, *proof], "preceding root2"),
        ConsistencyProbe(size1, size2, root1, root2, [proof[0], *proof], "preceding proof[0]"),
        ConsistencyProbe(size1, size2, root1, root2, proof[:-1], "truncated proof"),
    ]
    for i in range(len(proof)):
        wrong = [*proof[:i], _flip(proof[i], 16), *proof[i + 1 :]]
        probes.append(
            ConsistencyProbe(size1, size2, root1, root2, wrong, f"modified proof[{i}] bit 4")
        )
    return probes


def verifier_check(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes) -> None:
    """The proof verifies and none of its corruptions does (Go's verifierCheck)."""
    assert root_from_inclusion_proof(index, size, leaf, proof) == root
    verify_inclusion(index, size, leaf, proof, root)
    wrongly_verified = []
    for p in corrupt_inclusion_proof(index, size, proof, root, leaf):
        try:
            verify_inclusion(p.index, p.size, p.leaf_hash, p.proof, p.root)
        except VerificationError:
            continue
        wrongly_verified.append(p.desc)
    assert wrongly_verified == []


def verifier_consistency_check(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    verify_consistency(size1, size2, proof, root1, root2)
    if not proof:  # As upstream: only non-trivial proofs are corrupted.
        return
    wrongly_verified = []
    for p in corrupt_consistency_proof(size1, size2, root1, root2, proof):
        try:
            verify_consistency(p.size1, p.size2, p.proof, p.root1, p.root2)
        except VerificationError:
            continue
        wrongly_verified.append(p.desc)
    assert wrongly_verified == []


@cache
def _tree(size: int) -> tuple[bytes, ...]:
    return tuple(leaf_hash(i.to_bytes(4, "big")) for i in range(size))


# --- hashing -----------------------------------------------------------------


def test_domain_separation_constants_are_rfc9162s() -> None:
    assert (LEAF_PREFIX, NODE_PREFIX, HASH_SIZE) == (b"\x00", b"\x01", 32)
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT == ROOTS[0]


def test_rfc6962_hasher_vectors() -> None:
    # rfc6962/rfc6962_test.go TestRFC6962Hasher.
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == h(
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456") == h(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    left, right = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert left != right
    assert node_hash(left, right) != leaf_hash(left + right)
    assert node_hash(left, right) != node_hash(right, left)


@pytest.mark.parametrize("size", range(9))
def test_root_hash_of_reference_trees(size: int) -> None:
    assert root_hash(LEAVES[:size]) == ROOTS[size]


def test_complete_subtree_hashes() -> None:
    for level, nodes in enumerate(NODE_HASHES):
        for index, expected in enumerate(nodes):
            begin, end = index << level, (index + 1) << level
            assert root_hash(LEAVES[begin:end]) == expected


# --- reference proofs --------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "path"), REF_INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, path: list[bytes]) -> None:
    assert inclusion_proof(LEAVES[:size], index) == path
    verifier_check(index, size, path, ROOTS[size], LEAVES[index])


@pytest.mark.parametrize(("size1", "size2", "path"), REF_CONSISTENCY)
def test_reference_consistency_proofs(size1: int, size2: int, path: list[bytes]) -> None:
    assert consistency_proof(LEAVES[:size2], size1) == path
    verifier_consistency_check(size1, size2, path, ROOTS[size1], ROOTS[size2])


@pytest.mark.parametrize("index", [-1, 8, 9])
def test_reference_inclusion_proof_refuses_out_of_range_index(index: int) -> None:
    with pytest.raises(ValueError, match=f"index {index} out of range for tree size 8"):
        inclusion_proof(LEAVES, index)


@pytest.mark.parametrize("size1", [0, -1, 9])
def test_reference_consistency_proof_refuses_bad_sizes(size1: int) -> None:
    with pytest.raises(ValueError, match="needs 0 < size1 <= size2"):
        consistency_proof(LEAVES, size1)


# --- verifier error reporting ------------------------------------------------


def test_wrong_proof_size_is_reported_got_want() -> None:
    proof = inclusion_proof(LEAVES, 5)
    with pytest.raises(VerificationError, match=r"^wrong proof size 2, want 3$") as exc:
        verify_inclusion(5, 8, LEAVES[5], proof[:2], ROOTS[8])
    assert exc.value.check == "inclusion"


@pytest.mark.parametrize(
    ("index", "size", "message"),
    [(8, 8, r"^index is beyond size: 8 >= 8$"), (-1, 8, r"^index -1 is negative$")],
)
def test_index_outside_tree_is_reported(index: int, size: int, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        root_from_inclusion_proof(index, size, LEAVES[0], [])


def test_hash_lengths_are_reported() -> None:
    proof = inclusion_proof(LEAVES, 5)
    with pytest.raises(VerificationError, match=r"^leaf hash has unexpected size 9, want 32$"):
        verify_inclusion(5, 8, b"WrongLeaf", proof, ROOTS[8])
    proof[1] = proof[1][:31]
    with pytest.raises(VerificationError, match=r"^proof\[1\] has unexpected size 31, want 32$"):
        verify_inclusion(5, 8, LEAVES[5], proof, ROOTS[8])


def test_lengths_are_checked_before_any_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    short = inclusion_proof(LEAVES, 5)[:2]
    garbage = [*consistency_proof(LEAVES, 6), b""]
    bad_element = [b"x", *consistency_proof(LEAVES, 6)[1:]]

    def no_hashing(left: bytes, right: bytes) -> bytes:
        raise AssertionError("hashed before checking lengths")

    monkeypatch.setattr(merkle, "node_hash", no_hashing)
    with pytest.raises(VerificationError, match="wrong proof size"):
        root_from_inclusion_proof(5, 8, LEAVES[5], short)
    with pytest.raises(VerificationError, match="wrong proof size"):
        root_from_consistency_proof(6, 8, garbage, ROOTS[6])
    with pytest.raises(VerificationError, match=r"proof\[0\] has unexpected size 1"):
        root_from_consistency_proof(6, 8, bad_element, ROOTS[6])


def test_root_mismatch_carries_both_roots() -> None:
    proof = inclusion_proof(LEAVES, 5)
    with pytest.raises(RootMismatchError) as exc:
        verify_inclusion(5, 8, LEAVES[5], proof, ROOTS[7])
    assert exc.value.expected == ROOTS[7]
    assert exc.value.calculated == ROOTS[8]
    assert exc.value.check == "inclusion"
    assert str(exc.value) == (
        f"calculated root {ROOTS[8].hex()} at tree size 8 does not match "
        f"expected root {ROOTS[7].hex()}"
    )


def test_consistency_mismatch_names_the_old_root() -> None:
    proof = consistency_proof(LEAVES, 6)
    with pytest.raises(RootMismatchError, match="at tree size 6") as exc:
        verify_consistency(6, 8, proof, ROOTS[5], ROOTS[8])
    assert exc.value.check == "consistency"
    assert exc.value.expected == ROOTS[5]
    assert exc.value.calculated == ROOTS[6]


@pytest.mark.parametrize(
    ("size1", "size2", "proof", "message"),
    [
        (5, 4, [], r"^size2 \(4\) < size1 \(5\)$"),
        (0, 4, [], r"^consistency proof from size 0 is meaningless, want size1 > 0$"),
        (0, 0, [], r"^consistency proof from size 0 is meaningless"),
        (4, 4, [SOME_HASH], r"^wrong proof size 1, want 0$"),
        (4, 8, [], r"^empty proof$"),
        (6, 8, [SOME_HASH], r"^wrong proof size 1, want 3$"),
    ],
)
def test_consistency_shape_errors(size1: int, size2: int, proof: list[bytes], message: str) -> None:
    with pytest.raises(VerificationError, match=message) as exc:
        verify_consistency(size1, size2, proof, ROOTS[min(size1, 8)], ROOTS[min(size2, 8)])
    assert exc.value.check == "consistency"


def test_equal_sizes_need_equal_roots() -> None:
    verify_consistency(8, 8, [], ROOTS[8], ROOTS[8])
    with pytest.raises(RootMismatchError):
        verify_consistency(8, 8, [], ROOTS[8], ROOTS[7])


# --- properties over random trees -------------------------------------------

_size_and_index = st.integers(1, 300).flatmap(
    lambda size: st.tuples(st.just(size), st.integers(0, size - 1))
)
_sizes = st.integers(1, 300).flatmap(lambda size2: st.tuples(st.integers(1, size2), st.just(size2)))


@settings(max_examples=60, deadline=None)
@given(_size_and_index)
def test_random_inclusion_proofs_verify_and_corruptions_do_not(size_index: tuple[int, int]) -> None:
    size, index = size_index
    leaves = _tree(size)
    proof = inclusion_proof(leaves, index)
    assert len(proof) == sum(decomp_incl_proof(index, size))
    verifier_check(index, size, proof, root_hash(leaves), leaves[index])


@settings(max_examples=60, deadline=None)
@given(_sizes)
def test_random_consistency_proofs_verify_and_corruptions_do_not(sizes: tuple[int, int]) -> None:
    size1, size2 = sizes
    leaves = _tree(size2)
    proof = consistency_proof(leaves, size1)
    root1, root2 = root_hash(leaves[:size1]), root_hash(leaves)
    assert root_from_consistency_proof(size1, size2, proof, root1) == root2
    verifier_consistency_check(size1, size2, proof, root1, root2)


@settings(max_examples=30, deadline=None)
@given(_sizes, st.data())
def test_single_bit_flips_in_consistency_proofs_fail(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = sizes
    leaves = _tree(size2)
    proof = consistency_proof(leaves, size1)
    if not proof:
        return
    k = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    flipped = bytearray(proof[k])
    flipped[bit // 8] ^= 1 << (bit % 8)
    wrong = [*proof[:k], bytes(flipped), *proof[k + 1 :]]
    with pytest.raises(VerificationError):
        verify_consistency(size1, size2, wrong, root_hash(leaves[:size1]), root_hash(leaves))


def _every_bit_flip(proof: list[bytes]) -> list[list[bytes]]:
    flips = []
    for k, element in enumerate(proof):
        for bit in range(8 * len(element)):
            flipped = bytearray(element)
            flipped[bit // 8] ^= 1 << (bit % 8)
            flips.append([*proof[:k], bytes(flipped), *proof[k + 1 :]])
    return flips


@pytest.mark.parametrize(("index", "size", "path"), REF_INCLUSION[1:])
def test_every_bit_flip_of_an_inclusion_proof_fails(
    index: int, size: int, path: list[bytes]
) -> None:
    flips = _every_bit_flip(path)
    assert len(flips) == 256 * len(path)
    for wrong in flips:
        with pytest.raises(RootMismatchError):
            verify_inclusion(index, size, LEAVES[index], wrong, ROOTS[size])


@pytest.mark.parametrize(("size1", "size2", "path"), REF_CONSISTENCY[1:])
def test_every_bit_flip_of_a_consistency_proof_fails(
    size1: int, size2: int, path: list[bytes]
) -> None:
    for wrong in _every_bit_flip(path):
        with pytest.raises(RootMismatchError):
            verify_consistency(size1, size2, wrong, ROOTS[size1], ROOTS[size2])


@settings(max_examples=30, deadline=None)
@given(_size_and_index, st.data())
def test_single_bit_flips_in_inclusion_proofs_fail(
    size_index: tuple[int, int], data: st.DataObject
) -> None:
    size, index = size_index
    leaves = _tree(size)
    proof = inclusion_proof(leaves, index)
    if not proof:
        return
    k = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    flipped = bytearray(proof[k])
    flipped[bit // 8] ^= 1 << (bit % 8)
    wrong = [*proof[:k], bytes(flipped), *proof[k + 1 :]]
    with pytest.raises(RootMismatchError):
        verify_inclusion(index, size, leaves[index], wrong, root_hash(leaves))


# --- which stored nodes a proof needs ----------------------------------------


def _hash_of_range_from_stored_nodes(leaves: Sequence[bytes], begin: int, end: int) -> bytes:
    stored = [
        root_hash(leaves[i << level : (i + 1) << level]) for level, i in decompose_range(begin, end)
    ]
    return hash_from_subtrees(stored)


def _assert_ranges_match_proof(
    leaves: Sequence[bytes], ranges: list[tuple[int, int]], proof: list[bytes]
) -> None:
    assert len(ranges) == len(proof)
    for (begin, end), element in zip(ranges, proof, strict=True):
        assert 0 <= begin < end <= len(leaves)
        assert root_hash(leaves[begin:end]) == element
        assert _hash_of_range_from_stored_nodes(leaves, begin, end) == element
        width = end - begin
        if width & (width - 1) == 0 and begin % width == 0:
            level = width.bit_length() - 1
            assert decompose_range(begin, end) == [(level, begin >> level)]


@settings(max_examples=80, deadline=None)
@given(_size_and_index)
def test_inclusion_ranges_name_the_proof_elements(size_index: tuple[int, int]) -> None:
    size, index = size_index
    leaves = _tree(size)
    ranges = subtree_ranges_for_inclusion(index, size)
    _assert_ranges_match_proof(leaves, ranges, inclusion_proof(leaves, index))
    # At most one element (the highest inner one) is an incomplete subtree.
    incomplete = [r for r in ranges if len(decompose_range(*r)) > 1]
    assert len(incomplete) <= 1


@settings(max_examples=80, deadline=None)
@given(_sizes)
def test_consistency_ranges_name_the_proof_elements(sizes: tuple[int, int]) -> None:
    size1, size2 = sizes
    leaves = _tree(size2)
    ranges = subtree_ranges_for_consistency(size1, size2)
    _assert_ranges_match_proof(leaves, ranges, consistency_proof(leaves, size1))


def test_inclusion_ranges_example() -> None:
    # Leaf 4 of 7: its neighbour, the incomplete right subtree {6}, then [0, 4).
    assert subtree_ranges_for_inclusion(4, 7) == [(5, 6), (6, 7), (0, 4)]
    assert subtree_ranges_for_inclusion(0, 1) == []


def test_consistency_ranges_example() -> None:
    # From 6 to 8: the old tree's last complete subtree [4, 6), then what
    # grows it to size 8: [6, 8) and [0, 4).
    assert subtree_ranges_for_consistency(6, 8) == [(4, 6), (6, 8), (0, 4)]
    assert subtree_ranges_for_consistency(4, 8) == [(4, 8)]
    assert subtree_ranges_for_consistency(5, 5) == []


@pytest.mark.parametrize(
    ("begin", "end", "nodes"),
    [
        (0, 0, []),
        (0, 7, [(2, 0), (1, 2), (0, 6)]),
        (3, 13, [(0, 3), (2, 1), (2, 2), (0, 12)]),
        (8, 16, [(3, 1)]),
        (5, 6, [(0, 5)]),
    ],
)
def test_decompose_range_examples(begin: int, end: int, nodes: list[tuple[int, int]]) -> None:
    assert decompose_range(begin, end) == nodes


@cache
def _fewest_nodes(begin: int, end: int) -> int:
    """Brute force: the fewest aligned power-of-two blocks tiling [begin, end)."""
    if begin == end:
        return 0
    best = end - begin
    level = 0
    while begin % (1 << level) == 0 and begin + (1 << level) <= end:
        best = min(best, 1 + _fewest_nodes(begin + (1 << level), end))
        level += 1
    return best


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 200).flatmap(lambda b: st.tuples(st.just(b), st.integers(b, b + 200))))
def test_decompose_range_tiles_with_fewest_complete_subtrees(bounds: tuple[int, int]) -> None:
    begin, end = bounds
    nodes = decompose_range(begin, end)
    position = begin
    for level, index in nodes:
        assert index << level == position
        position += 1 << level
    assert position == end
    assert len(nodes) == _fewest_nodes(begin, end)


@pytest.mark.parametrize(("index", "size"), [(-1, 4), (4, 4), (0, 0)])
def test_helpers_refuse_indices_outside_the_tree(index: int, size: int) -> None:
    for helper in (decomp_incl_proof, inner_proof_size, subtree_ranges_for_inclusion):
        with pytest.raises(ValueError, match="out of range"):
            helper(index, size)


def test_range_helpers_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs 0 < size1 <= size2"):
        subtree_ranges_for_consistency(0, 4)
    with pytest.raises(ValueError, match="needs 0 < size1 <= size2"):
        subtree_ranges_for_consistency(5, 4)
    with pytest.raises(ValueError, match=r"got \[5, 4\)"):
        decompose_range(5, 4)
    with pytest.raises(ValueError, match="at least one subtree hash"):
        hash_from_subtrees([])


def test_decomposition_parts_of_known_proofs() -> None:
    # Leaf 5 of 8: siblings 4 and [6, 8) below the border, then [0, 4) on it.
    assert decomp_incl_proof(5, 8) == (2, 1)
    assert decomp_incl_proof(0, 8) == (3, 0)
    assert decomp_incl_proof(4, 5) == (0, 1)
    assert decomp_incl_proof(4, 7) == (2, 1)
    assert inner_proof_size(4, 7) == 2
