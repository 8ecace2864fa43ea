"""The Redis readiness probe of tools/services.py against local fake servers (no real Redis needed): it is bounded
in time and bytes whatever the process on the port does, and `status` calls a Redis that is still loading down."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from anchor.services_settings import ServicesError
from tools import redis_probe
from tools import services as services_module
from tools.redis_probe import redis_pongs as _redis_pongs
from tools.services import Services

Serve = Callable[[socket.socket], None]


class FakeServer:
    """A loopback TCP server answering each connection with ``serve`` in a thread; ``done`` is set when it returns."""

    def __init__(self, serve: Serve) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._serve = serve
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            try:
                self._serve(conn)
            finally:
                self.done.set()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=30)


@pytest.fixture
def fake() -> Iterator[Callable[[Serve], FakeServer]]:
    made: list[FakeServer] = []

    def start(serve: Serve) -> FakeServer:
        made.append(FakeServer(serve))
        return made[-1]

    yield start
    for server in made:
        server.close()


@pytest.fixture
def redis_stand_in(tmp_path: Path) -> Iterator[int]:
    """A live process of ours in ``tmp_path/redis`` (a Redis runs in its ``dir``: that is how a pid file's process is
    known to be our server), named by its pid file; its pid."""
    root = tmp_path / "redis"
    root.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=root, stdin=subprocess.PIPE)
    (root / "redis.pid").write_text(f"{proc.pid}\n")
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _answer(reply: bytes) -> Serve:
    def serve(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(reply)

    return serve


def test_a_trickling_server_costs_the_probe_its_deadline_only(
    fake: Callable[[Serve], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that sends one byte every 50 ms and never a line end: the probe gives up at its overall deadline
    (each byte used to restart a 1 s timeout, so it read for as long as the process kept trickling)."""
    monkeypatch.setattr(redis_probe, "PROBE_DEADLINE_S", 0.3)
    sent = [0]
    hung_up = threading.Event()

    def trickle(conn: socket.socket) -> None:
        conn.recv(4096)
        for _ in range(400):  # 20 s of trickling, unless the probe hangs up first
            try:
                conn.sendall(b"x")
            except OSError:
                hung_up.set()
                return
            sent[0] += 1
            if hung_up.wait(0.05):
                return

    server = fake(trickle)
    assert _redis_pongs(server.port, "pw") is False
    assert server.done.wait(30)
    assert hung_up.is_set() and sent[0] < 400, sent


def test_a_flooding_server_costs_the_probe_its_byte_cap_only(fake: Callable[[Serve], FakeServer]) -> None:
    """A process that sends 64 MiB without a line end: the probe reads at most PROBE_MAX_BYTES and hangs up, so the
    sender cannot get the rest out (the kernel's socket buffers hold a few MiB at most)."""
    total = 64 * 1024 * 1024
    sent = [0]

    def flood(conn: socket.socket) -> None:
        conn.recv(4096)
        block = b"y" * 65536
        try:
            while sent[0] < total:
                sent[0] += conn.send(block)
        except OSError:
            return

    server = fake(flood)
    assert _redis_pongs(server.port, "pw") is False
    assert server.done.wait(30)
    assert sent[0] < total // 4, sent


@pytest.mark.parametrize(
    ("reply", "up"),
    [
        (b"+OK\r\n+PONG\r\n", True),
        (b"+OK\r\n-LOADING Redis is loading the dataset in memory\r\n", False),
        (b"-WRONGPASS invalid username-password pair\r\n-NOAUTH Authentication required.\r\n", False),
    ],
    ids=["pong", "loading", "wrong-password"],
)
def test_status_calls_a_redis_up_only_when_it_answers_ping(
    tmp_path: Path, fake: Callable[[Serve], FakeServer], redis_stand_in: int, reply: bytes, up: bool
) -> None:
    """`scripts/services status` (and `up`, before it reuses a server): a Redis whose process runs and whose port
    accepts is up only when it answers PING after AUTH; one still loading its append-only file is not."""
    server = fake(_answer(reply))
    entry = {"host": "127.0.0.1", "port": server.port, "password": "pw", "unix_socket": ""}
    (tmp_path / "settings.json").write_text(json.dumps({"redis": entry}))
    svc = Services(tmp_path)
    assert svc.status()["redis"] is up


