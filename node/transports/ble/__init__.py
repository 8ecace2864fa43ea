"""BitChat over Bluetooth LE: sans-IO link core (core.py), radio adapters (base.py interface; bluez.py, bumble_adapter.py), the transport (transport.py)."""
