"""BitChat's use of Noise (BITCHAT.md §3; bitchat/Noise/NoiseSession.swift, NoiseProtocol.swift).

* :class:`XXHandshake`: ``Noise_XX_25519_ChaChaPoly_SHA256``, empty prologue, empty payloads, so the three
  messages are exactly 32, 96 and 64 bytes.
* :class:`NoiseTransportSession`: the transport phase. A frame is ``nonce u32 BE ‖ ciphertext ‖ tag``; the
  AEAD nonce is the counter (u64 little-endian after 4 zero bytes) and AD is empty. The sender counts from 0
  and refuses past 2³²−2; the receiver keeps a 1024-wide sliding replay window and marks a nonce seen only
  after the frame decrypts.
"""

from __future__ import annotations

import copy
import struct

from node.crypto.errors import DecryptError, HandshakeError, NonceExhausted, ReplayError
from node.crypto.noise import TAGLEN, CipherState, HandshakeState

XX_PROTOCOL = "Noise_XX_25519_ChaChaPoly_SHA256"
XX_MESSAGE_BYTES = (32, 96, 64)  # → e / ← e, ee, s, es / → s, se, with empty payloads
NONCE_BYTES = 4  # BitChat's explicit transport nonce: u32 big-endian
MAX_SEND_NONCE = 2**32 - 2  # BitChat refuses to send beyond this
REPLAY_WINDOW = 1024  # nonces
SESSION_MAX_AGE_S = 24 * 3600.0  # iOS: rekey a session after 24 h
SESSION_MAX_MESSAGES = 1_000_000_000  # iOS: ... or 10^9 messages
REKEY_THRESHOLD = 0.9  # iOS rekeys at 90 % of the message limit


class NoiseTransportSession:
    def __init__(
        self,
        send: CipherState,
        recv: CipherState,
        *,
        handshake_hash: bytes,
        remote_static: bytes,
        max_send_nonce: int = MAX_SEND_NONCE,
        replay_window: int = REPLAY_WINDOW,
    ) -> None:
        self._send = send
        self._recv = recv
        self.handshake_hash = handshake_hash
        self.remote_static = remote_static
        self.max_send_nonce = max_send_nonce
        self.replay_window = replay_window
        self._next_send = 0
        self._highest = -1  # highest nonce accepted so far
        self._seen = 0  # bit i set: nonce (highest - i) was accepted
        self.messages_sent = 0
        self.messages_received = 0

    def encrypt(self, plaintext: bytes) -> bytes:
        n = self._next_send
        if n > self.max_send_nonce:
            raise NonceExhausted(f"session has sent {n} messages; a new handshake is required")
        ciphertext = self._send.encrypt_at(n, b"", plaintext)
        self._next_send += 1
        self.messages_sent += 1
        return struct.pack(">I", n) + ciphertext

    def decrypt_untrusted(self, frame: bytes) -> bytes:
        if len(frame) < NONCE_BYTES + TAGLEN:
            raise DecryptError(f"transport frame of {len(frame)} bytes is too short")
        (n,) = struct.unpack_from(">I", frame)
        if n <= self._highest:
            age = self._highest - n
            if age >= self.replay_window:
                raise ReplayError(f"nonce {n} is older than the replay window")
            if self._seen >> age & 1:
                raise ReplayError(f"nonce {n} was already received")
        plaintext = self._recv.decrypt_at(n, b"", frame[NONCE_BYTES:])
        if n > self._highest:
            shift = n - self._highest
            # A jump past the whole window forgets every older bit; never shift by the raw distance, which for a
            # (valid, authenticated) nonce near 2**32 would build a 512 MiB integer before the mask applies.
            if shift >= self.replay_window:
                self._seen = 1
            else:
                self._seen = ((self._seen << shift) | 1) & ((1 << self.replay_window) - 1)
            self._highest = n
        else:
            self._seen |= 1 << (self._highest - n)
        self.messages_received += 1
        return plaintext

    def needs_rekey(
        self,
        age_s: float,
        *,
        max_age_s: float = SESSION_MAX_AGE_S,
        max_messages: int = SESSION_MAX_MESSAGES,
        threshold: float = REKEY_THRESHOLD,
    ) -> bool:
        """BitChat's policy: renew after ``max_age_s`` or at ``threshold`` of the message (or nonce) budget."""
        used = max(self.messages_sent, self.messages_received)
        budget = min(max_messages, self.max_send_nonce)
        return age_s >= max_age_s or used >= threshold * budget

    def rekey(self) -> None:
        """Noise Rekey (§11.3) of both directions. Both sides must call it at the same point of the
        conversation (e.g. after an agreed message count); frames encrypted before a side rekeys do not
        decrypt after it."""
        self._send.rekey()
        self._recv.rekey()


class XXHandshake:
    """One side of BitChat's XX handshake. Lengths are checked before any cryptography runs."""

    def __init__(self, initiator: bool, static_private: bytes, *, ephemeral_private: bytes | None = None) -> None:
        self.initiator = initiator
        self._hs = HandshakeState(
            XX_PROTOCOL, initiator=initiator, static_private=static_private, ephemeral_private=ephemeral_private
        )
        self._step = 0

    @classmethod
    def initiator_for(cls, static_private: bytes) -> XXHandshake:
        return cls(True, static_private)

    @classmethod
    def responder_for(cls, static_private: bytes) -> XXHandshake:
        return cls(False, static_private)

    @property
    def is_complete(self) -> bool:
        return self._hs.is_complete

    @property
    def remote_static(self) -> bytes | None:
        return self._hs.remote_static_public_key

    def copy(self) -> XXHandshake:
        """An independent copy: read a message from an unauthenticated sender into the copy, and keep it only if
        the read (and what follows it) succeeds — a forged message then leaves the original untouched."""
        return copy.deepcopy(self)

    def write(self) -> bytes:
        msg = self._hs.write_message(b"")
        self._step += 1
        return msg

    def read_untrusted(self, message: bytes) -> None:
        if self._step >= len(XX_MESSAGE_BYTES):
            raise HandshakeError("handshake already complete")
        expected = XX_MESSAGE_BYTES[self._step]
        if len(message) != expected:
            raise HandshakeError(f"handshake message {self._step + 1} must be {expected} bytes, got {len(message)}")
        payload = self._hs.read_message(message)
        if payload:
            raise HandshakeError("BitChat handshake payloads are empty")
        self._step += 1

    def finish(self, **session_kw: int) -> NoiseTransportSession:
        if not self._hs.is_complete or self._hs.remote_static_public_key is None:
            raise HandshakeError("handshake is not complete")
        send, recv = self._hs.split()
        return NoiseTransportSession(
            send,
            recv,
            handshake_hash=self._hs.handshake_hash,
            remote_static=self._hs.remote_static_public_key,
            **session_kw,
        )
