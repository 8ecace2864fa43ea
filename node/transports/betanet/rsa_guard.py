"""RSA keys too costly to verify, refused where py-libp2p reads any RSA public key.

py-libp2p 0.8 caps an RSA key's modulus at 4096 bits (``libp2p.crypto.rsa.validate_rsa_key_size``) and never its
public exponent. A signature check costs in proportion to the exponent's bits: with a 4095-bit exponent one check is
~25-50 ms of the event loop, against ~0.1 ms with 65537. Every signed thing a peer sends reaches such a check before
anything ties the key to the sender: identify and identify push (``update_peerstore_from_identify`` consumes the
signedPeerRecord before comparing peer IDs), DHT messages and their named peers' records, DHT record authors and the
IPNS/public-key validators, pubsub messages and senderRecords, and the Noise handshake's identity key. 40 identify
pushes of 1.6 KB on parallel streams held the event loop ~2.5 s: any connected peer could keep it busy at ~64 KB/s.

:func:`refuse_costly_rsa_keys` makes py-libp2p's own key check also refuse a public exponent above
:data:`MAX_RSA_EXPONENT` (:class:`CostlyRsaKey`), so each of those paths drops the key when it is parsed, before any
signature check, and handles it as it handles any malformed key (identify, identify push, the DHT's record checks
and Noise catch it: the record or message is dropped, the handshake fails; no task ends). Every key generator uses
65537; go-libp2p refuses exponents of 2^31 and more. :mod:`.dht` still drops costly records in DHT messages before
py-libp2p parses them, and counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import libp2p.crypto.rsa as libp2p_rsa
from libp2p.crypto.exceptions import CryptographyError

# The largest RSA public exponent verified: what every key generator uses (F4). A bigger one makes each signature
# check slower in proportion to its bits (4095 bits: ~25-50 ms a check, against ~0.1 ms).
MAX_RSA_EXPONENT = 65537
_GUARD_MARK = "_village_refuses_costly_rsa"  # set on our wrapper: installing it again is a no-op


class CostlyRsaKey(CryptographyError, ValueError):
    """An RSA key whose public exponent exceeds :data:`MAX_RSA_EXPONENT`. Both a ``CryptographyError`` (what
    py-libp2p raises for a modulus too big) and a ``ValueError`` (what its key parsers document), so every handler
    of a bad key catches it."""


def refuse_costly_rsa_keys() -> None:
    """Make ``libp2p.crypto.rsa.validate_rsa_key_size`` (which ``RSAPublicKey.from_bytes`` and the key classes'
    constructors call through the module, at each call) also raise :class:`CostlyRsaKey` for a public exponent
    above :data:`MAX_RSA_EXPONENT`. Process-wide: it changes py-libp2p's module, so every host in this process
    gets it (the BetaNet transport installs it when it starts; the refusal is right for any host, and our own keys
    are Ed25519). Idempotent: a second call finds the wrapper and does nothing. Pinned to libp2p below 0.9."""
    plain: Callable[[Any], None] = libp2p_rsa.validate_rsa_key_size
    if getattr(plain, _GUARD_MARK, False):
        return

    def validate_rsa_key_size(key: Any) -> None:
        plain(key)  # the modulus cap (4096 bits) first
        exponent = int(key.e)
        if exponent > MAX_RSA_EXPONENT:
            raise CostlyRsaKey(
                f"RSA public exponent of {exponent.bit_length()} bits refused (at most {MAX_RSA_EXPONENT}): "
                "too costly to verify"
            )

    setattr(validate_rsa_key_size, _GUARD_MARK, True)
    libp2p_rsa.validate_rsa_key_size = validate_rsa_key_size
