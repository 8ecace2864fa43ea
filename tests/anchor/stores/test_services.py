"""scripts/services: the real script, on a private directory (the shared servers are never stopped here)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anchor.services_settings import ServicesError, ServiceSettings
from tools import services as services_module
from tools.services import PG_APP_USER, PORT_HIGH, Services, _check_private_dir, _write_private

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "services"
Start = Callable[..., Services]


def _script(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--dir", str(base), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting for init to reap it counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_is_idempotent_status_and_down(private_services: Start) -> None:
    svc = private_services("redis")
    base = svc.base
    pid = svc.pid_of("redis")
    settings = json.loads(svc.settings_path.read_text())
    # A second `up` reuses the running server: same pid, same port, same password.
    r = _script(base, "up", "redis")
    assert r.returncode == 0, r.stderr
    assert svc.pid_of("redis") == pid
    assert json.loads(svc.settings_path.read_text())["redis"] == settings["redis"]

    r = _script(base, "status", "--json")
    assert json.loads(r.stdout) == {"postgres": False, "redis": True, "graph": False}
    assert r.returncode == 3  # not all up
    assert _script(base, "status", "redis").returncode == 0

    r = _script(base, "down", "redis")
    assert r.returncode == 0, r.stderr
    assert svc.pid_of("redis") == 0
    assert not _running(pid), "down left the server running"  # (Redis rewrites its command line: see redis_probe)
    r = _script(base, "status")
    assert r.returncode == 3 and "redis     down" in r.stdout


def test_settings_files_are_private_and_ports_low(services: ServiceSettings) -> None:
    base = Services().base
    # Ours (root's as root, never the postgres user's): 0711 as root so postgres reaches its subdirectory only.
    assert base.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(base.stat().st_mode) == (0o711 if os.geteuid() == 0 else 0o700)
    for name in ("settings.json", "settings.env"):
        st = (base / name).lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == 0o600
    ports = [services.postgres.port, services.redis.port, services.graph.bolt_port, services.graph.redis_port]
    assert all(0 < p < PORT_HIGH <= 32768 for p in ports)
    assert len(set(ports)) == 4
    raw = json.loads((base / "settings.json").read_text())
    assert (raw["postgres"]["dsn"], raw["redis"]["url"], raw["graph"]["bolt_url"]) == (
        services.postgres.dsn,
        services.redis.url,
        services.graph.bolt_url,
    )
    env = (base / "settings.env").read_text()
    assert f"AIVILLAGE_PG_DSN={services.postgres.dsn}" in env
    assert f"AIVILLAGE_REDIS_URL={services.redis.url}" in env
    assert f"AIVILLAGE_BOLT_URL={services.graph.bolt_url}" in env


def test_servers_require_their_passwords(services: ServiceSettings) -> None:
    import psycopg
    import redis

    bad_pg = services.postgres.dsn.replace(services.postgres.password, "wrong")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(bad_pg, connect_timeout=5).close()
    client = redis.Redis(host=services.redis.host, port=services.redis.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()
    client.close()


def test_unknown_server_name_is_refused(tmp_path: Path) -> None:
    r = _script(tmp_path / "svc", "up", "mysql")
    assert r.returncode == 2 and "unknown server 'mysql'" in r.stderr


def test_compose_settings_from_the_environment(tmp_path: Path) -> None:
    base = tmp_path / "svc"
    env = {"AIVILLAGE_PG_PASSWORD": "pg-pw", "AIVILLAGE_NEO4J_PASSWORD": "neo-pw", "AIVILLAGE_REDIS_PASSWORD": "r-pw"}
    settings = Services(base).write_compose_settings({**env, "AIVILLAGE_BOLT_PORT": "17687"})
    assert settings.postgres.dsn == "postgresql://aivillage:pg-pw@127.0.0.1:25432/aivillage"
    assert settings.redis.url == "redis://:r-pw@127.0.0.1:26379/0"
    assert (settings.graph.kind, settings.graph.bolt_url, settings.graph.user, settings.graph.password) == (
        "neo4j",
        "bolt://127.0.0.1:17687",
        "neo4j",
        "neo-pw",
    )
    assert stat.S_IMODE((base / "settings.json").stat().st_mode) == 0o600
    r = subprocess.run(
        [str(SCRIPT), "--dir", str(tmp_path / "other"), "compose-settings"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2 and "AIVILLAGE_PG_PASSWORD is not set" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_cluster_moves_out_of_a_directory_postgres_cannot_reach() -> None:
    """A clone under a 0700 directory (like /root): the cluster lives under /var/tmp, linked from .services."""
    outer = Path(tempfile.mkdtemp(prefix="aiv-noaccess-"))  # 0700, owned by root
    svc = Services(outer / "svc")
    try:
        svc.up(("postgres",))
        link = svc.base / "postgres"
        assert link.is_symlink() and str(link.resolve()).startswith("/var/tmp/aivillage-pg-")
        assert svc.status()["postgres"]
        import psycopg

        settings = json.loads(svc.settings_path.read_text())["postgres"]
        dsn = "postgresql://{user}:{password}@{host}:{port}/{dbname}".format(**settings)
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        svc.down()
        target = (svc.base / "postgres").resolve()
        shutil.rmtree(outer, ignore_errors=True)
        if str(target).startswith("/var/tmp/aivillage-pg-"):
            shutil.rmtree(target, ignore_errors=True)


def _global_addresses() -> list[str]:
    out = subprocess.run(["ip", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=False)
    return [line.split()[3].split("/")[0] for line in out.stdout.splitlines() if len(line.split()) > 3]


def test_falkordb_is_reachable_on_loopback_only(services: ServiceSettings) -> None:
    """FalkorDB's Bolt listener binds every interface and has no auth: it must not be reachable from outside."""
    import socket

    raw = json.loads(Services().settings_path.read_text())["graph"]
    if not raw.get("isolated"):
        pytest.skip("FalkorDB runs unconfined (not root, or no unshare/ip); `scripts/services up` warned")
    addresses = _global_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback address to probe")
    for address in addresses:
        for port in (services.graph.bolt_port, services.graph.redis_port):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                with pytest.raises(OSError):
                    s.connect((address, port))
    # ... while loopback works (through the relay into the server's namespace).
    with socket.create_connection(("127.0.0.1", services.graph.bolt_port), timeout=2):
        pass


