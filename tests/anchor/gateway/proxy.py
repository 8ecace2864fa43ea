"""A TCP proxy that can cut a real server off and bring it back, for down/recovery tests.

Stopping the shared PostgreSQL or Redis would break other tests running against them; cutting the path to
them looks the same to the gateway (connections reset, new ones refused) and leaves them running.
"""

from __future__ import annotations

import trio

BUFFER_BYTES = 65_536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0  # picked at the first up(), kept afterwards
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._generation = 0  # of the proxied connections: those opened before a silence() go silent
        self._silent_below = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.up()
            task_status.started()
            await trio.sleep_forever()

    async def up(self) -> None:
        assert self._nursery is not None and self._scope is None
        await self._nursery.start(self._serve)

    def down(self) -> None:
        """Close the listening socket and every proxied connection."""
        assert self._scope is not None
        self._scope.cancel()
        self._scope = None

    def silence(self) -> None:
        """The path of every open connection is lost without a word (no FIN, no RST: a NAT or a firewall that
        dropped its state, a failover to another host behind the same address): what either side sends there is
        swallowed. New connections are proxied as before."""
        self._silent_below = self._generation

    async def _serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return
        self._generation += 1
        generation = self._generation
        async with client, server, trio.open_nursery() as nursery:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                try:
                    while data := await src.receive_some(BUFFER_BYTES):
                        if generation > self._silent_below:
                            await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, server)
            nursery.start_soon(pump, server, client)
