"""Agents: the roster, the King's routing, the language model backends and governance (see README)."""
