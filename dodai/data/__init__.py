"""dodai.data."""
