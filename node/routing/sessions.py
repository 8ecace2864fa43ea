"""Per-peer Noise XX sessions for private messages (sans-IO).

BitChat rules (bitchat/Noise/NoiseSessionManager.swift, BITCHAT.md §3):

* XX with empty payloads: messages of 32, 96 and 64 bytes travel as 0x10 packets addressed to the peer.
* The remote static key must hash to the peer's ID (and equal the key pinned from its announce).
* Crossed initiations: the side with the lower peer-ID hex keeps the initiator role; the other yields.
* A 32-byte message 1 from a peer we already have a session with starts a fresh handshake that replaces it.
* An unfinished handshake is abandoned after its timeout (initiator 10 s, responder 20 s in BitChat).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.crypto.errors import DecryptError, HandshakeError, ReplayError
from node.crypto.session import NoiseTransportSession, XXHandshake
from node.identity import peer_id_from_noise_key

MSG1_BYTES = 32  # → e
MSG2_BYTES = 96  # ← e, ee, s, es (+16-byte tag of the encrypted static, +16 of the empty payload)
MSG3_BYTES = 64  # → s, se
RESPONDER_TIMEOUT_FACTOR = 2.0  # BitChat: responder 20 s vs initiator 10 s


@dataclass
class _Handshake:
    hs: XXHandshake
    initiator: bool
    deadline: float


@dataclass(frozen=True, slots=True)
class HandshakeStep:
    reply: bytes | None  # a handshake message to send to the peer, if any
    established: bool  # a transport session with the peer now exists


class SessionManager:
    def __init__(self, *, static_private: bytes, local_peer_id: bytes, timeout_s: float) -> None:
        self._static = static_private
        self._local_hex = local_peer_id.hex()
        self._timeout_s = timeout_s
        self._sessions: dict[bytes, NoiseTransportSession] = {}
        # The session a new handshake replaced, kept for decryption only: frames the peer encrypted just
        # before it switched (an ack in flight) still open, instead of setting off yet another handshake.
        self._previous: dict[bytes, NoiseTransportSession] = {}
        self._handshakes: dict[bytes, _Handshake] = {}

    def session(self, peer: bytes) -> NoiseTransportSession | None:
        return self._sessions.get(peer)

    def handshaking(self, peer: bytes) -> bool:
        return peer in self._handshakes

    def responding(self, peer: bytes) -> bool:
        """A handshake with ``peer`` is under way and we are its responder (message 3 is what we await)."""
        pending = self._handshakes.get(peer)
        return pending is not None and not pending.initiator

    def drop(self, peer: bytes) -> None:
        self._sessions.pop(peer, None)
        self._previous.pop(peer, None)
        self._handshakes.pop(peer, None)

    def abandon_responder(self, peer: bytes) -> bool:
        """Drop a half-done handshake in which we are the responder. Called when the peer sends ciphertext we
        cannot open: it considers the handshake finished, so our message 3 was lost and waiting is futile."""
        pending = self._handshakes.get(peer)
        if pending is not None and not pending.initiator:
            del self._handshakes[peer]
            return True
        return False

    def decrypt_untrusted(self, peer: bytes, frame: bytes) -> bytes:
        """Decrypt with the current session, else the one it replaced. Raises CryptoError (DecryptError when
        neither opens it, ReplayError for a replay) — and HandshakeError if there is no session at all."""
        current = self._sessions.get(peer)
        if current is None:
            raise HandshakeError("no session with this peer")
        try:
            return current.decrypt_untrusted(frame)
        except (DecryptError, ReplayError) as first:
            # Nonces restart at 0 in a new session, so an old-session frame can look like a replay to the new one.
            previous = self._previous.get(peer)
            if previous is None:
                raise
            try:
                return previous.decrypt_untrusted(frame)
            except (DecryptError, ReplayError):
                raise first from None

    def initiate(self, peer: bytes, now: float) -> bytes | None:
        """Message 1 of a new handshake, or None if one is already under way."""
        if peer in self._handshakes:
            return None
        hs = XXHandshake.initiator_for(self._static)
        self._handshakes[peer] = _Handshake(hs, True, now + self._timeout_s)
        return hs.write()

    def on_message_untrusted(
        self, peer: bytes, message: bytes, now: float, pinned_static: bytes | None
    ) -> HandshakeStep:
        """Feed a 0x10 payload from ``peer``. Raises HandshakeError (a remote error) when it is invalid;
        the half-done handshake is then discarded."""
        pending = self._handshakes.get(peer)
        if len(message) == MSG1_BYTES:
            if pending is not None and pending.initiator and self._local_hex < peer.hex():
                return HandshakeStep(None, False)  # crossed: we keep the initiator role, they will yield
            hs = XXHandshake.responder_for(self._static)
            hs.read_untrusted(message)
            msg2 = hs.write()
            self._handshakes[peer] = _Handshake(hs, False, now + self._timeout_s * RESPONDER_TIMEOUT_FACTOR)
            return HandshakeStep(msg2, False)
        if pending is None:
            raise HandshakeError(f"handshake message of {len(message)} bytes with no handshake under way")
        try:
            reply: bytes | None = None
            if len(message) == MSG2_BYTES and pending.initiator:
                pending.hs.read_untrusted(message)
                reply = pending.hs.write()
            elif len(message) == MSG3_BYTES and not pending.initiator:
                pending.hs.read_untrusted(message)
            else:
                raise HandshakeError(f"unexpected handshake message of {len(message)} bytes")
            session = pending.hs.finish()
        except HandshakeError:
            del self._handshakes[peer]
            raise
        del self._handshakes[peer]
        remote = session.remote_static
        if peer_id_from_noise_key(remote) != peer:
            raise HandshakeError("the peer's static key does not hash to its peer ID")
        if pinned_static is not None and remote != pinned_static:
            raise HandshakeError("the peer's static key differs from the key pinned from its announce")
        old = self._sessions.get(peer)
        if old is not None:
            self._previous[peer] = old
        self._sessions[peer] = session
        return HandshakeStep(reply, True)

    def expire(self, now: float) -> list[bytes]:
        """Abandon handshakes past their deadline; returns the peers concerned."""
        gone = [p for p, h in self._handshakes.items() if h.deadline <= now]
        for p in gone:
            del self._handshakes[p]
        return gone

    def next_deadline(self) -> float | None:
        if not self._handshakes:
            return None
        return min(h.deadline for h in self._handshakes.values())
