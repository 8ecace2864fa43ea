"""BetaNet: the internet transport (py-libp2p, Noise enforced)."""

from node.libp2p_slim import install

install()  # before any libp2p import: load only the parts of py-libp2p BetaNet uses (node/libp2p_slim.py)
