"""SQLite persistence for governance (blocking; the service calls it through ``trio.to_thread``).

What is stored is exactly the wire bytes the core accepted (proposals, votes, certificates, evidence) plus the
votes this node signed, written *before* they are sent, so a restarted node never signs a second, different vote
for a slot. :meth:`GovStore.load` rebuilds a :class:`Governance` by feeding the stored bytes back through the
core (signatures are checked again; nothing is trusted because it came from disk).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Protocol

from node.agents.errors import GovernanceError
from node.agents.governance import (
    Certificate,
    Electorate,
    Evidence,
    Governance,
    Proposal,
    Vote,
    VoteType,
    proposal_from_bytes_untrusted,
    vote_from_bytes_untrusted,
)
from node.agents.governance.formats import SIG_BYTES
from node.wire.errors import MalformedFrame

log = logging.getLogger("village.governance")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS proposals (hash BLOB PRIMARY KEY, epoch INTEGER, round INTEGER, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    voter BLOB, epoch INTEGER, round INTEGER, type INTEGER, data BLOB NOT NULL,
    PRIMARY KEY (voter, epoch, round, type));
CREATE TABLE IF NOT EXISTS certificates (epoch INTEGER, round INTEGER, data BLOB NOT NULL, PRIMARY KEY (epoch, round));
CREATE TABLE IF NOT EXISTS evidence (
    voter BLOB, epoch INTEGER, round INTEGER, type INTEGER, data BLOB NOT NULL,
    PRIMARY KEY (voter, epoch, round, type));
CREATE TABLE IF NOT EXISTS signed (epoch INTEGER, round INTEGER, type INTEGER, data BLOB NOT NULL,
    PRIMARY KEY (epoch, round, type));
"""


class GovStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        if new:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
        os.chmod(path, 0o600)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        version = self._meta("schema_version")
        if version is None:
            self._set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise GovernanceError(f"{path}: governance schema {version}, this node reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def init(self, namespace: str, genesis: Electorate) -> None:
        """Record the namespace and the genesis electorate (once; a different one is refused)."""
        have = self._meta("genesis")
        body = genesis_meta(namespace, genesis)
        if have is None:
            self._set_meta("genesis", body)
        elif have != body:
            raise GovernanceError(f"{self.path} holds another namespace or genesis electorate")

    def save_proposal(self, p: Proposal) -> None:
        self.db.execute("INSERT OR IGNORE INTO proposals VALUES (?, ?, ?, ?)", (p.hash, p.epoch, p.round, p.encode()))

    def save_vote(self, v: Vote) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO votes VALUES (?, ?, ?, ?, ?)", (v.voter, v.epoch, v.round, v.vote_type, v.encode())
        )

    def save_signed(self, v: Vote) -> None:
        """Our own vote: call before sending it."""
        self.db.execute("INSERT INTO signed VALUES (?, ?, ?, ?)", (v.epoch, v.round, v.vote_type, v.encode()))

    def save_certificate(self, c: Certificate) -> None:
        self.db.execute("INSERT OR IGNORE INTO certificates VALUES (?, ?, ?)", (c.epoch, c.round, c.encode()))

    def save_evidence(self, ev: Evidence) -> None:
        f = ev.first
        self.db.execute(
            "INSERT OR IGNORE INTO evidence VALUES (?, ?, ?, ?, ?)",
            (f.voter, f.epoch, f.round, f.vote_type, ev.encode()),
        )

    def votes_by(self) -> dict[bytes, dict[tuple[int, int, VoteType], Vote]]:
        """Every stored vote by voter (the node's own agents read back what they signed before a restart)."""
        out: dict[bytes, dict[tuple[int, int, VoteType], Vote]] = {}
        for (data,) in self.db.execute("SELECT data FROM votes"):
            v = vote_from_bytes_untrusted(bytes(data))
            out.setdefault(v.voter, {})[v.slot] = v
        return out

    def signed(self) -> dict[tuple[int, int, VoteType], Vote]:
        out: dict[tuple[int, int, VoteType], Vote] = {}
        for (data,) in self.db.execute("SELECT data FROM signed"):
            v = vote_from_bytes_untrusted(bytes(data))
            out[v.slot] = v
        return out

    def load(self) -> Governance:
        """Rebuild the core from what was stored (see :func:`rebuild`)."""
        raw = self._meta("genesis")
        if raw is None:
            raise GovernanceError(f"{self.path} has no genesis electorate (run init first)")
        return rebuild(
            raw,
            [bytes(b) for (b,) in self.db.execute("SELECT body FROM proposals")],
            [bytes(d) for (d,) in self.db.execute("SELECT data FROM certificates ORDER BY epoch, round")],
            [bytes(d) for (d,) in self.db.execute("SELECT data FROM votes ORDER BY epoch, round, type")],
            [bytes(d) for (d,) in self.db.execute("SELECT data FROM evidence")],
            where=str(self.path),
        )


