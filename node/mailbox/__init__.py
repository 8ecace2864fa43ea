"""The mailbox for offline peers: the protocol (:mod:`.protocol`) and the node's client (:mod:`.client`).
The anchor's side is :mod:`anchor.mailbox`."""