def test_up_refuses_to_start_a_second_redis_beside_one_that_never_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_stand_in: int
) -> None:
    """`up` facing a Redis whose process runs and whose port accepts but which never answers PING (still loading a
    large append-only file, hung, a password that no longer matches) waits for it, then fails naming the process and
    the port: it never starts a second server on the same data dir (two writers of one append-only file, and `down`
    would stop only the new one). Starting one is refused too while the pid file's process runs."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    probes = threading.Event()

    def loading() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"+OK\r\n-LOADING Redis is loading the dataset in memory\r\n")
                    probes.set()
                except OSError:
                    pass

    threading.Thread(target=loading, daemon=True).start()
    try:
        entry = {"host": "127.0.0.1", "port": port, "password": "pw", "unix_socket": ""}
        (tmp_path / "settings.json").write_text(json.dumps({"redis": entry}))
        monkeypatch.setattr(services_module, "START_TIMEOUT_S", 0.5)
        started: list[object] = []
        svc = Services(tmp_path)
        monkeypatch.setattr(svc, "_prepare_dir", lambda: None)

        def start(prev: dict[str, object]) -> dict[str, object]:
            started.append(prev)
            return prev

        monkeypatch.setattr(svc, "_start_redis", start)
        with pytest.raises(ServicesError, match=rf"process {redis_stand_in} runs and port {port}"):
            svc.up(("redis",))
        assert probes.is_set() and started == []
        assert svc.status()["redis"] is False  # `status` does not wait, nor fail
        # A process of ours (its command line names this dir's redis.conf) keeps its pid file: no second server.
        conf = tmp_path / "redis" / "redis.conf"
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(conf)])
        try:
            (tmp_path / "redis" / "redis.pid").write_text(f"{holder.pid}\n")
            with pytest.raises(ServicesError, match=f"process {holder.pid}"):
                svc._start_redis_like("redis-server", tmp_path / "redis", port, "pw", [], "Redis")
            assert (tmp_path / "redis" / "redis.pid").exists()
        finally:
            holder.kill()
            holder.wait()
    finally:
        listener.close()


def test_a_stale_pid_file_neither_blocks_up_nor_gets_another_process_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of fixfix: after a crash or a reboot the pid file may name a process that reused the number. `up`
    starts the server anyway (the file is stale) and `down` never signals that process."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        root = tmp_path / "redis"
        root.mkdir()
        (root / "redis.pid").write_text(f"{other.pid}\n")
        ran: list[list[str]] = []
        monkeypatch.setattr(services_module, "_run", lambda cmd, **kw: ran.append(list(cmd)))
        monkeypatch.setattr(services_module, "_wait", lambda *a, **kw: None)
        svc = Services(tmp_path)
        svc._start_redis_like("redis-server", root, 6390, "pw", [], "Redis")
        assert ran and ran[0][0] == "redis-server"  # started: the stale file did not block it
        (root / "redis.pid").write_text(f"{other.pid}\n")
        (tmp_path / "settings.json").write_text(json.dumps({"redis": {"host": "127.0.0.1", "port": 6390}}))
        svc._stop("redis")
        assert other.poll() is None  # the unrelated process was not signalled
    finally:
        other.kill()
        other.wait()


def _as_user(uid: int, gid: int, work: Callable[[], object]) -> object:
    """``work()``'s JSON-able result, computed in a forked child that runs as ``uid``/``gid`` (no other groups)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, compute, report, and leave without running any cleanup of the parent's
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.write(w, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and out, "the check as another user failed"
    return json.loads(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the check as another user")
def test_another_users_process_named_by_a_pid_file_is_not_our_server() -> None:
    """Review (session 7): a pid file left by a crash or a reboot may name a number another user's process reused.
    Signalling it fails with EPERM, which counted as alive: status called PostgreSQL up (something answered its
    port), pid_of named that process, and `down` ran pg_ctl against it and failed. Now a server is ours only when
    it runs in its data dir (or names its conf), and a process we may not signal is not alive for us."""
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="vsvc-"))
    listener = socket.create_server(("127.0.0.1", 0))  # something answers on the servers' port
    try:
        port = int(listener.getsockname()[1])
        data = base / "postgres" / "data"
        data.mkdir(parents=True)
        root_pid = os.getpid()  # root's process (this test's): the number the stale files name
        (data / "postmaster.pid").write_text(f"{root_pid}\n{data}\n")
        (base / "redis").mkdir()
        (base / "redis" / "redis.pid").write_text(f"{root_pid}\n")
        pg = {"host": "127.0.0.1", "port": port, "user": "aivillage", "password": "pw", "database": "aivillage"}
        redis = {"host": "127.0.0.1", "port": port, "password": "pw", "unix_socket": ""}
        (base / "settings.json").write_text(json.dumps({"postgres": pg, "redis": redis}))
        for path in (base, *base.rglob("*")):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        base.chmod(0o700)

        def check() -> dict[str, object]:
            svc = Services(base)
            out: dict[str, object] = {"pg_pid": svc.pid_of("postgres"), "redis_pid": svc.pid_of("redis")}
            out["root_pid_alive"] = redis_probe.pid_alive(root_pid)  # (EPERM: not a process of ours)
            out["postgres_up"] = svc.status()["postgres"]
            try:
                svc.down(("postgres", "redis"))
                out["down"] = "ok"
            except ServicesError as exc:
                out["down"] = str(exc)
            return out

        got = _as_user(nobody.pw_uid, nobody.pw_gid, check)
    finally:
        listener.close()
        shutil.rmtree(base, ignore_errors=True)
    assert got == {"pg_pid": 0, "redis_pid": 0, "root_pid_alive": False, "postgres_up": False, "down": "ok"}, got


