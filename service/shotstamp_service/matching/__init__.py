"""Matching: is an upload a copy of an earlier registration?

One upload flows `decode` → `fingerprint` (`hashes`, `features`) → `index` lookups
(stage 1) → `verification` of the best candidates (stage 2) → `engine.decide`.
`pool` runs decoding and stage 2 off the event loop. See docs/matching.md.
"""
