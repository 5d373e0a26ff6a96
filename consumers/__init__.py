"""The consumer service entry point: ``python -m consumers`` (see vrec.ingest)."""
