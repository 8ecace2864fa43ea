"""The token core: JWTs signed, checked and expired against an injected clock; roles and scopes."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import jwt
import pytest

from anchor.gateway.auth import (
    ROLE_SCOPES,
    SCOPE_KEYS_ADMIN,
    SCOPE_MESSAGES_SEND,
    SCOPE_NODE_READ,
    VERIFIED_CACHE_MAX,
    TokenIssuer,
    basic_credentials,
    bearer_token,
    check_role_scopes,
    load_or_create_secret,
    narrow_scopes,
)
from anchor.gateway.errors import Forbidden, GatewayError, Unauthenticated
from node.errors import StartupError
from tests.concurrent_starts import start_in_processes

NOW = 1_800_000_000.0
SECRET = b"k" * 32


def issuer(ttl_s: float = 60.0, secret: bytes = SECRET) -> TokenIssuer:
    return TokenIssuer(secret, issuer="anchor-test", ttl_s=ttl_s)


def test_issue_then_verify_gives_the_principal() -> None:
    tok = issuer().issue(key_id="k1", role="user", scopes=ROLE_SCOPES["user"], now_s=NOW)
    assert tok.token_type == "Bearer" and tok.expires_in == 60
    p = issuer().verify(tok.access_token, now_s=NOW + 59)
    assert (p.key_id, p.role, p.scopes, p.expires_at_s) == ("k1", "user", ROLE_SCOPES["user"], NOW + 60)
    p.require(SCOPE_MESSAGES_SEND)
    with pytest.raises(Forbidden, match="keys:admin"):
        p.require(SCOPE_KEYS_ADMIN)


def test_expired_token_is_refused_at_its_exp() -> None:
    tok = issuer().issue(key_id="k1", role="user", scopes=ROLE_SCOPES["user"], now_s=NOW).access_token
    with pytest.raises(Unauthenticated) as e:
        issuer().verify(tok, now_s=NOW + 60)
    assert e.value.code == "token_expired"


def test_a_verified_token_is_remembered_but_still_expires_and_the_memory_is_bounded() -> None:
    iss = issuer()
    tok = iss.issue(key_id="k1", role="user", scopes=ROLE_SCOPES["user"], now_s=NOW).access_token
    first = iss.verify(tok, now_s=NOW + 1)
    assert iss.verify(tok, now_s=NOW + 2) is first  # remembered: not decoded again
    with pytest.raises(Unauthenticated) as e:
        iss.verify(tok, now_s=NOW + 60)  # remembered, and expired all the same
    assert e.value.code == "token_expired"
    body, sig = tok.rsplit(".", 1)
    forged = f"{body}.{sig[:10]}{'B' if sig[10] == 'A' else 'A'}{sig[11:]}"  # one whole signature byte changed
    with pytest.raises(Unauthenticated):  # a forged token is checked (and refused), never remembered
        iss.verify(forged, now_s=NOW + 1)
    assert forged not in iss._verified
    for i in range(VERIFIED_CACHE_MAX + 10):
        other = iss.issue(key_id=f"k{i}", role="user", scopes=ROLE_SCOPES["user"], now_s=NOW).access_token
        iss.verify(other, now_s=NOW + 1)
    assert len(iss._verified) == VERIFIED_CACHE_MAX and tok not in iss._verified
    assert iss.verify(tok, now_s=NOW + 3).key_id == "k1"  # dropped from memory: checked again


def _tamper_claims(token: str, **changes: object) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new_body}.{sig}"


def test_tampered_wrong_key_alg_none_and_foreign_issuer_are_refused() -> None:
    tok = issuer().issue(key_id="k1", role="user", scopes=ROLE_SCOPES["user"], now_s=NOW).access_token
    bad = [
        _tamper_claims(tok, role="admin", scope=" ".join(ROLE_SCOPES["admin"])),  # privilege escalation
        _tamper_claims(tok, exp=int(NOW) + 10_000),  # lifetime extension
        tok[:-2] + ("AA" if not tok.endswith("AA") else "BB"),  # signature bytes
        issuer(secret=b"o" * 32).issue(key_id="k1", role="admin", scopes=ROLE_SCOPES["admin"], now_s=NOW).access_token,
        jwt.encode(
            {
                "iss": "anchor-test",
                "sub": "k1",
                "role": "admin",
                "scope": "keys:admin",
                "iat": int(NOW),
                "exp": int(NOW) + 60,
                "jti": "x",
            },
            key="",
            algorithm="none",
        ),
        TokenIssuer(SECRET, issuer="another-anchor", ttl_s=60)
        .issue(key_id="k1", role="user", scopes=ROLE_SCOPES["user"], now_s=NOW)
        .access_token,
        "not.a.jwt",
        "",
    ]
    for token in bad:
        with pytest.raises(Unauthenticated):
            issuer().verify(token, now_s=NOW + 1)


def test_a_token_cannot_hold_scopes_beyond_its_role() -> None:
    forged = jwt.encode(
        {
            "iss": "anchor-test",
            "sub": "k",
            "role": "user",
            "scope": "keys:admin node:read",
            "iat": int(NOW),
            "exp": int(NOW) + 60,
            "jti": "x",
        },
        SECRET,
        algorithm="HS256",
    )
    assert issuer().verify(forged, now_s=NOW).scopes == {SCOPE_NODE_READ}


def test_role_and_scope_rules() -> None:
    assert check_role_scopes("node", None) == ROLE_SCOPES["node"]
    assert check_role_scopes("admin", [SCOPE_NODE_READ]) == {SCOPE_NODE_READ}
    for role, scopes in [("root", None), ("user", [SCOPE_KEYS_ADMIN]), ("user", ["everything"])]:
        with pytest.raises(GatewayError):
            check_role_scopes(role, scopes)
    assert narrow_scopes(ROLE_SCOPES["user"], None) == ROLE_SCOPES["user"]
    assert narrow_scopes(ROLE_SCOPES["user"], "node:read") == {SCOPE_NODE_READ}
    with pytest.raises(Forbidden):
        narrow_scopes(ROLE_SCOPES["user"], "keys:admin")


def test_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for header in [None, "", "Basic abc", "Bearer", "Bearer   "]:
        with pytest.raises(Unauthenticated):
            bearer_token(header)
    assert basic_credentials("Basic " + base64.b64encode(b"id:se:cret").decode()) == ("id", "se:cret")
    assert basic_credentials("Bearer x") is None
    for header in ["Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()]:
        with pytest.raises(Unauthenticated):
            basic_credentials(header)


def test_secret_file_is_created_0600_reused_and_refused_when_loose(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path)
    path = tmp_path / "anchor" / "jwt.secret"
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "anchor").stat().st_mode) == 0o700
    assert load_or_create_secret(tmp_path) == first
    os.chmod(path, 0o644)
    with pytest.raises(StartupError, match="chmod 600"):
        load_or_create_secret(tmp_path)


def test_the_secret_is_not_read_through_a_symlink_a_fifo_or_a_loose_directory(tmp_path: Path) -> None:
    anchor_dir = tmp_path / "anchor"
    anchor_dir.mkdir(mode=0o700)
    path = anchor_dir / "jwt.secret"
    elsewhere = tmp_path / "other-secret"
    elsewhere.write_bytes(b"k" * 32)
    elsewhere.chmod(0o600)
    path.symlink_to(elsewhere)  # e.g. planted to make the anchor sign with a key someone else knows
    with pytest.raises(StartupError, match="symbolic link"):
        load_or_create_secret(tmp_path)
    path.unlink()
    os.mkfifo(path, 0o600)  # would block a plain open() forever
    with pytest.raises(StartupError, match="not a regular file"):
        load_or_create_secret(tmp_path)
    path.unlink()
    secret = load_or_create_secret(tmp_path)
    assert load_or_create_secret(tmp_path) == secret
    if os.geteuid() == 0:  # files of another user: only root can make them here
        os.chown(path, 65534, -1)
        with pytest.raises(StartupError, match="belongs to another user"):
            load_or_create_secret(tmp_path)
        os.chown(path, 0, -1)
        os.chown(anchor_dir, 65534, -1)
        with pytest.raises(StartupError, match="belongs to another user"):
            load_or_create_secret(tmp_path)


def test_an_interrupted_secret_creation_leaves_no_file_and_an_empty_one_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start killed while writing jwt.secret must not block the next start (it used to leave an empty file that
    every later start refused)."""
    path = tmp_path / "anchor" / "jwt.secret"
    real_write = os.write

    def crash(fd: int, data: bytes) -> int:  # the process dies before the secret's bytes reach the file
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        load_or_create_secret(tmp_path)
    monkeypatch.setattr(os, "write", real_write)
    assert not path.exists()  # either no secret or a whole one
    assert [p.name for p in (tmp_path / "anchor").iterdir()] == [".jwt.secret.lock"]  # no temporary file left
    # What an interrupted start of the old code left: an empty jwt.secret. It signed nothing: replaced.
    path.touch(mode=0o600)
    secret = load_or_create_secret(tmp_path)
    assert len(secret) == 32 and path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path) == secret
    # A short, non-empty file may be a damaged secret or the wrong file: refused, saying what to do, left alone.
    path.write_bytes(b"short")
    with pytest.raises(StartupError, match="move it away"):
        load_or_create_secret(tmp_path)
    assert path.read_bytes() == b"short"
    # A temporary file of a start that died after writing it is cleared at the next start.
    path.unlink()
    (tmp_path / "anchor" / ".jwt.secret.0123456789abcdef.tmp").write_bytes(b"x" * 32)
    fresh = load_or_create_secret(tmp_path)
    assert sorted(p.name for p in (tmp_path / "anchor").iterdir()) == [".jwt.secret.lock", "jwt.secret"]
    assert path.read_bytes() == fresh


