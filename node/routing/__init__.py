"""Routing: duplicate suppression, neighbour messaging and (later) multi-hop paths and store-and-forward."""
