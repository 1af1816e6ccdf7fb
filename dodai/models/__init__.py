"""dodai.models."""
