"""The mailbox for offline peers: the protocol (:mod:`.protocol`) and the node's client (:mod:`.client`).
The anchor's side is :mod:`anchor.mailbox`."""

from node.libp2p_slim import install

install()  # before any libp2p import: load only the parts of py-libp2p the mailbox uses (node/libp2p_slim.py)
