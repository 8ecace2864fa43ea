"""Cryptography: the Noise protocol framework (sans-IO) and BitChat's Noise transport framing."""
