"""Fixtures for the anchor's tests: real PostgreSQL, Redis and FalkorDB (Bolt) servers from ``scripts/services``.

- ``services`` (session): runs ``up`` (idempotent: reuses servers already running in ``.services/``, which the
  other test sessions and ``make test`` share) and yields the :class:`ServiceSettings`.
- ``pg_dsn``: a fresh, empty PostgreSQL database on that server for one test, dropped afterwards.
- ``graph_ns``: a unique prefix for node IDs (FalkorDB's Bolt has one graph per server, so tests isolate by ID).
- ``private_services``: starts a private set of servers in a fresh directory for tests that stop and restart
  them (down/recover); they are stopped at teardown. Never stops the shared ones.

``AIVILLAGE_SERVICES_DIR`` overrides the shared directory (default ``<repo>/.services``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from anchor.services_settings import ServicesError, ServiceSettings
from tools.services import DEFAULT_DIR, SERVICES, Services


@pytest.fixture(scope="session")
def services() -> ServiceSettings:
    svc = Services(Path(os.environ.get("AIVILLAGE_SERVICES_DIR", DEFAULT_DIR)), fast=True)
    try:
        settings = svc.up()
    except ServicesError as exc:
        pytest.fail(f"scripts/services up failed: {exc}")
    assert settings is not None
    return settings


@pytest.fixture
def pg_dsn(services: ServiceSettings) -> Iterator[str]:
    name = "t_" + secrets.token_hex(6)
    admin = services.postgres.dsn_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield services.postgres.dsn_for(name)
    finally:
        # FORCE cannot end a backend of another role (an autovacuum worker analysing the tables a test filled):
        # that refusal is retried a few times, it passes as soon as the worker is done.
        for attempt in range(20):
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except psycopg.errors.InsufficientPrivilege:
                if attempt == 19:
                    raise
                time.sleep(0.25)


@pytest.fixture
def graph_ns() -> str:
    return "t" + secrets.token_hex(6) + ":"


@pytest.fixture(scope="session")
def _private_pg_template() -> Iterator[Path]:
    """An initialised, stopped PostgreSQL cluster (+ its settings) that ``private_services`` copies: initdb
    takes seconds on a loaded machine, a copy a fraction of that."""
    base = Path(tempfile.mkdtemp(prefix="aiv-svc-tpl-"))
    svc = Services(base)
    svc.up(("postgres",))
    svc.down(("postgres",))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private_services(_private_pg_template: Path) -> Iterator[Callable[..., Services]]:
    # Under /tmp (not pytest's 0700 tmp_path): PostgreSQL runs as the postgres user and must reach its directory.
    base = Path(tempfile.mkdtemp(prefix="aiv-svc-"))
    os.rmdir(base)
    # cp -a keeps the owner (the postgres user when we are root) and modes.
    subprocess.run(["cp", "-a", str(_private_pg_template), str(base)], check=True)
    svc = Services(base)

    def start(*names: str) -> Services:
        """Start these servers (default: all three) in the private directory; the Services to stop/start them."""
        svc.up(tuple(names) or SERVICES)
        return svc

    try:
        yield start
    finally:
        svc.down()
        shutil.rmtree(base, ignore_errors=True)
