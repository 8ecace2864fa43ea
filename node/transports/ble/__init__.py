"""BitChat over Bluetooth LE.

``core.py`` is the sans-IO link core, ``base.py`` the radio-adapter interface (implemented by ``bluez.py`` and
``bumble_adapter.py``), ``gatt.py`` BitChat's GATT constants and ``transport.py`` the Transport/Link over an adapter.
"""
