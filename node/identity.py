"""The node's long-term identity: an Ed25519 signing key and an X25519 Noise static key.

Both live in ``<data dir>/identity/`` as raw 32-byte secrets (``signing.key``: the Ed25519 seed;
``noise.key``: the X25519 private scalar), mode 0600, in a 0700 directory. The daemon refuses key files that
group or others can read.

Peer ID and fingerprint follow BitChat (BF/PeerID.swift ``init(publicKey:)``, BITCHAT.md §3): the fingerprint
is the hex SHA-256 of the Noise static public key and the peer ID is its first 8 bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.public
import nacl.signing

from node.errors import IdentityError, KeyPermissionError
from node.privatefile import LOOSE_MODE, PrivateFileRefused, read_private_file

KEY_BYTES = 32  # Ed25519 seed and X25519 scalar are both 32 bytes
PEER_ID_BYTES = 8  # BitChat peer IDs are the first 8 bytes of the fingerprint
SIGNING_KEY_FILE = "signing.key"
NOISE_KEY_FILE = "noise.key"


def peer_id_from_noise_key(noise_public: bytes) -> bytes:
    return hashlib.sha256(noise_public).digest()[:PEER_ID_BYTES]


def fingerprint_from_noise_key(noise_public: bytes) -> str:
    return hashlib.sha256(noise_public).hexdigest()


@dataclass(frozen=True)
class Identity:
    signing_key: nacl.signing.SigningKey
    noise_private: bytes

    @property
    def signing_public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @functools.cached_property
    def noise_public(self) -> bytes:
        return bytes(nacl.public.PrivateKey(self.noise_private).public_key)

    @property
    def peer_id(self) -> bytes:
        return peer_id_from_noise_key(self.noise_public)

    @property
    def peer_id_hex(self) -> str:
        return self.peer_id.hex()

    @property
    def fingerprint(self) -> str:
        return fingerprint_from_noise_key(self.noise_public)

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate(), bytes(nacl.public.PrivateKey.generate()))


def identity_dir(data_dir: Path) -> Path:
    return data_dir / "identity"


def identity_exists(data_dir: Path) -> bool:
    d = identity_dir(data_dir)
    return (d / SIGNING_KEY_FILE).exists() or (d / NOISE_KEY_FILE).exists()


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 if missing; tighten it if we own it and it is looser."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        path.chmod(0o700)


def _write_secret(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask cannot loosen it, an old tmp file cannot either
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def create_identity(data_dir: Path) -> Identity:
    """Generate and store a new identity. Refuses to overwrite an existing one."""
    if identity_exists(data_dir):
        raise IdentityError(
            f"an identity already exists in {identity_dir(data_dir)}; refusing to replace it "
            "(move it away first if you really want a new one)"
        )
    d = identity_dir(data_dir)
    ensure_private_dir(data_dir)
    ensure_private_dir(d)
    ident = Identity.generate()
    _write_secret(d / SIGNING_KEY_FILE, bytes(ident.signing_key))
    _write_secret(d / NOISE_KEY_FILE, ident.noise_private)
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return ident


def _read_secret(path: Path) -> bytes:
    try:
        data = read_private_file(path, KEY_BYTES + 1)
    except PrivateFileRefused as exc:
        if exc.reason == LOOSE_MODE:
            raise KeyPermissionError(f"key {exc}; fix it with: chmod 600 {path}") from None
        raise IdentityError(f"key {exc}") from None
    except OSError as exc:
        raise IdentityError(f"key file {path} cannot be read: {exc.strerror}") from None
    if data is None:
        raise IdentityError(f"key file {path} is missing; run `village init` to create an identity")
    if len(data) != KEY_BYTES:
        found = len(data) if len(data) < KEY_BYTES else "more"
        raise IdentityError(f"key file {path} is corrupt: expected {KEY_BYTES} bytes, found {found}")
    return data


def load_identity(data_dir: Path) -> Identity:
    d = identity_dir(data_dir)
    seed = _read_secret(d / SIGNING_KEY_FILE)
    noise = _read_secret(d / NOISE_KEY_FILE)
    return Identity(nacl.signing.SigningKey(seed), noise)
