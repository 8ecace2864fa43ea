"""Cryptographic errors, remote separated from local::

CryptoError (node.errors)
├── HandshakeError      remote: a handshake message is malformed, unexpected now, or fails to verify
│   └── LowOrderKey     remote: a DH result was all zeros (a low-order or all-zero public key)
├── DecryptError        remote: a transport frame failed authentication or is malformed
├── ReplayError         remote: a transport frame's nonce was already seen or is older than the window
├── NonceExhausted      local: this cipher may not encrypt again (rekey or a new handshake is needed)
└── MailboxError        (node.mailbox.protocol) the anchor refused a mailbox request, or its answer made no sense
"""

from __future__ import annotations

from node.errors import CryptoError


class HandshakeError(CryptoError):
    """A handshake message from the peer is invalid, or arrived in the wrong state."""


class LowOrderKey(HandshakeError):
    """A Diffie-Hellman result was all zeros: the peer sent a low-order or all-zero public key."""


class DecryptError(CryptoError):
    """A ciphertext failed authentication (tampered, wrong key, or truncated)."""


class ReplayError(CryptoError):
    """A transport nonce was already accepted, or is too old for the replay window."""


class NonceExhausted(CryptoError):
    """Local: the sending nonce space is used up; rekey or run a new handshake."""
