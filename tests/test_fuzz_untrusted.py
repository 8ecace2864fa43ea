"""Fuzzing every ``*_untrusted`` parser outside ``node.wire`` (whose decoders ``tests/wire/test_fuzz.py`` covers):
whatever the bytes, only the parser's one error type may come out (issue 13, item 6).

| parser | its error |
|---|---|
| ``node.routing.courier.decode_envelope_untrusted`` | MalformedFrame |
| ``node.routing.courier.open_untrusted`` | CryptoError |
| ``node.crypto.session.XXHandshake.read_untrusted`` / ``NoiseTransportSession.decrypt_untrusted`` | CryptoError |
| ``node.routing.sessions.SessionManager.on_message_untrusted`` / ``decrypt_untrusted`` | CryptoError |
| ``node.routing.app.AppChannel.receive_untrusted`` | none (drops and counts) |
| ``node.mailbox.protocol.decode_*_untrusted`` | MalformedFrame; MailboxError only for a well-formed error answer |
| ``anchor.mailbox.MailboxCore.check_deposit_untrusted`` | MailboxError |
| ``node.control.rpc.parse_request_untrusted`` | RpcError |
| ``node.rag.federated.decode_answer_untrusted`` | RagError |
| ``node.transports.ble.core.frame_length_untrusted`` | none (an int or None) |
"""

from __future__ import annotations

import contextlib
import json
import random
import struct

import nacl.bindings
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.control.rpc import RpcError, parse_request_untrusted
from node.crypto.session import XXHandshake
from node.errors import CryptoError
from node.mailbox import protocol as mp
from node.rag.errors import RagError
from node.rag.federated import decode_answer_untrusted
from node.routing.app import AppChannel
from node.routing.courier import decode_envelope_untrusted, open_untrusted
from node.routing.sessions import SessionManager
from node.transports.ble.core import frame_length_untrusted
from node.wire import MalformedFrame

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
STATIC = bytes(range(1, 33))


def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        i = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[i]
        elif op == "truncate":
            del buf[i:]
        elif op == "set" and buf:
            buf[i] = draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFF]))
    return bytes(buf)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    recipient = draw(st.binary(min_size=8, max_size=8))
    base = struct.pack(">8sQB", recipient, draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 255)))
    return mutate(draw, base + draw(st.binary(min_size=90, max_size=300)))


@settings(FAST)
@given(st.one_of(st.binary(max_size=600), envelopes()))
def test_courier_envelopes(data: bytes) -> None:
    try:
        env = decode_envelope_untrusted(data)
    except MalformedFrame:
        return
    with pytest.raises(CryptoError):  # random bytes never open
        open_untrusted(env, STATIC)


@settings(FAST)
@given(st.binary(max_size=200), st.integers(0, 2))
def test_noise_handshake_messages(data: bytes, step: int) -> None:
    initiator = XXHandshake.initiator_for(STATIC)
    responder = XXHandshake.responder_for(bytes(range(2, 34)))
    try:
        if step == 0:
            responder.read_untrusted(data)
        else:
            responder.read_untrusted(initiator.write())
            responder.write()
            initiator.read_untrusted(data)
    except CryptoError:
        pass


@settings(FAST)
@given(st.lists(st.tuples(st.binary(min_size=8, max_size=8), st.binary(max_size=120)), max_size=20))
def test_session_manager(messages: list[tuple[bytes, bytes]]) -> None:
    sm = SessionManager(static_private=STATIC, local_peer_id=b"\x01" * 8, timeout_s=10.0)
    for i, (peer, data) in enumerate(messages):
        with contextlib.suppress(CryptoError):
            sm.on_message_untrusted(peer, data, float(i), None)
        with contextlib.suppress(CryptoError):
            sm.decrypt_untrusted(peer, data)
        sm.expire(float(i))


@settings(FAST)
@given(st.binary(max_size=300))
def test_app_channel(data: bytes) -> None:
    app = AppChannel(random.Random(1))
    app.receive_untrusted(b"\x02" * 8, data)  # drops and counts; never raises


MAILBOX_DECODERS = (
    mp.decode_request_untrusted,
    mp.decode_deposited_untrusted,
    mp.decode_challenge_untrusted,
    mp.decode_envelopes_untrusted,
    mp.decode_acked_untrusted,
)


@st.composite
def mailbox_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 255))
    return bytes([kind]) + draw(st.binary(max_size=200))


@settings(FAST)
@given(st.one_of(st.binary(max_size=300), mailbox_bodies()))
def test_mailbox_protocol(data: bytes) -> None:
    for decode in MAILBOX_DECODERS:
        try:
            decode(data)
        except MalformedFrame:
            pass
        except mp.MailboxError as exc:  # the anchor answered with an ERROR frame: only a well-formed one says so
            assert data[:1] == bytes([mp.ERROR]) and len(data) >= 2, exc


@settings(FAST)
@given(st.binary(max_size=400), st.integers(0, 2**63))
def test_anchor_mailbox_deposit_check(data: bytes, now_ms: int) -> None:
    from anchor.mailbox import MailboxCore

    box = MailboxCore(bytes(32), random_bytes=random.Random(1).randbytes)
    with contextlib.suppress(mp.MailboxError):
        box.check_deposit_untrusted(data, now_ms)


def _json_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
    return st.recursive(
        scalars,
        lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
        max_leaves=20,
    )


@st.composite
def rpc_lines(draw: st.DrawFn) -> bytes:
    obj: dict[str, object] = {}
    for key in draw(st.lists(st.sampled_from(["jsonrpc", "method", "id", "params", "x"]), unique=True)):
        obj[key] = draw(st.one_of(st.just("2.0"), st.just("status"), _json_values()))
    return mutate(draw, json.dumps(obj).encode())


@settings(FAST)
@given(st.one_of(st.binary(max_size=300), rpc_lines(), st.integers(1, 200_000).map(lambda n: b"[" * n)))
def test_control_request_lines(line: bytes) -> None:
    try:
        req = parse_request_untrusted(line)
    except RpcError:
        return
    assert isinstance(req.method, str) and isinstance(req.params, dict)


@settings(FAST)
@given(st.one_of(st.binary(max_size=300), _json_values().map(lambda v: json.dumps({"v": 1, "hits": v}).encode())))
def test_federated_answers(body: bytes) -> None:
    with contextlib.suppress(RagError):
        decode_answer_untrusted(body, 5)


@settings(FAST)
@given(st.integers(1, 2), st.binary(max_size=64))
def test_ble_frame_length(version: int, rest: bytes) -> None:
    n = frame_length_untrusted(bytes([version]) + rest)
    assert n is None or n > 0


def test_deeply_nested_json_is_a_parse_error() -> None:
    """A control line of 100,000 ``[`` is refused as a parse error (json raises RecursionError, not ValueError)."""
    with pytest.raises(RpcError):
        parse_request_untrusted(b"[" * 100_000)


def test_random_keys_never_make_a_session() -> None:
    # msg1 of all-zero or low-order points must be refused (BITCHAT.md §3), not turned into a session
    sm = SessionManager(static_private=STATIC, local_peer_id=b"\x01" * 8, timeout_s=10.0)
    with pytest.raises(CryptoError):
        sm.on_message_untrusted(b"\x02" * 8, bytes(32), 0.0, None)
    assert nacl.bindings.crypto_scalarmult_base(STATIC)  # (the static key itself is fine)