def test_a_second_start_during_the_first_ones_creation_waits_and_uses_its_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review: a second start's stale-temp cleanup deleted the first one's temporary file mid-creation
    (the first then died in os.link, which Android's SELinux denies anyway). Now the second start, begun while the
    first is writing, waits on the lock and reads the same secret."""
    real_fsync = os.fsync
    second: list[bytes | BaseException] = []
    threads: list[threading.Thread] = []

    def second_start() -> None:
        try:
            second.append(load_or_create_secret(tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            second.append(exc)

    def fsync_then_start_another(fd: int) -> None:
        real_fsync(fd)
        if not threads:
            threads.append(threading.Thread(target=second_start))
            threads[0].start()

    monkeypatch.setattr(os, "fsync", fsync_then_start_another)
    first = load_or_create_secret(tmp_path)
    threads[0].join(timeout=30)
    assert second == [first]
    monkeypatch.setattr(os, "link", None)  # a build without os.link (and SELinux denying it) still works
    (tmp_path / "anchor" / "jwt.secret").unlink()
    assert len(load_or_create_secret(tmp_path)) == 32


def _start(data_dir: str) -> bytes:
    return load_or_create_secret(Path(data_dir))


def test_concurrent_starts_in_separate_processes_agree_on_one_secret(tmp_path: Path) -> None:
    got = start_in_processes(_start, str(tmp_path))
    assert all(isinstance(g, bytes) for g in got), got
    assert len(set(got)) == 1 and (tmp_path / "anchor" / "jwt.secret").read_bytes() == got[0]
