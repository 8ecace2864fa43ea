"""AIVillage node: one daemon for every participant in the mesh."""

__version__ = "0.1.0"
