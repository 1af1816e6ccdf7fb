"""dodai (土台, "foundation"): the LLM roadmap, implemented from scratch and verified.

Importing dodai has no side effects and imports nothing heavy; torch is imported by the modules
that need it. See ROADMAP (``dodai roadmap``) for what is implemented where.
"""

__version__ = "0.1.0"