def test_the_anchor_connects_as_a_role_without_superuser_that_owns_its_database(services: ServiceSettings) -> None:
    import psycopg

    assert services.postgres.user == PG_APP_USER
    with psycopg.connect(services.postgres.dsn, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT r.rolsuper, pg_get_userbyid(d.datdba) FROM pg_roles r, pg_database d "
            "WHERE r.rolname = current_user AND d.datname = current_database()"
        ).fetchone()
    assert row == (False, PG_APP_USER)
    raw = json.loads(Services().settings_path.read_text())["postgres"]
    assert raw["admin_password"] not in raw["dsn"]  # the superuser's password is in no connection string
    assert raw["admin_password"] not in (Services().base / "settings.env").read_text()


def test_private_writes_do_not_follow_planted_symlinks(tmp_path: Path) -> None:
    victim, other = tmp_path / "victim", tmp_path / "other"
    victim.write_text("precious")
    other.write_text("precious too")
    target = tmp_path / "settings.json"
    target.symlink_to(victim)  # a link at the file itself, and at the old fixed temporary name
    (tmp_path / "settings.json.tmp").symlink_to(other)
    _write_private(target, "secret")
    assert (victim.read_text(), other.read_text()) == ("precious", "precious too")
    assert not target.is_symlink() and target.read_text() == "secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_prepared_cluster_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    _check_private_dir(real, os.geteuid())
    link = tmp_path / "aivillage-pg-link"
    link.symlink_to(real)
    with pytest.raises(ServicesError, match="symlink"):
        _check_private_dir(link, os.geteuid())
    real.chmod(0o755)
    with pytest.raises(ServicesError, match="mode 755"):
        _check_private_dir(real, os.geteuid())
    real.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(real, 12345, 12345)
        with pytest.raises(ServicesError, match="uid 12345"):
            _check_private_dir(real, os.geteuid() or 1)


