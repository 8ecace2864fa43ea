"""Tests import py-libp2p the way the daemon does (node/libp2p_slim.py), before any test module imports it."""

from node.libp2p_slim import install

install()
