"""dodai.generate."""