def test_fsync_is_off_only_for_the_fast_test_servers(services: ServiceSettings, private_services: Start) -> None:
    import psycopg

    def fsync(dsn: str) -> str:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute("SHOW fsync").fetchone()
        assert row is not None
        return str(row[0])

    assert fsync(services.postgres.dsn) == "off"  # the suite's shared servers: `up --fast`
    svc = private_services("postgres")  # a plain `up`
    raw = json.loads(svc.settings_path.read_text())["postgres"]
    assert fsync(raw["dsn"]) == "on" and raw["user"] == PG_APP_USER


def test_unconfined_falkordb_needs_an_explicit_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services_module, "_can_isolate", lambda: False)
    monkeypatch.delenv(services_module.ALLOW_UNCONFINED_ENV, raising=False)
    with pytest.raises(ServicesError, match="--allow-unconfined-graph"):
        Services(tmp_path / "svc")._start_graph({})


def test_compose_passwords_are_escaped_in_the_connection_strings(tmp_path: Path) -> None:
    import psycopg.conninfo
    import redis.connection

    awkward = "p@ss:w/rd#1%?&"
    env = {"AIVILLAGE_PG_PASSWORD": awkward, "AIVILLAGE_NEO4J_PASSWORD": "n", "AIVILLAGE_REDIS_PASSWORD": awkward}
    settings = Services(tmp_path / "svc").write_compose_settings(env)
    parsed = psycopg.conninfo.conninfo_to_dict(settings.postgres.dsn)
    assert (parsed["password"], parsed["user"], parsed["host"], parsed["dbname"]) == (
        awkward,
        "aivillage",
        "127.0.0.1",
        "aivillage",
    )
    url = redis.connection.parse_url(settings.redis.url)  # type: ignore[no-untyped-call]  # the parser redis-py uses
    assert (url["password"], url["host"], url["port"]) == (awkward, "127.0.0.1", 26379)


def test_postgres_passwords_never_reach_psqls_argv_or_an_error(
    services: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any local user can read a process's argv (/proc/PID/cmdline, ps): the app role's password used to be in
    psql's ``-c "ALTER ROLE ... PASSWORD '...'"`` and, when psql failed, in the ServicesError that quoted the
    command. Real psql against the shared server; the role keeps its password (the settings' own)."""
    raw = json.loads(Services().settings_path.read_text())["postgres"]
    app_password, admin_password = raw["password"], raw["admin_password"]
    calls: list[tuple[list[str], dict[str, str], str | None]] = []
    real_run = subprocess.run

    def spy(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append((list(cmd), dict(kw.get("env") or {}), kw.get("input")))
        result: subprocess.CompletedProcess[str] = real_run(cmd, **kw)
        return result

    monkeypatch.setattr(subprocess, "run", spy)
    entry = Services()._secure_postgres(raw)
    psql = [c for c in calls if Path(c[0][0]).name == "psql"]
    assert psql and entry["password"] == app_password
    for argv, env, _stdin in psql:
        assert not any(app_password in a or admin_password in a for a in argv), argv
        assert env["PGPASSWORD"] == admin_password  # the superuser's, through the environment
    assert any(stdin and app_password in stdin for _argv, _env, stdin in psql)  # the statement, on stdin
    import psycopg

    psycopg.connect(services.postgres.dsn, connect_timeout=5).close()  # the password still works

    # A psql that fails echoes the statement it failed on (LINE 1: ALTER ROLE ... PASSWORD '...'): masked.
    def failing(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        statement = str(kw.get("input")) + " ".join(cmd)
        if "PASSWORD" not in statement:
            return spy(cmd, **kw)
        echoed = f"ERROR:  something\nLINE 1: {statement}\nFATAL: password {admin_password} refused"
        return subprocess.CompletedProcess(cmd, 3, "", echoed)

    monkeypatch.setattr(subprocess, "run", failing)
    with pytest.raises(ServicesError) as failed:
        Services()._secure_postgres(raw)
    assert "***" in str(failed.value)
    assert app_password not in str(failed.value) and admin_password not in str(failed.value)
