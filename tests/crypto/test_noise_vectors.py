"""Our Noise implementation against the published cacophony vectors (25519/ChaChaPoly/SHA256 suite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.crypto.noise import HandshakeState

VECTORS = Path(__file__).resolve().parents[1] / "data" / "noise" / "noise_25519_chachapoly_sha256.json"


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


def _b(v: dict[str, Any], key: str) -> bytes | None:
    return bytes.fromhex(v[key]) if key in v else None


def test_the_vector_file_covers_xx() -> None:
    names = {v["protocol_name"] for v in load_vectors()}
    assert "Noise_XX_25519_ChaChaPoly_SHA256" in names
    assert len(names) == 36


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["protocol_name"])
def test_vector(vector: dict[str, Any]) -> None:
    name = vector["protocol_name"]
    init = HandshakeState(
        name,
        initiator=True,
        prologue=bytes.fromhex(vector["init_prologue"]),
        static_private=_b(vector, "init_static"),
        remote_static=_b(vector, "init_remote_static"),
        ephemeral_private=_b(vector, "init_ephemeral"),
        psks=tuple(bytes.fromhex(p) for p in vector.get("init_psks", [])),
    )
    resp = HandshakeState(
        name,
        initiator=False,
        prologue=bytes.fromhex(vector["resp_prologue"]),
        static_private=_b(vector, "resp_static"),
        remote_static=_b(vector, "resp_remote_static"),
        ephemeral_private=_b(vector, "resp_ephemeral"),
        psks=tuple(bytes.fromhex(p) for p in vector.get("resp_psks", [])),
    )
    one_way = len(init.pattern.messages) == 1
    messages = vector["messages"]
    i = 0
    # Handshake phase: alternate writers as the pattern says.
    while not init.is_complete:
        writer, reader = (init, resp) if i % 2 == 0 else (resp, init)
        payload, expected = bytes.fromhex(messages[i]["payload"]), bytes.fromhex(messages[i]["ciphertext"])
        ct = writer.write_message(payload)
        assert ct == expected, f"{name}: handshake message {i}"
        assert reader.read_message(ct) == payload
        i += 1
    assert resp.is_complete
    assert init.handshake_hash == resp.handshake_hash == bytes.fromhex(vector["handshake_hash"])
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    # Transport phase: one-way patterns send initiator → responder only; others alternate.
    for j, msg in enumerate(messages[i:], start=i):
        payload, expected = bytes.fromhex(msg["payload"]), bytes.fromhex(msg["ciphertext"])
        if one_way or j % 2 == 0:
            ct = i_send.encrypt_with_ad(b"", payload)
            assert r_recv.decrypt_with_ad(b"", ct) == payload
        else:
            ct = r_send.encrypt_with_ad(b"", payload)
            assert i_recv.decrypt_with_ad(b"", ct) == payload
        assert ct == expected, f"{name}: transport message {j}"