def test_a_postmaster_pid_naming_one_of_our_processes_that_is_not_the_server(tmp_path: Path) -> None:
    """Review of fix8 (LOW 5): the test above passed with either half of its fix removed (the process is another
    user's: its cwd is unreadable and it may not be signalled). Here the pid file names a process of this very user
    (alive, signalable: a number reused after a crash) that is not a postmaster of this data dir: only the ownership
    check tells, and status, pid_of and down leave it alone."""
    data = tmp_path / "postgres" / "data"
    data.mkdir(parents=True)
    other_data = tmp_path / "other"
    other_data.mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    # A process of ours, in another data dir, naming another data dir (and a symlink loop: resolving it raised
    # RuntimeError out of status; it is compared as written now): not this cluster's postmaster.
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "-D", str(tmp_path / "loop"), "-D", str(other_data)],
        cwd=other_data,
        stdin=subprocess.PIPE,
    )
    listener = socket.create_server(("127.0.0.1", 0))  # something answers on the cluster's port
    try:
        (data / "postmaster.pid").write_text(f"{other.pid}\n{data}\n")
        port = int(listener.getsockname()[1])
        (tmp_path / "settings.json").write_text(json.dumps({"postgres": {"host": "127.0.0.1", "port": port}}))
        svc = Services(tmp_path)
        assert redis_probe.pid_alive(other.pid)
        assert (svc.pid_of("postgres"), svc.status()["postgres"]) == (0, False)
        svc.down(("postgres",))
        assert other.poll() is None
    finally:
        listener.close()
        other.kill()
        other.wait()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")),
    reason="needs root, setpriv (to drop CAP_SYS_PTRACE) and PostgreSQL's pg_ctl",
)
def test_root_without_ptrace_still_knows_the_postgres_users_postmaster() -> None:
    """Review of fix8 (MEDIUM): root without CAP_SYS_PTRACE (Docker's default, many CI and systemd setups) may not
    read the postgres user's /proc/PID/cwd; the check took that for "not ours", so status called PostgreSQL down,
    pid_of said 0 and `down` left the cluster running. A stand-in postmaster (the postgres user's process, run in
    the data dir as ``postgres -D <data>``) is known by its owner and command line, and `down` stops it."""
    owner = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="vsvc-"))
    listener = socket.create_server(("127.0.0.1", 0))  # the cluster's port answers
    stand_in: subprocess.Popen[bytes] | None = None
    try:
        data = base / "postgres" / "data"
        data.mkdir(parents=True)
        (data / "PG_VERSION").write_text("15\n")  # (pg_ctl stop wants a cluster directory)
        base.chmod(0o711)
        for path in (base / "postgres", data, data / "PG_VERSION"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
            path.chmod(0o700)
        # Like a postmaster, it leaves on SIGINT (pg_ctl stop -m fast) removing its pid file. (A shell: root's python
        # may be out of the postgres user's reach.)
        script = "trap 'rm postmaster.pid; exit 0' INT; while :; do sleep 1; done"
        stand_in = subprocess.Popen(
            ["/bin/sh", "-c", script, "postgres", "-D", str(data)],
            cwd=data,
            user=owner.pw_uid,
            group=owner.pw_gid,
            extra_groups=[],
            # (pg_ctl stop -m fast sends SIGINT, which a background test run may have inherited as ignored)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        pid = stand_in.pid
        (data / "postmaster.pid").write_text(f"{pid}\n{data}\n")
        port = int(listener.getsockname()[1])
        pg = {"host": "127.0.0.1", "port": port, "user": "aivillage_app", "password": "pw", "database": "aivillage"}
        (base / "settings.json").write_text(json.dumps({"postgres": pg}))
        check = (
            "import json, sys; from pathlib import Path; from tools.services import Services; "
            "svc = Services(Path(sys.argv[1])); "
            "got = {'pid': svc.pid_of('postgres'), 'up': svc.status()['postgres']}; "
            "svc.down(('postgres',)); print(json.dumps(got))"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(services_module.__file__).resolve().parent.parent))
        no_ptrace = ["setpriv", "--bounding-set=-sys_ptrace", sys.executable]
        # (the premise: without CAP_SYS_PTRACE the stand-in's cwd cannot be read)
        cwd = subprocess.run(
            [*no_ptrace, "-c", f"import os; os.readlink('/proc/{pid}/cwd')"], capture_output=True, env=env, timeout=60
        )
        assert b"PermissionError" in cwd.stderr, cwd.stderr
        got = subprocess.run([*no_ptrace, "-c", check, str(base)], capture_output=True, env=env, timeout=60)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == {"pid": pid, "up": True}
        assert stand_in.wait(timeout=60) == 0  # `down` stopped it (pg_ctl stop -m fast: its SIGINT trap ran)
    finally:
        listener.close()
        if stand_in is not None:
            stand_in.kill()
            stand_in.wait()
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "huge-file", "huge-number", "negative"])
def test_a_hostile_pid_file_costs_the_reader_nothing(tmp_path: Path, kind: str) -> None:
    """Review of fix8 (LOW): the postgres user writes postmaster.pid, which root's tool reads. A FIFO there hung it
    forever, a symlink to /dev/zero read without end, and a number past a C long raised OverflowError from os.kill
    (a traceback instead of "down"). Each now reads as no process: pid_of says 0, status says down, down does
    nothing."""
    data = tmp_path / "postgres" / "data"
    data.mkdir(parents=True)
    pidfile = data / "postmaster.pid"
    if kind == "fifo":
        os.mkfifo(pidfile)
    elif kind == "symlink-to-dev-zero":
        pidfile.symlink_to("/dev/zero")
    elif kind == "huge-file":
        pidfile.write_bytes(b"1" * (8 * 1024 * 1024))  # a number 8 MiB long (int() would take it, slowly)
    elif kind == "huge-number":
        pidfile.write_text(f"{2**64}\n{data}\n")
    else:
        pidfile.write_text(f"-{os.getpid()}\n")
    (tmp_path / "settings.json").write_text(json.dumps({"postgres": {"host": "127.0.0.1", "port": 1}}))
    svc = Services(tmp_path)
    got: list[object] = []
    done = threading.Event()

    def check() -> None:
        try:
            got.append((svc.pid_of("postgres"), svc.status()["postgres"]))
            svc.down(("postgres",))
            got.append("down")
        except (OSError, ValueError, OverflowError, ServicesError) as exc:  # (reported to the test's thread)
            got.append(exc)
        finally:
            done.set()

    reader = threading.Thread(target=check, daemon=True)
    reader.start()
    try:
        assert done.wait(30), f"reading a {kind} postmaster.pid did not return"
    finally:
        if kind == "fifo" and not done.is_set():  # (unblock the reader stuck in open())
            with open(pidfile, "w"):
                pass
        reader.join(timeout=30)
    assert got == [(0, False), "down"], got
    assert redis_probe.read_pid(pidfile) == 0
    assert redis_probe.pid_alive(2**64) is False


