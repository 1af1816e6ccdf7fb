"""dodai.train."""
