"""dodai.nn."""