def test_down_never_signals_another_directorys_bolt_relay(tmp_path: Path) -> None:
    """Review of fix8 (LOW): `down graph` signalled any process whose command line named anchor.netns_forward, so a
    stale forward.pid whose number another services directory's relay reused got that relay SIGTERMed. A relay is
    ours only when its command line names our pid file; ours is still stopped."""
    script = "import sys; sys.stdin.read()"
    relay = [sys.executable, "-c", script, "-m", "anchor.netns_forward", "--daemon", "--pidfile"]
    root = tmp_path / "graph"
    root.mkdir()
    others = subprocess.Popen([*relay, str(tmp_path / "other" / "graph" / "forward.pid")], stdin=subprocess.PIPE)
    ours = subprocess.Popen([*relay, str(root / "forward.pid")], stdin=subprocess.PIPE)
    try:
        (tmp_path / "settings.json").write_text(json.dumps({"graph": {"host": "127.0.0.1", "bolt_port": 1}}))
        svc = Services(tmp_path)
        (root / "forward.pid").write_text(f"{others.pid}\n")
        svc.down(("graph",))
        assert others.poll() is None  # another directory's relay runs on
        (root / "forward.pid").write_text(f"{ours.pid}\n")
        svc.down(("graph",))
        assert ours.wait(timeout=60) == -signal.SIGTERM  # ours was stopped
    finally:
        for proc in (others, ours):
            proc.kill()
            proc.wait()


