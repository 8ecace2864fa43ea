"""The twin: a small personal model that learns on the device."""
