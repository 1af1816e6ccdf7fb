"""dodai.weights."""
