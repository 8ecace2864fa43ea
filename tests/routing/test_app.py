"""The app request/response channel: real Nodes over memory links in simulated time, and the sans-IO core's
bad-input paths (malformed, unsolicited, oversize), each asserted through answers and counters."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import MeshError
from node.routing.app import (
    APP_MAX_BODY_BYTES,
    AppChannel,
    AppError,
    AppRemoteError,
    AppRequestReceived,
    AppResponseReceived,
    AppTimeout,
)
from node.transports.memory import Faults
from node.wire import NoisePayloadType, decode_noise_payload_untrusted
from tests.routing.harness import Mesh, start_mesh

SIM_TIMEOUT_S = 600
NO_LOSS = Faults(duplicate=0.2, reorder=0.3, reorder_window_s=0.3, latency_s=0.02, jitter_s=0.05)
SECRET = b"the-body-must-never-travel-in-clear-0123456789"


async def _pair(nursery: trio.Nursery, tmp_path: Path, n: int = 2) -> Mesh:
    mesh = await start_mesh(nursery, tmp_path, n)
    for j in range(1, n):
        mesh.connect(0, j, NO_LOSS)
    with trio.fail_after(SIM_TIMEOUT_S):
        for j in range(1, n):
            await mesh.wait_until_known(0, j)
            await mesh.wait_until_known(j, 0)
    return mesh


async def test_request_is_answered_by_the_peer_handler_and_encrypted_on_the_wire(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path)
    mesh.net.tap = []
    seen: list[tuple[bytes, bytes]] = []

    async def echo(peer: bytes, body: bytes) -> bytes:
        seen.append((peer, body))
        return b"echo:" + body

    mesh.nodes[1].register_app_handler("test.echo", echo)
    with trio.fail_after(SIM_TIMEOUT_S):
        answer = await mesh.nodes[0].app_request(mesh.nodes[1].identity.peer_id_hex, "test.echo", SECRET, timeout_s=10)
    assert answer == b"echo:" + SECRET
    assert seen == [(mesh.nodes[0].identity.peer_id, SECRET)]  # the handler learns the authenticated requester
    assert mesh.net.tap and not any(SECRET in frame for _, _, frame in mesh.net.tap)
    c0, c1 = mesh.nodes[0].status()["app_counters"], mesh.nodes[1].status()["app_counters"]
    assert (c0["requests_sent"], c0["responses_received"]) == (1, 1)
    assert (c1["requests_received"], c1["responses_sent"]) == (1, 1)


async def test_peer_without_a_handler_answers_an_error(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path)
    with trio.fail_after(SIM_TIMEOUT_S), pytest.raises(AppRemoteError, match="no handler for service 'nope'"):
        await mesh.nodes[0].app_request(mesh.nodes[1].identity.peer_id, "nope", b"x", timeout_s=10)
    assert mesh.nodes[1].status()["app_counters"]["no_handler"] == 1
    assert mesh.nodes[0].status()["app_counters"]["errors_received"] == 1


async def test_handler_errors_reach_the_requester_and_the_node_keeps_serving(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path)

    async def refuse(peer: bytes, body: bytes) -> bytes:
        if body == b"bad":
            raise MeshError("refused: bad input")
        if body == b"bug":
            raise ValueError("a bug")
        return b"ok"

    mesh.nodes[1].register_app_handler("svc", refuse)
    peer = mesh.nodes[1].identity.peer_id
    with trio.fail_after(SIM_TIMEOUT_S):
        with pytest.raises(AppRemoteError, match="refused: bad input"):
            await mesh.nodes[0].app_request(peer, "svc", b"bad", timeout_s=10)
        with pytest.raises(AppRemoteError, match="internal error"):
            await mesh.nodes[0].app_request(peer, "svc", b"bug", timeout_s=10)
        assert await mesh.nodes[0].app_request(peer, "svc", b"fine", timeout_s=10) == b"ok"


async def test_silent_peer_times_out_without_blocking_a_fast_one(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path, 3)
    release = trio.Event()

    async def slow(peer: bytes, body: bytes) -> bytes:
        await release.wait()
        return b"late"

    async def fast(peer: bytes, body: bytes) -> bytes:
        return b"fast"

    mesh.nodes[1].register_app_handler("svc", slow)
    mesh.nodes[2].register_app_handler("svc", fast)
    results: dict[int, bytes | str] = {}

    async def ask(j: int) -> None:
        try:
            results[j] = await mesh.nodes[0].app_request(mesh.nodes[j].identity.peer_id, "svc", b"q", timeout_s=5)
        except AppTimeout:
            results[j] = "timeout"

    start = trio.current_time()
    async with trio.open_nursery() as inner:
        inner.start_soon(ask, 1)
        inner.start_soon(ask, 2)
    assert results == {1: "timeout", 2: b"fast"}
    assert trio.current_time() - start == pytest.approx(5, abs=0.5)
    assert mesh.nodes[0].status()["app_counters"]["timeouts"] == 1
    # The late answer arrives after the requester gave up: dropped as unsolicited, not delivered to anyone.
    release.set()
    core0 = mesh.nodes[0].core
    assert core0 is not None
    with trio.fail_after(SIM_TIMEOUT_S):
        await mesh.nodes[0].wait_until(lambda: core0.app.counters.unsolicited == 1)


async def test_oversize_bodies_are_refused_and_counted(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path)

    async def huge(peer: bytes, body: bytes) -> bytes:
        return b"x" * (APP_MAX_BODY_BYTES + 1)

    mesh.nodes[1].register_app_handler("huge", huge)
    peer = mesh.nodes[1].identity.peer_id
    with pytest.raises(AppError, match="at most"):
        await mesh.nodes[0].app_request(peer, "huge", b"y" * (APP_MAX_BODY_BYTES + 1), timeout_s=10)
    with trio.fail_after(SIM_TIMEOUT_S), pytest.raises(AppRemoteError, match="over the"):
        await mesh.nodes[0].app_request(peer, "huge", b"small", timeout_s=10)
    assert mesh.nodes[0].status()["app_counters"]["oversize"] == 1
    assert mesh.nodes[1].status()["app_counters"]["oversize"] == 1


async def test_unknown_peer_is_a_clear_error(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path)
    with pytest.raises(MeshError, match="unknown"):
        await mesh.nodes[0].app_request(b"\x01" * 8, "svc", b"", timeout_s=1)
    core0 = mesh.nodes[0].core
    assert core0 is not None and core0.app.outstanding() == 0  # nothing left waiting
    assert core0.app.counters.timeouts == 0  # refused, not timed out


async def test_a_cancelled_request_is_forgotten_without_counting_a_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path)

    async def never(peer: bytes, body: bytes) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    mesh.nodes[1].register_app_handler("never", never)
    with trio.move_on_after(2):
        await mesh.nodes[0].app_request(mesh.nodes[1].identity.peer_id, "never", b"", timeout_s=60)
    core0 = mesh.nodes[0].core
    assert core0 is not None and core0.app.outstanding() == 0 and core0.app.counters.timeouts == 0


def _body(plaintext: bytes) -> bytes:
    ptype, body = decode_noise_payload_untrusted(plaintext)
    assert ptype == NoisePayloadType.APP_CHANNEL
    return body


def test_core_matches_answers_to_the_peer_asked_only() -> None:
    a, b = AppChannel(random.Random(1)), AppChannel(random.Random(2))
    pa, pb, pc = b"A" * 8, b"B" * 8, b"C" * 8
    rid, plaintext = a.request(pb, "svc", b"hello")
    req = b.receive_untrusted(pa, _body(plaintext))
    assert req == AppRequestReceived(pa, rid, "svc", b"hello")
    answer = _body(b.response(pa, rid, b"world"))
    assert a.receive_untrusted(pc, answer) is None  # the same id from another peer: not an answer
    assert a.counters.unsolicited == 1
    assert a.receive_untrusted(pb, answer) == AppResponseReceived(pb, rid, b"world", None)
    assert a.receive_untrusted(pb, answer) is None  # a duplicate after the match
    assert a.counters.unsolicited == 2 and a.counters.responses_received == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x01" + b"i" * 8,
        b"\x01" + b"i" * 8 + b"\x05ab",
        b"\x01" + b"i" * 8 + b"\x02\xff\xfe",
        b"\x09" * 9,
    ],
)
def test_core_drops_and_counts_malformed_frames(data: bytes) -> None:
    ch = AppChannel(random.Random(3))
    assert ch.receive_untrusted(b"P" * 8, data) is None
    assert ch.counters.malformed == 1


def test_core_refuses_bad_service_names_and_too_many_outstanding() -> None:
    ch = AppChannel(random.Random(4), max_outstanding=2)
    with pytest.raises(AppError):
        ch.request(b"P" * 8, "", b"")
    with pytest.raises(AppError):
        ch.request(b"P" * 8, "s" * 65, b"")
    ch.request(b"P" * 8, "s", b"")
    rid, _ = ch.request(b"P" * 8, "s", b"")
    with pytest.raises(AppError, match="already await"):
        ch.request(b"P" * 8, "s", b"")
    ch.forget(rid, timed_out=True)
    ch.request(b"P" * 8, "s", b"")
    assert ch.counters.timeouts == 1


def test_core_serves_a_resent_request_once_and_repeats_its_answer() -> None:
    a, b = AppChannel(random.Random(5)), AppChannel(random.Random(6))
    pa, pb = b"A" * 8, b"B" * 8
    rid, plaintext = a.request(pb, "svc", b"q")
    a.resend(rid)
    assert isinstance(b.receive_untrusted(pa, _body(plaintext)), AppRequestReceived)
    assert b.receive_untrusted(pa, _body(plaintext)) is None  # a copy while the handler runs: dropped
    answer = b.response(pa, rid, b"r")
    assert b.receive_untrusted(pa, _body(plaintext)) == answer  # a copy after the answer: the same answer again
    assert (b.counters.requests_received, b.counters.duplicates, a.counters.resends) == (1, 2, 1)


async def test_one_peer_cannot_take_every_handler_slot(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await _pair(nursery, tmp_path, 3)
    release = trio.Event()

    async def slow(peer: bytes, body: bytes) -> bytes:
        await release.wait()
        return b"done"

    mesh.nodes[0].register_app_handler("slow", slow)
    outcomes: list[str] = []

    async def ask(j: int) -> None:
        try:
            await mesh.nodes[j].app_request(mesh.nodes[0].identity.peer_id, "slow", b"", timeout_s=30)
            outcomes.append(f"n{j}:ok")
        except AppRemoteError as exc:
            outcomes.append(f"n{j}:busy" if "busy" in str(exc) else f"n{j}:{exc}")

    with trio.fail_after(SIM_TIMEOUT_S):
        async with trio.open_nursery() as inner:
            for _ in range(5):  # n1 asks five at once: four run, the fifth is refused
                inner.start_soon(ask, 1)
            core0 = mesh.nodes[0].core
            assert core0 is not None
            await mesh.nodes[0].wait_until(lambda: core0.app.counters.busy == 1)
            inner.start_soon(ask, 2)  # another peer still gets a slot
            await mesh.nodes[0].wait_until(lambda: core0.app.counters.requests_received == 6)
            release.set()
    assert sorted(outcomes) == ["n1:busy", "n1:ok", "n1:ok", "n1:ok", "n1:ok", "n2:ok"]


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_core_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    ch = AppChannel(random.Random(7))
    ch.request(b"P" * 8, "svc", b"")
    out = ch.receive_untrusted(b"P" * 8, data)  # dropped and counted, or parsed: never an exception
    assert out is None or isinstance(out, AppRequestReceived | AppResponseReceived)
    if out is None:
        assert ch.counters.malformed + ch.counters.unsolicited + ch.counters.oversize == 1
