"""The Link conformance suite: every transport's links must pass it.

Use it by subclassing :class:`LinkConformance` in a ``test_*.py`` module under a ``Test*`` name and
providing a ``link_pair`` fixture that yields two connected :class:`~node.transports.base.Link` ends
(``(a, b)``: what ``a`` sends, ``b`` receives) on a fault-free medium. Tests use real time with generous
timeouts so that real transports (sockets, Bumble radios) can run them too.
"""

from __future__ import annotations

import trio

from node.transports.base import FrameSizeError, Link, LinkClosed

TIMEOUT_S = 10.0  # generous: real transports may need a moment; a passing run never waits this long


def frame_of(tag: int, size: int) -> bytes:
    """A frame whose every byte identifies it, so torn or merged frames are detected."""
    head = tag.to_bytes(4, "big")
    return (head * (size // 4 + 1))[:size]


class LinkConformance:
    # Subclasses provide: a `link_pair` fixture returning (a, b).

    async def test_metadata(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        assert a.link_id and b.link_id and a.link_id != b.link_id
        assert a.transport_name == b.transport_name
        assert a.mtu >= 64 and b.mtu >= 64  # smaller cannot carry a BitChat fragment header and chunk
        assert isinstance(a.remote_address, str) and a.remote_address

    async def test_roundtrip_both_directions(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        with trio.fail_after(TIMEOUT_S):
            await a.send(b"ping from a" * 3)
            assert await b.receive() == b"ping from a" * 3
            await b.send(b"pong from b")
            assert await a.receive() == b"pong from b"

    async def test_mtu_boundary(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        with trio.fail_after(TIMEOUT_S):
            big = frame_of(7, a.mtu)
            await a.send(big)
            assert await b.receive() == big
            try:
                await a.send(frame_of(8, a.mtu + 1))
            except FrameSizeError:
                pass
            else:
                raise AssertionError("a frame over the MTU was accepted")
            try:
                await a.send(b"")
            except FrameSizeError:
                pass
            else:
                raise AssertionError("an empty frame was accepted")
            await a.send(b"still usable")  # a local size error does not break the link
            assert await b.receive() == b"still usable"

    async def test_many_frames(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        frames = [frame_of(i, 30 + (i * 37) % min(a.mtu - 30, 900)) for i in range(200)]
        got: list[bytes] = []
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    for f in frames:
                        await a.send(f)

                nursery.start_soon(sender)
                while len(got) < len(frames):
                    got.append(await b.receive())
        caps = a.capabilities
        assert caps.reliable, "the conformance pair must be set up fault-free"
        if caps.ordered:
            assert got == frames
        else:
            assert sorted(got) == sorted(frames)

    async def test_concurrent_senders_keep_frame_boundaries(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        sizes = {1: 100, 2: min(a.mtu, 3000)}
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for tag, size in sizes.items():

                    async def sender(tag: int = tag, size: int = size) -> None:
                        for _ in range(25):
                            await a.send(frame_of(tag, size))

                    nursery.start_soon(sender)
                received = [await b.receive() for _ in range(50)]
        assert sorted(received) == sorted([frame_of(1, sizes[1])] * 25 + [frame_of(2, sizes[2])] * 25)

    async def test_receive_is_cancel_safe(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        with trio.move_on_after(0.05):
            await b.receive()  # nothing sent yet: cancelled while waiting
        with trio.fail_after(TIMEOUT_S):
            await a.send(b"after the cancelled receive")
            assert await b.receive() == b"after the cancelled receive"

    async def test_close_ends_the_peer(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        with trio.fail_after(TIMEOUT_S):
            await a.send(b"last words")
            await a.aclose()
            await a.aclose()  # idempotent
            try:
                await a.send(b"after close")
            except LinkClosed:
                pass
            else:
                raise AssertionError("send on a closed link did not raise LinkClosed")
            # What was sent before the close may still arrive; then the peer sees the end.
            while True:
                try:
                    frame = await b.receive()
                except LinkClosed:
                    break
                assert frame == b"last words"

    async def test_peer_close_stops_our_sends(self, link_pair: tuple[Link, Link]) -> None:
        a, b = link_pair
        await b.aclose()
        with trio.fail_after(TIMEOUT_S):
            for _ in range(1000):
                try:
                    await a.send(b"anyone there?")
                except LinkClosed:
                    break
                await trio.sleep(0.001)
            else:
                raise AssertionError("sends kept succeeding after the peer closed the link")
            try:
                await a.receive()
            except LinkClosed:
                pass
            else:
                raise AssertionError("receive returned a frame after the peer closed the link")
