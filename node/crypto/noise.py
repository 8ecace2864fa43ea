"""The Noise Protocol Framework (revision 34) for the 25519 / ChaChaPoly / SHA256 suite, sans-IO.

Written from the specification (noiseprotocol.org/noise.html): §5.1 CipherState, §5.2 SymmetricState,
§5.3 HandshakeState, §7 handshake patterns, §9 pre-shared keys, §11.3 Rekey. Primitives are pynacl's
(X25519, ChaCha20-Poly1305 IETF) plus hashlib/hmac for SHA-256, HMAC and HKDF.

* ChaChaPoly nonce (§12.3): 32 bits of zeros followed by the 64-bit counter **little-endian**.
* An all-zero DH output (a low-order or all-zero public key from the peer) is rejected (BITCHAT.md §3).
* Every failure on bytes from the peer raises a :mod:`node.crypto.errors` remote error; nacl's exceptions
  never escape.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from node.crypto.errors import DecryptError, HandshakeError, LowOrderKey, NonceExhausted

DHLEN = 32  # bytes: X25519 public keys and shared secrets
HASHLEN = 32  # bytes: SHA-256
KEYLEN = 32  # bytes: ChaCha20-Poly1305 key
TAGLEN = 16  # bytes: Poly1305 tag
MAX_NONCE = 2**64 - 1  # §5.1: this nonce value is reserved for rekey and may not be used to encrypt
ZERO_KEY = bytes(32)


def x25519_public(private: bytes) -> bytes:
    return nacl.bindings.crypto_scalarmult_base(private)


def dh(private: bytes, public: bytes) -> bytes:
    if len(public) != DHLEN:
        raise HandshakeError(f"public key of {len(public)} bytes (expected {DHLEN})")
    try:
        shared = nacl.bindings.crypto_scalarmult(private, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError, ValueError) as exc:
        raise LowOrderKey("X25519 failed: low-order or invalid public key") from exc
    if shared == ZERO_KEY:
        raise LowOrderKey("X25519 produced an all-zero secret: low-order or all-zero public key")
    return shared


def _nonce(n: int) -> bytes:
    return bytes(4) + n.to_bytes(8, "little")


def aead_encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, _nonce(n), key)


def aead_decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, _nonce(n), key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecryptError("ciphertext failed authentication") from exc


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """§4.3 HKDF with 2 or 3 outputs."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp, out2 + b"\x03")


class CipherState:
    """§5.1: a key (or none) and a 64-bit nonce counter."""

    def __init__(self, key: bytes | None = None) -> None:
        self.k = key
        self.n = 0

    def has_key(self) -> bool:
        return self.k is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.k is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise NonceExhausted("nonce space exhausted")
        ct = aead_encrypt(self.k, self.n, ad, plaintext)
        self.n += 1
        return ct

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.k is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise DecryptError("nonce space exhausted")
        pt = aead_decrypt(self.k, self.n, ad, ciphertext)
        self.n += 1  # only after a successful decrypt (§5.1)
        return pt

    def encrypt_at(self, n: int, ad: bytes, plaintext: bytes) -> bytes:
        """Explicit-nonce encryption (transports that carry the nonce, as BitChat does)."""
        if self.k is None or not 0 <= n < MAX_NONCE:
            raise NonceExhausted(f"cannot encrypt with nonce {n}")
        return aead_encrypt(self.k, n, ad, plaintext)

    def decrypt_at(self, n: int, ad: bytes, ciphertext: bytes) -> bytes:
        if self.k is None or not 0 <= n < MAX_NONCE:
            raise DecryptError(f"cannot decrypt with nonce {n}")
        return aead_decrypt(self.k, n, ad, ciphertext)

    def rekey(self) -> None:
        """§11.3: k = first 32 bytes of ENCRYPT(k, maxnonce, zerolen, zeros)."""
        if self.k is None:
            raise NonceExhausted("cannot rekey a cipher without a key")
        self.k = aead_encrypt(self.k, MAX_NONCE, b"", ZERO_KEY)[:KEYLEN]


class SymmetricState:
    """§5.2"""

    def __init__(self, protocol_name: bytes) -> None:
        self.h = (
            protocol_name.ljust(HASHLEN, b"\0")
            if len(protocol_name) <= HASHLEN
            else hashlib.sha256(protocol_name).digest()
        )
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            pt = self.cipher.decrypt_with_ad(self.h, ciphertext)
        except DecryptError as exc:
            raise HandshakeError("handshake message failed authentication") from exc
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


@dataclass(frozen=True, slots=True)
class Pattern:
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]  # even index: initiator → responder


def _p(ipre: str, rpre: str, *msgs: str) -> Pattern:
    return Pattern(tuple(ipre.split()), tuple(rpre.split()), tuple(tuple(m.split()) for m in msgs))


# §7.4 one-way and §7.5 interactive fundamental patterns.
PATTERNS: dict[str, Pattern] = {
    "N": _p("", "s", "e es"),
    "K": _p("s", "s", "e es ss"),
    "X": _p("", "s", "e es s ss"),
    "NN": _p("", "", "e", "e ee"),
    "NK": _p("", "s", "e es", "e ee"),
    "NX": _p("", "", "e", "e ee s es"),
    "KN": _p("s", "", "e", "e ee se"),
    "KK": _p("s", "s", "e es ss", "e ee se"),
    "KX": _p("s", "", "e", "e ee se s es"),
    "XN": _p("", "", "e", "e ee", "s se"),
    "XK": _p("", "s", "e es", "e ee", "s se"),
    "XX": _p("", "", "e", "e ee s es", "s se"),
    "IN": _p("", "", "e s", "e ee se"),
    "IK": _p("", "s", "e es s ss", "e ee se"),
    "IX": _p("", "", "e s", "e ee se s es"),
}

