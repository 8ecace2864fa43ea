"""Anchor node extensions (gateway and shared stores); see the anchor issue."""
