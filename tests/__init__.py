"""The test suite: `unit/` (pure, seconds), `integration/` (processes, servers, a browser), `kit/`
(helpers both import). See docs/testing.md."""