SUITE = "25519_ChaChaPoly_SHA256"


def parse_protocol_name(name: str) -> tuple[Pattern, bool]:
    """``Noise_XXpsk3_25519_ChaChaPoly_SHA256`` → (pattern with psk tokens placed, psk mode)."""
    parts = name.split("_", 2)
    if len(parts) != 3 or parts[0] != "Noise" or parts[2] != SUITE:
        raise ValueError(f"unsupported protocol {name!r} (only Noise_*_{SUITE})")
    head = parts[1]
    base = head.split("psk", 1)[0]
    if base not in PATTERNS:
        raise ValueError(f"unsupported handshake pattern {base!r}")
    pattern = PATTERNS[base]
    if base == head:
        return pattern, False
    msgs = [list(m) for m in pattern.messages]
    for mod in head[len(base) :].split("+"):
        if not mod.startswith("psk") or not mod[3:].isdigit():
            raise ValueError(f"unsupported modifier {mod!r}")
        idx = int(mod[3:])
        if idx == 0:
            msgs[0].insert(0, "psk")
        else:
            msgs[idx - 1].append("psk")
    return Pattern(pattern.initiator_pre, pattern.responder_pre, tuple(tuple(m) for m in msgs)), True


class HandshakeState:
    """§5.3. ``write_message``/``read_message`` alternate as the pattern dictates; after the last message
    :meth:`split` returns (send, receive) ciphers oriented for this side."""

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static_private: bytes | None = None,
        remote_static: bytes | None = None,
        ephemeral_private: bytes | None = None,
        psks: tuple[bytes, ...] = (),
    ) -> None:
        self.pattern, self.psk_mode = parse_protocol_name(protocol_name)
        self.initiator = initiator
        self.ss = SymmetricState(protocol_name.encode())
        self.ss.mix_hash(prologue)
        self.s = static_private
        self.s_pub = x25519_public(static_private) if static_private is not None else None
        self.e: bytes | None = None
        self.e_pub: bytes | None = None
        self._fixed_e = ephemeral_private
        self.rs = remote_static
        self.re: bytes | None = None
        self._psks = list(psks)
        self._index = 0
        # Pre-messages (§7.1): the initiator's first, then the responder's.
        for owner_is_initiator, tokens in ((True, self.pattern.initiator_pre), (False, self.pattern.responder_pre)):
            for token in tokens:
                if token != "s":
                    raise ValueError(f"unsupported pre-message token {token!r}")
                mine = owner_is_initiator == initiator
                key = self.s_pub if mine else self.rs
                if key is None:
                    raise ValueError("this pattern needs a " + ("local" if mine else "remote") + " static key")
                self.ss.mix_hash(key)

    @property
    def is_complete(self) -> bool:
        return self._index >= len(self.pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        return self.ss.h

    @property
    def remote_static_public_key(self) -> bytes | None:
        return self.rs

    def _my_turn(self) -> bool:
        return (self._index % 2 == 0) == self.initiator

    def _dh_token(self, token: str) -> None:
        # Which local key meets which remote key; es/se depend on the role (§5.3 WriteMessage).
        if token == "ee":
            local, remote = self.e, self.re
        elif token == "ss":
            local, remote = self.s, self.rs
        elif (token == "es") == self.initiator:
            local, remote = self.e, self.rs
        else:
            local, remote = self.s, self.re
        if local is None or remote is None:
            raise HandshakeError(f"token {token} needs a key that is not available")
        self.ss.mix_key(dh(local, remote))

    def write_message(self, payload: bytes = b"") -> bytes:
        if self.is_complete or not self._my_turn():
            raise HandshakeError("not our turn to write a handshake message")
        out = bytearray()
        for token in self.pattern.messages[self._index]:
            if token == "e":
                self.e = self._fixed_e if self._fixed_e is not None else nacl.bindings.randombytes(32)
                self.e_pub = x25519_public(self.e)
                out += self.e_pub
                self.ss.mix_hash(self.e_pub)
                if self.psk_mode:
                    self.ss.mix_key(self.e_pub)
            elif token == "s":
                if self.s_pub is None:
                    raise HandshakeError("this pattern needs a local static key")
                out += self.ss.encrypt_and_hash(self.s_pub)
            elif token == "psk":
                self.ss.mix_key_and_hash(self._psks.pop(0))
            else:
                self._dh_token(token)
        out += self.ss.encrypt_and_hash(payload)
        self._index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if self.is_complete or self._my_turn():
            raise HandshakeError("handshake message received when none was expected")
        view = memoryview(message)
        for token in self.pattern.messages[self._index]:
            if token == "e":
                if len(view) < DHLEN:
                    raise HandshakeError("handshake message too short for an ephemeral key")
                self.re = bytes(view[:DHLEN])
                view = view[DHLEN:]
                self.ss.mix_hash(self.re)
                if self.psk_mode:
                    self.ss.mix_key(self.re)
            elif token == "s":
                n = DHLEN + (TAGLEN if self.ss.cipher.has_key() else 0)
                if len(view) < n:
                    raise HandshakeError("handshake message too short for a static key")
                self.rs = self.ss.decrypt_and_hash(bytes(view[:n]))
                view = view[n:]
            elif token == "psk":
                self.ss.mix_key_and_hash(self._psks.pop(0))
            else:
                self._dh_token(token)
        if self.ss.cipher.has_key() and len(view) < TAGLEN:
            raise HandshakeError("handshake message too short for its payload tag")
        payload = self.ss.decrypt_and_hash(bytes(view))
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) for this side. The initiator sends with the first key (§5.2 Split)."""
        if not self.is_complete:
            raise HandshakeError("handshake is not complete")
        c1, c2 = self.ss.split()
        return (c1, c2) if self.initiator else (c2, c1)