class GovernanceStore(Protocol):
    """What governance persists (SQLite here; PostgreSQL on anchors: ``anchor.stores.govstore_pg``). Blocking:
    callers run it through ``trio.to_thread`` behind one limiter."""

    def init(self, namespace: str, genesis: Electorate) -> None: ...
    def save_proposal(self, p: Proposal) -> None: ...
    def save_vote(self, v: Vote) -> None: ...
    def save_signed(self, v: Vote) -> None: ...
    def save_certificate(self, c: Certificate) -> None: ...
    def save_evidence(self, ev: Evidence) -> None: ...
    def signed(self) -> dict[tuple[int, int, VoteType], Vote]: ...
    def load(self) -> Governance: ...
    def close(self) -> None: ...


class GovernanceStoreProvider(Protocol):
    """A service (named :data:`PROVIDER_SERVICE`) a plugin adds to give governance another store (the anchor's
    PostgreSQL). ``open_store`` is blocking."""

    name: str

    def open_store(self, namespace: str, signer: bytes) -> GovernanceStore: ...


PROVIDER_SERVICE = "governance-store"


def rebuild(
    genesis_meta: str,
    proposals: list[bytes],
    certificates: list[bytes],
    votes: list[bytes],
    evidence: list[bytes],
    *,
    where: str,
) -> Governance:
    """Feed stored wire bytes back through the core (signatures checked again; nothing is trusted because it came
    from disk). Stored proposals and votes had been accepted before they expired, so they are fed at time 0;
    membership certificates are applied as their epochs appear."""
    meta = json.loads(genesis_meta)
    gov = Governance(meta["namespace"], Electorate.from_json(meta["electorate"]))
    parsed = []
    unsigned = []  # stored before proposals were signed: kept only when a stored certificate decides them
    for b in proposals:
        try:
            parsed.append(proposal_from_bytes_untrusted(b))
        except MalformedFrame:
            p = _unsigned_proposal(b)
            if p is None:
                gov.counters["stored_proposal_unparsable"] += 1
            else:
                unsigned.append(p)
    while True:
        epoch = gov.epoch
        for p in parsed:
            if p.epoch in gov.electorates and p.hash not in {x.hash for x in gov.proposals(p.epoch, p.round)}:
                gov.add_proposal(p, 0)
        for c in certificates:
            gov.receive_certificate_untrusted(c)
        for p in unsigned:
            if p.epoch in gov.electorates and p.hash not in {x.hash for x in gov.proposals(p.epoch, p.round)}:
                gov.add_proposal(p, 0, unsigned_if_certified=True)
        gov.execute_ready()
        if gov.epoch == epoch:
            break
    skipped = [p for p in unsigned if gov.proposal(p.hash) is None]
    if skipped:
        gov.counters["stored_proposal_unsigned_skipped"] += len(skipped)
        log.warning(
            "%s: %d unsigned proposal(s) stored before proposals were signed and not certified were skipped "
            "(their votes no longer count; re-propose them): %s",
            where,
            len(skipped),
            ", ".join(p.hash.hex()[:16] for p in skipped[:8]),
        )
    for data in votes:
        gov.receive_vote_untrusted(data, 0)
    for data in evidence:
        gov.receive_evidence_untrusted(data)
    return gov


def _unsigned_proposal(data: bytes) -> Proposal | None:
    """A proposal stored before proposals were signed (its canonical body alone), without a signature."""
    try:
        p = proposal_from_bytes_untrusted(data + bytes(SIG_BYTES))
    except MalformedFrame:
        return None
    return dataclasses.replace(p, signature=b"")


def genesis_meta(namespace: str, genesis: Electorate) -> str:
    """The canonical record of a governance's namespace and genesis electorate (stores compare it on init)."""
    return json.dumps({"namespace": namespace, "electorate": genesis.to_json()}, sort_keys=True)
