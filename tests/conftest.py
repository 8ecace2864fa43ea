"""Tests import py-libp2p the way the daemon does (node/libp2p_slim.py), before any test module imports it."""

from node.daemon import prepare_process_env
from node.libp2p_slim import install

install()
prepare_process_env()  # what the daemon sets at start (OMP_WAIT_POLICY: in-process language-model tests)
