"""The app request/response channel (sans-IO): a small RPC between two peers, carried inside their existing Noise
session as one encrypted payload type of our own (``NoisePayloadType.APP_CHANNEL``, 0x70 — BitChat phones do not
use it and ignore Noise payload types they do not know).

Plaintext after the Noise payload type byte::

    request   [0x01][request id: 8 bytes][service length u8][service UTF-8][body]
    response  [0x02][request id: 8 bytes][body]
    error     [0x03][request id: 8 bytes][message UTF-8, <= 255 bytes]

A request names a *service* (e.g. ``rag.query``); the answering node's handler for it returns the body of the
response, and a node with no handler answers an error. Bodies are bounded (:data:`APP_MAX_BODY_BYTES`, one Noise
transport message with room to spare); an oversize request is refused before it leaves, an oversize answer is
replaced by an error, an oversize frame received is dropped — each counted. Only responses to a request we sent
to that very peer and still wait for are accepted (``unsolicited`` otherwise). Timeouts are the adapter's
(:meth:`node.node.Node.app_request`), which calls :meth:`AppChannel.forget` and counts them here.

Delivery: the requester resends the same request (same id) until it is answered or its timeout ends — a frame
lost, or an encrypted frame that overtook the last handshake message, costs a resend, not the request. The
answering side runs each (peer, request id) once: a copy of a request still being served is ignored, a copy of
one already answered gets the remembered answer again (the last :data:`APP_ANSWERS_KEPT` answers are kept).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

from node.errors import MeshError
from node.wire import MalformedFrame, NoisePayloadType, encode_noise_payload

APP_MAX_BODY_BYTES = 48_000  # request/response body bound: one Noise message (<= 65,535 bytes) with headroom
APP_MAX_SERVICE_BYTES = 64  # service names are short identifiers (one length byte on the wire)
APP_MAX_ERROR_BYTES = 255  # error messages are truncated to this many bytes of UTF-8
APP_MAX_OUTSTANDING = 256  # requests awaiting an answer; a new one beyond this is refused locally
APP_ANSWERS_KEPT = 64  # answers remembered to re-answer a resent request (<= 64 x 48 kB)
REQUEST_ID_BYTES = 8

KIND_REQUEST, KIND_RESPONSE, KIND_ERROR = 0x01, 0x02, 0x03


class AppError(MeshError):
    """An app request could not be made or was not answered."""


class AppTimeout(AppError):
    """The peer did not answer within the timeout (it may be slow, silent or unreachable)."""


class AppRemoteError(AppError):
    """The peer answered with an error (no handler for the service, busy, handler failure...)."""


@dataclass(frozen=True, slots=True)
class AppRequestReceived:
    peer_id: bytes
    request_id: bytes
    service: str
    body: bytes


@dataclass(frozen=True, slots=True)
class AppResponseReceived:
    peer_id: bytes
    request_id: bytes
    body: bytes
    error: str | None  # set when the peer answered an error


AppEvent = AppRequestReceived | AppResponseReceived


@dataclass(slots=True)
class AppCounters:
    requests_sent: int = 0
    requests_received: int = 0
    responses_sent: int = 0
    responses_received: int = 0
    errors_sent: int = 0
    errors_received: int = 0
    no_handler: int = 0  # requests for a service this node does not serve (answered an error)
    busy: int = 0  # requests refused because too many handlers were running (answered an error)
    oversize: int = 0  # bodies over the bound: refused before sending, or received and dropped
    malformed: int = 0  # app frames that did not parse (dropped)
    unsolicited: int = 0  # responses to nothing we asked that peer (dropped)
    timeouts: int = 0  # our requests that got no answer in time
    resends: int = 0  # copies of our requests sent again while waiting
    duplicates: int = 0  # copies of a request already being served or answered (answered again from memory)


def _check_service(service: str) -> bytes:
    raw = service.encode()
    if not raw or len(raw) > APP_MAX_SERVICE_BYTES:
        raise AppError(f"an app service name must have 1 to {APP_MAX_SERVICE_BYTES} bytes; {service!r} does not")
    return raw


class AppChannel:
    """Encodes requests/responses and matches answers to outstanding requests. Holds no I/O and no clock."""

    def __init__(self, rng: random.Random, *, max_outstanding: int = APP_MAX_OUTSTANDING) -> None:
        self._rng = rng
        self._max_outstanding = max_outstanding
        self.counters = AppCounters()
        self._outstanding: OrderedDict[bytes, bytes] = OrderedDict()  # request id -> the peer asked
        # (peer, request id) -> the answer sent, or None while the handler runs
        self._served: OrderedDict[tuple[bytes, bytes], bytes | None] = OrderedDict()

    def outstanding(self) -> int:
        return len(self._outstanding)

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        return {
            "app_outstanding": (len(self._outstanding), self._max_outstanding),
            "app_answers": (len(self._served), APP_ANSWERS_KEPT),
        }

    def request(self, peer_id: bytes, service: str, body: bytes) -> tuple[bytes, bytes]:
        """A new request to ``peer_id``: returns (request id, Noise plaintext to send). Raises :class:`AppError`
        for an oversize body, a bad service name or too many requests outstanding."""
        raw_service = _check_service(service)
        if len(body) > APP_MAX_BODY_BYTES:
            self.counters.oversize += 1
            raise AppError(f"an app request body may have at most {APP_MAX_BODY_BYTES} bytes; this one has {len(body)}")
        if len(self._outstanding) >= self._max_outstanding:
            raise AppError(f"{len(self._outstanding)} app requests already await an answer; try again later")
        request_id = self._rng.getrandbits(8 * REQUEST_ID_BYTES).to_bytes(REQUEST_ID_BYTES, "big")
        self._outstanding[request_id] = peer_id
        self.counters.requests_sent += 1
        frame = bytes([KIND_REQUEST]) + request_id + bytes([len(raw_service)]) + raw_service + body
        return request_id, encode_noise_payload(NoisePayloadType.APP_CHANNEL, frame)

    def resend(self, request_id: bytes) -> None:
        """Count a copy of an outstanding request sent again (the adapter resends the same plaintext)."""
        if request_id in self._outstanding:
            self.counters.resends += 1

    def forget(self, request_id: bytes, *, timed_out: bool) -> None:
        """The requester stopped waiting (answered, timed out or cancelled): a late answer is unsolicited."""
        if self._outstanding.pop(request_id, None) is not None and timed_out:
            self.counters.timeouts += 1

    def response(self, peer_id: bytes, request_id: bytes, body: bytes) -> bytes:
        """The Noise plaintext answering ``request_id`` with ``body`` (an error instead if it is oversize)."""
        if len(body) > APP_MAX_BODY_BYTES:
            self.counters.oversize += 1
            return self.error(
                peer_id, request_id, f"the answer had {len(body)} bytes, over the {APP_MAX_BODY_BYTES}-byte bound"
            )
        self.counters.responses_sent += 1
        plaintext = encode_noise_payload(NoisePayloadType.APP_CHANNEL, bytes([KIND_RESPONSE]) + request_id + body)
        self._remember(peer_id, request_id, plaintext)
        return plaintext

    def error(self, peer_id: bytes, request_id: bytes, message: str) -> bytes:
        self.counters.errors_sent += 1
        raw = message.encode()[:APP_MAX_ERROR_BYTES].decode("utf-8", errors="ignore").encode()
        plaintext = encode_noise_payload(NoisePayloadType.APP_CHANNEL, bytes([KIND_ERROR]) + request_id + raw)
        self._remember(peer_id, request_id, plaintext)
        return plaintext

    def _remember(self, peer_id: bytes, request_id: bytes, answer: bytes | None) -> None:
        self._served[(peer_id, request_id)] = answer
        self._served.move_to_end((peer_id, request_id))
        while len(self._served) > APP_ANSWERS_KEPT:
            self._served.popitem(last=False)

    def receive_untrusted(self, peer_id: bytes, data: bytes) -> AppEvent | bytes | None:
        """An APP_CHANNEL payload (after the type byte) from an authenticated peer: an event for the adapter,
        bytes (a remembered answer to send the peer again: its request was a copy), or None when dropped."""
        try:
            event = self._decode_untrusted(peer_id, data)
        except MalformedFrame:
            self.counters.malformed += 1
            return None
        if isinstance(event, AppRequestReceived):
            key = (peer_id, event.request_id)
            if key in self._served:
                self.counters.duplicates += 1
                return self._served[key]  # None while the handler still runs: the copy is simply dropped
            self._remember(peer_id, event.request_id, None)
            self.counters.requests_received += 1
            return event
        if event is None:
            return None
        if self._outstanding.get(event.request_id) != peer_id:
            self.counters.unsolicited += 1
            return None
        del self._outstanding[event.request_id]
        if event.error is None:
            self.counters.responses_received += 1
        else:
            self.counters.errors_received += 1
        return event

    def _decode_untrusted(self, peer_id: bytes, data: bytes) -> AppEvent | None:
        if len(data) < 1 + REQUEST_ID_BYTES:
            raise MalformedFrame("app frame shorter than its header")
        kind, request_id, rest = data[0], bytes(data[1 : 1 + REQUEST_ID_BYTES]), data[1 + REQUEST_ID_BYTES :]
        if kind == KIND_REQUEST:
            if not rest:
                raise MalformedFrame("app request without its service name")
            n = rest[0]
            if n == 0 or n > APP_MAX_SERVICE_BYTES or len(rest) < 1 + n:
                raise MalformedFrame("app request service name out of bounds")
            try:
                service = rest[1 : 1 + n].decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedFrame("app request service name is not UTF-8") from None
            body = bytes(rest[1 + n :])
            if len(body) > APP_MAX_BODY_BYTES:
                self.counters.oversize += 1
                return None
            return AppRequestReceived(peer_id, request_id, service, body)
        if kind == KIND_RESPONSE:
            if len(rest) > APP_MAX_BODY_BYTES:
                self.counters.oversize += 1
                return None
            return AppResponseReceived(peer_id, request_id, bytes(rest), None)
        if kind == KIND_ERROR:
            if len(rest) > APP_MAX_ERROR_BYTES:
                raise MalformedFrame("app error message too long")
            return AppResponseReceived(peer_id, request_id, b"", rest.decode("utf-8", errors="replace") or "error")
        raise MalformedFrame(f"unknown app frame kind {kind:#04x}")


__all__ = [
    "APP_MAX_BODY_BYTES",
    "AppChannel",
    "AppCounters",
    "AppError",
    "AppEvent",
    "AppRemoteError",
    "AppRequestReceived",
    "AppResponseReceived",
    "AppTimeout",
]
