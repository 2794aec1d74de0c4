"""Write the RFC 9162 proof probes under tests/testdata/{inclusion,consistency}/.

A line-for-line Python port of `cmd/proofgen/main.go` from
github.com/transparency-dev/merkle (Apache-2.0) at commit
0e039277d77118c07aa643920617ab865274c7c0, minus its `subtreeinclusion`
output (the Merkle Tree Certificates draft, which shotstamp does not use).
Files come out byte-identical to the published ones; see README.md.

The probe hashes are computed with hashlib here, not with shotstamp.merkle,
so the vectors do not depend on the code they test.

Usage: python tests/testdata/generate_merkle_vectors.py [OUTPUT_DIR]
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

UINT64 = 2**64  # The Go probes are uint64: index 0 minus 1 wraps around.


def dh(hex_string: str, length: int) -> bytes:
    raw = bytes.fromhex(hex_string)
    assert len(raw) == length, hex_string
    return raw


def hash_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


SOME_HASH = dh("abacaba000000000000000000000000000000000000000000060061e00123456", 32)
EMPTY_TREE_HASH = dh("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 32)

# (leafIdx counted from 1, size, proof)
INCLUSION_PROOFS: list[tuple[int, int, list[bytes] | None]] = [
    (1, 1, None),
    (
        1,
        8,
        [
            dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", 32),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", 32),
            dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4", 32),
        ],
    ),
    (
        6,
        8,
        [
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", 32),
            dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", 32),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7", 32),
        ],
    ),
    (3, 3, [dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125", 32)]),
    (
        2,
        5,
        [
            dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", 32),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", 32),
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", 32),
        ],
    ),
]

CONSISTENCY_PROOFS: list[tuple[int, int, list[bytes] | None]] = [
    (1, 1, None),
    (
        1,
        8,
        [
            dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", 32),
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", 32),
            dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4", 32),
        ],
    ),
    (
        6,
        8,
        [
            dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", 32),
            dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0", 32),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7", 32),
        ],
    ),
    (
        2,
        5,
        [
            dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", 32),
            dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", 32),
        ],
    ),
    (
        6,
        7,
        [
            dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a", 32),
            dh("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f", 32),
            dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7", 32),
        ],
    ),
]

# Roots of the trees of sizes 1..8 over the leaves below.
ROOTS = [
    dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", 32),
    dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125", 32),
    dh("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77", 32),
    dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7", 32),
    dh("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4", 32),
    dh("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef", 32),
    dh("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c", 32),
    dh("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328", 32),
]

# Upstream keeps only the leaves its inclusion vectors use (1, 2, 3 and 6).
LEAVES = [dh("", 0), dh("00", 1), dh("10", 1), dh("", 0), dh("", 0), dh("40414243", 4)]


def _b(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def _proof(proof: list[bytes] | None) -> list[str | None] | None:
    return None if proof is None else [_b(element) for element in proof]


def _extend(proof: list[bytes] | None, *hashes: bytes) -> list[bytes]:
    return [*(proof or []), *hashes]


def _prepend(proof: list[bytes] | None, *hashes: bytes) -> list[bytes]:
    return [*hashes, *(proof or [])]


def _file_name(desc: str) -> str:
    # strings.NewReplacer(" - ", "-", "(", "", ")", "", " ", "-"): at each
    # position the first listed match wins.
    replacements = [(" - ", "-"), ("(", ""), (")", ""), (" ", "-")]
    out, position = [], 0
    while position < len(desc):
        for old, new in replacements:
            if desc.startswith(old, position):
                out.append(new)
                position += len(old)
                break
        else:
            out.append(desc[position])
            position += 1
    return "".join(out) + ".json"


def _write(directory: Path, probe: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # json.MarshalIndent(probe, "", "  "), which writes no final newline.
    text = json.dumps(probe, indent=2, separators=(",", ": "))
    (directory / _file_name(probe["desc"])).write_text(text, encoding="utf-8")


def _inclusion(
    idx: int, size: int, root: bytes, leaf: bytes, proof: list[bytes] | None, desc: str, err: bool
) -> dict[str, Any]:
    return {
        "leafIdx": idx % UINT64,
        "treeSize": size % UINT64,
        "root": _b(root),
        "leafHash": _b(leaf),
        "proof": _proof(proof),
        "desc": desc,
        "wantErr": err,
    }


def _consistency(
    size1: int,
    size2: int,
    root1: bytes,
    root2: bytes,
    proof: list[bytes] | None,
    desc: str,
    err: bool,
) -> dict[str, Any]:
    return {
        "size1": size1 % UINT64,
        "size2": size2 % UINT64,
        "root1": _b(root1),
        "root2": _b(root2),
        "proof": _proof(proof),
        "desc": desc,
        "wantErr": err,
    }


def invalid_inclusion_probes(
    idx: int, size: int, proof: list[bytes] | None, root: bytes, leaf: bytes
) -> list[dict[str, Any]]:
    probes = [
        _inclusion(idx - 1, size, root, leaf, proof, "leafIdx sub @1", True),
        _inclusion(idx + 1, size, root, leaf, proof, "leafIdx plus @1", True),
        _inclusion(idx ^ 2, size, root, leaf, proof, "leafIdx XOR @2", True),
        _inclusion(idx, size * 2, root, leaf, proof, "treeSize mul @2", True),
        _inclusion(idx, size // 2, root, leaf, proof, "treeSize div @2", True),
        _inclusion(idx, size, root, b"WrongLeaf", proof, "wrong leaf", True),
        _inclusion(idx, size, EMPTY_TREE_HASH, leaf, proof, "empty root", True),
        _inclusion(idx, size, SOME_HASH, leaf, proof, "random root", True),
        _inclusion(idx, size, root, leaf, _extend(proof, b""), "trailing garbage", True),
        _inclusion(idx, size, root, leaf, _extend(proof, root), "trailing root", True),
        _inclusion(idx, size, root, leaf, _prepend(proof, b""), "preceding garbage", True),
        _inclusion(idx, size, root, leaf, _prepend(proof, root), "preceding root", True),
    ]
    elements = proof or []
    for i in range(len(elements)):
        wrong = list(elements)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append(_inclusion(idx, size, root, leaf, wrong, f"modified proof[{i}] bit @3", True))
    if elements:
        probes.append(_inclusion(idx, size, root, leaf, elements[:-1], "removed component", True))
    if len(elements) > 1:
        wrong = [elements[0], SOME_HASH, *elements[1:]]
        probes.append(_inclusion(idx, size, root, leaf, wrong, "inserted component", True))
    return probes


def invalid_consistency_probes(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[dict[str, Any]]:
    probes = [
        _consistency(size1 - 1, size2, root1, root2, proof, "size1 sub @1", True),
        _consistency(size1 + 1, size2, root1, root2, proof, "size1 plus @1", True),
        _consistency(size1 ^ 2, size2, root1, root2, proof, "size1 XOR @2", True),
        _consistency(size1, size2 * 2, root1, root2, proof, "size2 mul @2", True),
        _consistency(size1, size2 // 2, root1, root2, proof, "size2 div @2", True),
        _consistency(size1, size2, b"WrongRoot", root2, proof, "wrong root1", True),
        _consistency(size1, size2, root1, b"WrongRoot", proof, "wrong root2", True),
        _consistency(size1, size2, root2, root1, proof, "swapped roots", True),
        _consistency(size1, size2, root1, root2, [], "empty proof", True),
        _consistency(size1, size2, root1, root2, _extend(proof, b""), "trailing garbage", True),
        _consistency(size1, size2, root1, root2, _extend(proof, root1), "trailing root1", True),
        _consistency(size1, size2, root1, root2, _extend(proof, root2), "trailing root2", True),
        _consistency(size1, size2, root1, root2, _prepend(proof, b""), "preceding garbage", True),
        _consistency(size1, size2, root1, root2, _prepend(proof, root1), "preceding root1", True),
        _consistency(size1, size2, root1, root2, _prepend(proof, root2), "preceding root2", True),
        _consistency(
            size1, size2, root1, root2, _prepend(proof, proof[0]), "preceding proof @0", True
        ),
        _consistency(size1, size2, root1, root2, proof[:-1], "truncated proof", True),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append(
            _consistency(size1, size2, root1, root2, wrong, f"modified proof@{i} bit @4", True)
        )
    return probes


def generate_inclusion(root_dir: Path) -> None:
    for n, (leaf_idx, size, proof) in enumerate(INCLUSION_PROOFS):
        directory = root_dir / str(n)
        leaf = hash_leaf(LEAVES[leaf_idx - 1])
        root = ROOTS[size - 1]
        _write(directory, _inclusion(leaf_idx - 1, size, root, leaf, proof, "happy path", False))
        for probe in invalid_inclusion_probes(leaf_idx - 1, size, proof, root, leaf):
            _write(directory, probe)

    for n, (index, size) in enumerate([(0, 0), (0, 1), (1, 0), (2, 1)]):
        directory = root_dir / "additional" / str(n)
        _write(directory, _inclusion(index, size, b"", SOME_HASH, [], "random leaf", True))
        _write(directory, _inclusion(index, size, EMPTY_TREE_HASH, b"", [], "empty root", True))
        _write(
            directory,
            _inclusion(
                index, size, EMPTY_TREE_HASH, SOME_HASH, [], "empty root and random leaf", True
            ),
        )

    directory = root_dir / "single-entry"
    data_hash = hash_leaf(b"data")  # A one-leaf tree's root is its leaf hash.
    for root, leaf, desc, err in [
        (data_hash, data_hash, "matching root and leaf", False),
        (data_hash, b"", "empty leaf", True),
        (b"", data_hash, "empty root", True),
        (b"", b"", "empty root and leaf", True),
    ]:
        _write(directory, _inclusion(0, 1, root, leaf, [], desc, err))


def generate_consistency(root_dir: Path) -> None:
    for n, (size1, size2, proof) in enumerate(CONSISTENCY_PROOFS):
        directory = root_dir / str(n)
        root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
        _write(directory, _consistency(size1, size2, root1, root2, proof, "happy path", False))
        if proof:
            for probe in invalid_consistency_probes(size1, size2, root1, root2, proof):
                _write(directory, probe)

    root1, root2 = b"don't care 1", b"don't care 2"
    proof2 = [EMPTY_TREE_HASH]
    empty, e = [], EMPTY_TREE_HASH
    for size1, size2, r1, r2, proof, desc, err in [
        (0, 0, root1, root2, empty, "sizes are equal (zero) but roots are not", True),
        (1, 1, root1, root2, empty, "sizes are equal (one) but roots are not", True),
        (0, 0, root1, root1, empty, "sizes are equal (zero) and proof is empty", True),
        (0, 1, root1, root2, empty, "size1 is zero and does not equal size2", True),
        (1, 1, root2, root2, empty, "sizes are equal (one) and proof is empty", False),
        (1, 0, root1, root2, empty, "size1 is greater than size2", True),
        (2, 1, root1, root2, empty, "size1 is greater than size2 again", True),
        (1, 2, root1, root2, empty, "sizes do not watch and proof is empty", True),
        (0, 0, e, root2, empty, "roots do not match and sizes are zero", True),
        (1, 1, e, root2, empty, "roots do not not match and sizes are one", True),
        (0, 0, e, e, proof2, "sizes match but proof is not empty and sizes are zero", True),
        (1, 1, e, e, proof2, "sizes match but proof is not empty and sizes are one", True),
        (0, 1, e, root2, empty, "size1 is zero and size2 is not zero", True),
        (0, 1, e, e, proof2, "consistency check on empty tree (size1 is zero) is useless", True),
    ]:
        _write(root_dir / "additional", _consistency(size1, size2, r1, r2, proof, desc, err))


def generate(out_dir: Path) -> None:
    generate_inclusion(out_dir / "inclusion")
    generate_consistency(out_dir / "consistency")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