def test_down_signals_only_the_process_it_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of fix8 (LOW): `down` checked that a pid file's process was ours, then signalled the number, which by
    then may have been freed (and reused). The process is now pinned by a pidfd before the check and signalled
    through it: one that exits (and is reaped) right after the check gets no signal and `down` carries on (os.kill on
    the number raised ProcessLookupError, or signalled whoever took it)."""
    root = tmp_path / "redis"
    root.mkdir()
    server = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=root, stdin=subprocess.PIPE)
    try:
        (root / "redis.pid").write_text(f"{server.pid}\n")
        (tmp_path / "settings.json").write_text(json.dumps({"redis": {"host": "127.0.0.1", "port": 1}}))
        checked: list[int] = []

        def ours_then_gone(pid: int, where: Path) -> bool:
            mine = redis_probe.our_server_runs(pid, where)
            checked.append(pid)
            server.kill()  # it exits and is reaped between the check and the signal: its number is free
            server.wait()
            return mine

        monkeypatch.setattr(services_module, "_ours", ours_then_gone)
        Services(tmp_path).down(("redis",))
        assert checked == [server.pid]
    finally:
        server.kill()
        server.wait()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("redis-server") is None,
    reason="needs root, setpriv (to drop CAP_SYS_PTRACE) and redis-server",
)
def test_a_confined_root_knows_the_redis_a_full_root_started() -> None:
    """Found while checking the fix above: a Redis started by root with every capability (`up` from a root shell, or
    the test suite's fixture) has a cwd that root without CAP_SYS_PTRACE may not read. `up` from the confined root
    called it not ours and started a second Redis on the same data dir, and `down` stopped only that one. The
    fallback reads what anyone may: the owner and the title Redis gives itself (redis-server 127.0.0.1:PORT)."""
    base = Path(tempfile.mkdtemp(prefix="vsvc-"))
    svc = Services(base)
    pid = 0
    try:
        svc.up(("redis",))
        pid = svc.pid_of("redis")
        assert pid > 0
        check = (
            "import json, sys; from pathlib import Path; from tools.services import Services; "
            "svc = Services(Path(sys.argv[1])); "
            "got = {'pid': svc.pid_of('redis'), 'up': svc.status()['redis']}; "
            "svc.up(('redis',)); got['after_up'] = svc.pid_of('redis'); "
            "svc.down(('redis',)); print(json.dumps(got))"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(services_module.__file__).resolve().parent.parent))
        no_ptrace = ["setpriv", "--bounding-set=-sys_ptrace", sys.executable]
        cwd = subprocess.run(
            [*no_ptrace, "-c", f"import os; os.readlink('/proc/{pid}/cwd')"], capture_output=True, env=env, timeout=60
        )
        assert b"PermissionError" in cwd.stderr, cwd.stderr  # (the premise)
        got = subprocess.run([*no_ptrace, "-c", check, str(base)], capture_output=True, env=env, timeout=120)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == {"pid": pid, "up": True, "after_up": pid}  # no second server
        assert not redis_probe.pid_alive(pid)  # and `down` stopped it
    finally:
        svc.down(("redis",))
        if redis_probe.our_server_runs(pid, base / "redis"):  # (a second server took its pid file)
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


def test_a_pid_file_naming_a_thread_pins_nothing() -> None:
    """A stale pid file may name a number now used by some process's *thread* (threads share the pid space):
    pidfd_open refuses it (ENOENT or EINVAL), and `down` must go on to the other services, not stop on a
    traceback. (Only ProcessLookupError/PermissionError suppressed: FileNotFoundError escaped `down`.)"""
    ready, done = threading.Event(), threading.Event()
    tids: list[int] = []

    def worker() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        done.wait(30)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(30)
        (tid,) = tids
        assert tid != os.getpid()
        with redis_probe.pinned(tid) as fd:
            assert fd is None
    finally:
        done.set()
        t.join(30)
