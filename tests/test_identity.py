"""Identity: key files 0600, BitChat peer ID rule, refusal of loose permissions and corrupt files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from node.errors import IdentityError, KeyPermissionError
from node.identity import NOISE_KEY_FILE, SIGNING_KEY_FILE, create_identity, identity_dir, load_identity


def test_create_writes_0600_keys_in_a_0700_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ident = create_identity(data)
    d = identity_dir(data)
    for name in (SIGNING_KEY_FILE, NOISE_KEY_FILE):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
        assert len((d / name).read_bytes()) == 32
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    loaded = load_identity(data)
    assert loaded.peer_id == ident.peer_id and loaded.signing_public == ident.signing_public


def test_keys_are_real_and_peer_id_follows_bitchat(tmp_path: Path) -> None:
    ident = create_identity(tmp_path)
    noise_pub = bytes(nacl.public.PrivateKey(ident.noise_private).public_key)
    assert ident.noise_public == noise_pub
    assert ident.fingerprint == hashlib.sha256(noise_pub).hexdigest()
    assert ident.peer_id == hashlib.sha256(noise_pub).digest()[:8]
    sig = ident.signing_key.sign(b"hello").signature
    nacl.signing.VerifyKey(ident.signing_public).verify(b"hello", sig)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    create_identity(tmp_path)
    with pytest.raises(IdentityError, match="already exists"):
        create_identity(tmp_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_loose_permissions_refused_with_fix(tmp_path: Path, mode: int) -> None:
    create_identity(tmp_path)
    key = identity_dir(tmp_path) / NOISE_KEY_FILE
    key.chmod(mode)
    with pytest.raises(KeyPermissionError, match=rf"chmod 600 {key}"):
        load_identity(tmp_path)


def test_missing_and_corrupt_keys(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="village init"):
        load_identity(tmp_path)
    create_identity(tmp_path)
    (identity_dir(tmp_path) / SIGNING_KEY_FILE).write_bytes(b"short")
    with pytest.raises(IdentityError, match="corrupt: expected 32 bytes, found 5"):
        load_identity(tmp_path)


def test_key_file_swapped_for_a_symlink_or_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Someone who can write the identity directory cannot point the node at another key: a symlink is never
    followed, and a FIFO in the key's place is refused at once instead of hanging the start."""
    create_identity(tmp_path)
    key = identity_dir(tmp_path) / NOISE_KEY_FILE
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_bytes(key.read_bytes())
    elsewhere.chmod(0o600)
    key.unlink()
    key.symlink_to(elsewhere)
    with pytest.raises(IdentityError, match="symbolic link"):
        load_identity(tmp_path)
    key.unlink()
    os.mkfifo(key, 0o600)
    with pytest.raises(IdentityError, match="not a regular file"):
        load_identity(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's needs root")
def test_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    create_identity(tmp_path)
    key = identity_dir(tmp_path) / SIGNING_KEY_FILE
    os.chown(key, 65534, 65534)
    with pytest.raises(IdentityError, match=r"belongs to another user \(uid 65534\)"):
        load_identity(tmp_path)
