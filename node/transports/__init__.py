"""Transports: every way a frame leaves this node. Interfaces live in :mod:`node.transports.base`."""
