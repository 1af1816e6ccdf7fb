"""Tools a language model can call (roadmap R7.5): each is a :class:`dodai.tools.base.Tool`."""
