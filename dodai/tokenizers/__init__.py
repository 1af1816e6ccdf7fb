"""dodai.tokenizers."""
