"""The log: an append-only RFC 9162 Merkle tree in C2SP tiles, sealed once a second.

`tree` and `tiles` are the Merkle math and its storage shape, `signer` holds the
checkpoint keys, `sealer` appends and signs, `proofs` shapes what the service hands out.
"""
