"""Tokenizers (R4.6): byte-level BPE, char-level, WordPiece, Unigram.

Every tokenizer has the same small interface:

- ``encode(text: str) -> list[int]`` and ``decode(ids: list[int]) -> str``
- ``vocab_size: int``; ``special_tokens: dict[str, int]``; ``eos_id: int | None``
- ``save(path)`` writes an HF-compatible ``tokenizer.json``

``load_tokenizer(spec)`` accepts a path (a tokenizer.json, or a folder holding one, or a GGUF
file) or a registry model name (``smollm2-135m-instruct``, ``all-minilm-l6-v2``).
"""
