"""dodai.commands."""
