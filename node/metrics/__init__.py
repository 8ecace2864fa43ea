"""Prometheus metrics: the node's counters read at scrape time (collect.py) on an opt-in loopback listener."""
