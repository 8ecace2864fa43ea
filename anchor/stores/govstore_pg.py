"""Governance persistence in the anchor's PostgreSQL (the interface of :mod:`node.agents.govstore`, blocking:
the village calls it through ``trio.to_thread`` behind its one DB limiter).

Tables come from migration ``0004_governance.sql`` (applied on open, like every anchor store). Rows are keyed by
namespace, so one database can hold several governances; the votes this node signed are keyed by its signing key
too. Each write is its own transaction (autocommit): ``save_signed`` has committed before the vote is sent.
:meth:`PgGovStore.load` rebuilds the core by feeding the stored bytes back through it (signatures checked again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
import trio
from psycopg.rows import TupleRow

from anchor.stores.errors import StoreUnavailable
from node.agents.errors import GovernanceError
from node.agents.governance import (
    Certificate,
    Electorate,
    Evidence,
    Governance,
    Proposal,
    Vote,
    VoteType,
    vote_from_bytes_untrusted,
)
from node.agents.govstore import genesis_meta, rebuild

if TYPE_CHECKING:
    from node.node import Node


def migrate(dsn: str, timeout_s: float) -> None:
    """Apply the anchor's pending migrations (the same path as :class:`anchor.stores.postgres.PostgresStore`).

    SEAM (anchor stores): uses PostgresStore's migration step synchronously; a public sync helper there would
    replace the private call."""
    from anchor.stores.postgres import PostgresStore

    store = PostgresStore(dsn, timeout_s=timeout_s, max_connections=1)
    store._pool.open(wait=True, timeout=timeout_s)
    try:
        store._apply_migrations()
    finally:
        store._pool.close(timeout=timeout_s)


def connection_kwargs(timeout_s: float) -> dict[str, Any]:
    """Connection settings so a stuck server or a lost peer fails a call instead of hanging it: the server ends
    a statement (or a lock wait) after ``timeout_s``, and TCP keepalives notice a silent connection."""
    ms = max(1, int(timeout_s * 1000))
    return {
        "autocommit": True,
        "connect_timeout": max(1, int(timeout_s)),
        "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        "keepalives": 1,
        "keepalives_idle": max(1, int(timeout_s)),
        "keepalives_interval": max(1, int(timeout_s) // 3),
        "keepalives_count": 3,
    }


class PgGovStore:
    """One governance namespace in PostgreSQL, over a one-connection psycopg_pool pool (checked before use,
    remade after an outage). Every statement is idempotent and retried once on a connection failure; a second
    failure (or no connection within ``timeout_s``) raises :class:`StoreUnavailable`."""

    def __init__(self, dsn: str, namespace: str, signer: bytes, *, timeout_s: float = 5.0) -> None:
        self.namespace, self.signer = namespace, signer
        self._timeout_s = timeout_s
        try:
            migrate(dsn, timeout_s)
            self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[TupleRow]] = psycopg_pool.ConnectionPool(
                dsn,
                min_size=1,
                max_size=1,  # the village writes through one DB limiter: one connection is enough
                kwargs=connection_kwargs(timeout_s),
                check=psycopg_pool.ConnectionPool.check_connection,
                timeout=timeout_s,
                open=False,
            )
            self._pool.open(wait=True, timeout=timeout_s)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable("postgres", str(exc)) from exc

    def close(self) -> None:
        self._pool.close(timeout=self._timeout_s)

    def _exec(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """Run one statement (its own transaction) and return its rows; one retry after a connection failure."""
        for attempt in (1, 2):
            try:
                with self._pool.connection(timeout=self._timeout_s) as conn:
                    cur = conn.execute(sql, params)
                    return list(cur.fetchall()) if cur.description is not None else []
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise StoreUnavailable("postgres", str(exc)) from exc
            except psycopg_pool.PoolTimeout as exc:
                raise StoreUnavailable("postgres", str(exc)) from exc
        raise AssertionError("unreachable")

    def _meta(self, key: str) -> str | None:
        rows = self._exec("SELECT value FROM gov_meta WHERE namespace = %s AND key = %s", (self.namespace, key))
        return None if not rows else str(rows[0][0])

    def init(self, namespace: str, genesis: Electorate) -> None:
        if namespace != self.namespace:
            raise GovernanceError(f"this store is for {self.namespace!r}, not {namespace!r}")
        body = genesis_meta(namespace, genesis)
        self._exec("INSERT INTO gov_meta VALUES (%s, 'genesis', %s) ON CONFLICT DO NOTHING", (self.namespace, body))
        if self._meta("genesis") != body:
            raise GovernanceError(f"PostgreSQL holds another genesis electorate for {namespace!r}")

    def save_proposal(self, p: Proposal) -> None:
        self._exec(
            "INSERT INTO gov_proposals VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, p.hash, p.epoch, p.round, p.encode()),
        )

    def save_vote(self, v: Vote) -> None:
        self._exec(
            "INSERT INTO gov_votes VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, v.voter, v.epoch, v.round, int(v.vote_type), v.encode()),
        )

    def save_signed(self, v: Vote) -> None:
        """Our own vote: call before sending it. A different vote already stored for the slot raises
        :class:`GovernanceError` (never overwritten); the same vote again (a retried write) is fine."""
        key = (self.namespace, self.signer, v.epoch, v.round, int(v.vote_type))
        self._exec("INSERT INTO gov_signed VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", (*key, v.encode()))
        rows = self._exec(
            "SELECT data FROM gov_signed WHERE namespace = %s AND signer = %s AND epoch = %s AND round = %s "
            "AND type = %s",
            key,
        )
        if not rows or bytes(rows[0][0]) != v.encode():
            raise GovernanceError(f"this node already signed another vote for slot {v.slot} (never overwritten)")

    def save_certificate(self, c: Certificate) -> None:
        self._exec(
            "INSERT INTO gov_certificates VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, c.epoch, c.round, c.encode()),
        )

    def save_evidence(self, ev: Evidence) -> None:
        f = ev.first
        self._exec(
            "INSERT INTO gov_evidence VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, f.voter, f.epoch, f.round, int(f.vote_type), ev.encode()),
        )

    def signed(self) -> dict[tuple[int, int, VoteType], Vote]:
        out: dict[tuple[int, int, VoteType], Vote] = {}
        rows = self._exec(
            "SELECT data FROM gov_signed WHERE namespace = %s AND signer = %s", (self.namespace, self.signer)
        )
        for (data,) in rows:
            v = vote_from_bytes_untrusted(bytes(data))
            out[v.slot] = v
        return out

    def _blobs(self, sql: str) -> list[bytes]:
        return [bytes(r[0]) for r in self._exec(sql, (self.namespace,))]

    def load(self) -> Governance:
        raw = self._meta("genesis")
        if raw is None:
            raise GovernanceError(f"PostgreSQL has no genesis electorate for {self.namespace!r} (run init first)")
        return rebuild(
            raw,
            self._blobs("SELECT body FROM gov_proposals WHERE namespace = %s"),
            self._blobs("SELECT data FROM gov_certificates WHERE namespace = %s ORDER BY epoch, round"),
            self._blobs("SELECT data FROM gov_votes WHERE namespace = %s ORDER BY epoch, round, type"),
            self._blobs("SELECT data FROM gov_evidence WHERE namespace = %s"),
            where=f"PostgreSQL governance {self.namespace!r}",
        )


class GovStoreService:
    """The anchor's ``governance-store`` service: the node's village governance persists in PostgreSQL
    (:class:`node.agents.govstore.GovernanceStoreProvider`). Nothing to run; ``open_store`` is blocking."""

    name = "governance-store"

    def __init__(self, dsn_source: Callable[[], str], *, timeout_s: float) -> None:
        self._dsn_source = dsn_source
        self.timeout_s = timeout_s

    def open_store(self, namespace: str, signer: bytes) -> PgGovStore:
        return PgGovStore(self._dsn_source(), namespace, signer, timeout_s=self.timeout_s)

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
