"""dodai.basics."""
