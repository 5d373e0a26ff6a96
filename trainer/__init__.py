"""The trainer service entry point: ``python -m trainer`` (see vrec.trainer)."""
