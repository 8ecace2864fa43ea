"""Governance persistence in the anchor's PostgreSQL (the interface of :mod:`node.agents.govstore`, blocking:
the village calls it through ``trio.to_thread`` behind its one DB limiter).

Tables come from migration ``0004_governance.sql`` (applied on open, like every anchor store). Rows are keyed by
namespace, so one database can hold several governances; the votes this node signed are keyed by its signing key
too. Each write is its own transaction (autocommit): ``save_signed`` has committed before the vote is sent.
:meth:`PgGovStore.load` rebuilds the core by feeding the stored bytes back through it (signatures checked again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
import psycopg_pool
import trio

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


class PgGovStore:
    def __init__(self, dsn: str, namespace: str, signer: bytes, *, timeout_s: float = 5.0) -> None:
        self.namespace, self.signer = namespace, signer
        try:
            migrate(dsn, timeout_s)
            self.db = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s)))
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable("postgres", str(exc)) from exc

    def close(self) -> None:
        self.db.close()

    def _meta(self, key: str) -> str | None:
        row = self.db.execute(
            "SELECT value FROM gov_meta WHERE namespace = %s AND key = %s", (self.namespace, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def init(self, namespace: str, genesis: Electorate) -> None:
        if namespace != self.namespace:
            raise GovernanceError(f"this store is for {self.namespace!r}, not {namespace!r}")
        body = genesis_meta(namespace, genesis)
        self.db.execute(
            "INSERT INTO gov_meta VALUES (%s, 'genesis', %s) ON CONFLICT DO NOTHING", (self.namespace, body)
        )
        if self._meta("genesis") != body:
            raise GovernanceError(f"PostgreSQL holds another genesis electorate for {namespace!r}")

    def save_proposal(self, p: Proposal) -> None:
        self.db.execute(
            "INSERT INTO gov_proposals VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, p.hash, p.epoch, p.round, p.encode()),
        )

    def save_vote(self, v: Vote) -> None:
        self.db.execute(
            "INSERT INTO gov_votes VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, v.voter, v.epoch, v.round, int(v.vote_type), v.encode()),
        )

    def save_signed(self, v: Vote) -> None:
        """Our own vote: call before sending it (a second vote for a slot raises, never overwrites)."""
        self.db.execute(
            "INSERT INTO gov_signed VALUES (%s, %s, %s, %s, %s, %s)",
            (self.namespace, self.signer, v.epoch, v.round, int(v.vote_type), v.encode()),
        )

    def save_certificate(self, c: Certificate) -> None:
        self.db.execute(
            "INSERT INTO gov_certificates VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, c.epoch, c.round, c.encode()),
        )

    def save_evidence(self, ev: Evidence) -> None:
        f = ev.first
        self.db.execute(
            "INSERT INTO gov_evidence VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.namespace, f.voter, f.epoch, f.round, int(f.vote_type), ev.encode()),
        )

    def signed(self) -> dict[tuple[int, int, VoteType], Vote]:
        out: dict[tuple[int, int, VoteType], Vote] = {}
        rows = self.db.execute(
            "SELECT data FROM gov_signed WHERE namespace = %s AND signer = %s", (self.namespace, self.signer)
        )
        for (data,) in rows:
            v = vote_from_bytes_untrusted(bytes(data))
            out[v.slot] = v
        return out

    def _blobs(self, sql: str) -> list[bytes]:
        return [bytes(r[0]) for r in self.db.execute(sql, (self.namespace,))]

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
