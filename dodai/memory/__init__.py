"""Memory for chat (R7.4): a token-bounded conversation buffer, a rolling LM summary of what falls out of
it, and a persistent long-term vector memory searched by MiniLM cosine — combined in :class:`MemoryChat`.

Modules: :mod:`~dodai.memory.buffer`, :mod:`~dodai.memory.summary`, :mod:`~dodai.memory.vector`,
:mod:`~dodai.memory.agent`. Importing this package loads no model.
"""
