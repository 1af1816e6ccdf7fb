"""dodai.data: corpora (built-in ``python-docs``), train/val preparation, token batching.

- :mod:`dodai.data.corpora` — named corpora; ``python-docs`` is built from the running Python's
  stdlib docstrings and pydoc topics (no download), cached under ``cache_dir()/corpora``;
- :mod:`dodai.data.prepare` — a file, folder, .jsonl or corpus → deterministic train/val split;
- :mod:`dodai.data.batching` — token streams as compact tensors and nanoGPT-style random windows
  drawn from an explicit generator (resumable, shardable across DDP ranks).
"""
