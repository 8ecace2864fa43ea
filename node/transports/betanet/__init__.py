"""BetaNet: the internet transport (py-libp2p, Noise enforced)."""
