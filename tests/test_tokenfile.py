"""node/tokenfile.py: the loopback listeners' bearer tokens, created once even when two processes start together."""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
import threading
from pathlib import Path

import pytest

from node.tokenfile import ensure_token, metrics_token_path, token_path
from tests.concurrent_starts import start_in_processes


def test_a_second_start_during_the_first_ones_creation_waits_and_uses_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: the first start created the file empty (O_EXCL) and then wrote it; a second start in that
    window read the empty file, wrote its own token and returned it, and the first then wrote another — two
    different tokens (the daemon's and `village metrics token`'s). Now the second waits on the lock."""
    path = metrics_token_path(tmp_path)
    real_token = secrets.token_urlsafe
    real_flock = fcntl.flock
    second: list[str | BaseException] = []
    threads: list[threading.Thread] = []
    second_waiting_or_done = threading.Event()

    def second_start() -> None:
        try:
            second.append(ensure_token(path, "metrics token"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            second.append(exc)
        second_waiting_or_done.set()

    def flock(fd: int, op: int) -> None:
        if threads and threading.current_thread() is threads[0]:
            second_waiting_or_done.set()  # it is about to block on the first start's lock
        real_flock(fd, op)

    def token_then_start_another(nbytes: int | None = None) -> str:
        if not threads:  # the first start is creating the file: a second start begins now
            threads.append(threading.Thread(target=second_start))
            threads[0].start()
            assert second_waiting_or_done.wait(timeout=30)
        return real_token(nbytes)

    monkeypatch.setattr(secrets, "token_urlsafe", token_then_start_another)
    monkeypatch.setattr(fcntl, "flock", flock)
    first = ensure_token(path, "metrics token")
    threads[0].join(timeout=30)
    assert second == [first]
    assert path.read_text() == first + "\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def _ensure(path: str) -> str:
    return ensure_token(Path(path))


def test_concurrent_starts_in_separate_processes_agree_on_one_token(tmp_path: Path) -> None:
    path = token_path(tmp_path)
    got = start_in_processes(_ensure, str(path))
    assert len(set(got)) == 1 and path.read_text() == got[0] + "\n", got


def test_an_interrupted_creation_leaves_no_partial_file_and_an_empty_one_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = token_path(tmp_path)
    real_write = os.write

    def crash(fd: int, data: bytes) -> int:  # the process dies before the token's bytes reach the file
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_token(path)
    monkeypatch.setattr(os, "write", real_write)
    assert not path.exists()  # no token file rather than an empty one
    assert [p.name for p in path.parent.iterdir()] == [".http.token.lock"]  # and no temporary file
    path.touch(mode=0o600)  # what an interrupted start of the old code left: replaced
    token = ensure_token(path)
    assert len(token) >= 40 and path.read_text() == token + "\n" and ensure_token(path) == token
    path.unlink()
    (path.parent / ".http.token.0123456789abcdef.tmp").write_text("x")  # a start that died after writing it
    fresh = ensure_token(path)
    assert sorted(p.name for p in path.parent.iterdir()) == [".http.token.lock", "http.token"]
    assert path.read_text() == fresh + "\n"
