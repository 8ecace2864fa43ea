"""A virtual BLE "air" for multi-process tests: one Bumble ``LocalLink`` and one controller per TCP port, each
served as an HCI transport (H4 over TCP) that a daemon opens with ``[ble] adapter = "bumble"`` and
``bumble_transport = "tcp-client:127.0.0.1:PORT"`` — as it would open ``usb:0`` on a dongle.

    python -m tests.transports.ble.radio_hub PORT [PORT ...]

Prints ``READY`` once every port listens; runs until killed.
"""

from __future__ import annotations

import asyncio
import sys


async def main(ports: list[int]) -> None:
    from bumble.link import LocalLink
    from bumble.transport import open_transport

    from node.transports.ble.bumble_adapter import virtual_controller

    link = LocalLink()  # type: ignore[no-untyped-call]
    for i, port in enumerate(ports):
        hci = await open_transport(f"tcp-server:127.0.0.1:{port}")
        virtual_controller(f"radio{i}", link, hci.source, hci.sink)
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:]]))
