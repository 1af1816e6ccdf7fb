"""Text generation: sampling and greedy decoding with a KV cache (R5.4, R5.5), streaming detokenization."""
