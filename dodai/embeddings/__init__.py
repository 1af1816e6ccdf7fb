"""dodai.embeddings."""
