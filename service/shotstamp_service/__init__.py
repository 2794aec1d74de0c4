"""shotstamp's HTTP service: uploads, fingerprints, near-duplicate index, sealer, stores."""

__version__ = "0.1.0"
