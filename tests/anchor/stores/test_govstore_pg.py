"""Governance in the anchor's PostgreSQL (real server): the same behaviour as the SQLite store — a restart
restores state, certificates, evidence and this node's own signatures (never a second vote for a slot) — and
a node whose anchor plugin provides the store keeps its village governance there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import psycopg
import pytest
import trio
import trio.testing

from anchor.stores.govstore_pg import GovStoreService, PgGovStore
from node.agents.errors import GovernanceError
from node.agents.governance import (
    Action,
    ActionKind,
    Electorate,
    Evidence,
    Value,
    Voter,
    VoteType,
    make_proposal,
    sign_vote,
)
from node.agents.govsettings import GovernanceSettings
from node.agents.village import VillageGovernance
from node.agents.vote import ProposeParams, village_propose
from node.transports.ble.settings import BleSection
from tests.agents.govstore_scenario import certify_admit_and_config
from tests.routing.harness import start_mesh

NS = "village-pg"


def test_restart_restores_state_evidence_and_own_signatures(pg_dsn: str) -> None:
    me = bytes(nacl.signing.SigningKey(bytes([1]) * 32).verify_key)  # member 0 of the scenario
    store = PgGovStore(pg_dsn, NS, me)
    run = certify_admit_and_config(store, NS)
    ks, genesis, gov, cfg = run.keys, run.genesis, run.gov, run.cfg
    assert me == bytes(ks[0].verify_key)
    bad = sign_vote(ks[3], NS, 0, cfg.hash, cfg.round, VoteType.PREVOTE, Value.NO)
    ev = gov.receive_vote(bad, 1).evidence
    assert isinstance(ev, Evidence)
    store.save_evidence(ev)
    gov.execute_ready()
    assert gov.epoch == 1 and gov.config["x"][1] == 1
    with pytest.raises(GovernanceError, match="already signed"):  # a second signature never overwrites the first
        store.save_signed(bad)
    store.save_signed(next(iter(store.signed().values())))  # the same vote again (a retried write) is fine
    store.close()

    again = PgGovStore(pg_dsn, NS, me)
    restored = again.load()
    assert restored.state() == gov.state()
    assert set(restored.certificates) == set(gov.certificates)
    assert restored.equivocators() == {bytes(ks[3].verify_key)}
    signed = again.signed()
    assert len(signed) == 4
    assert Voter(ks[0], restored, signed).on_proposal(cfg, 1) is None  # no second vote after a restart
    with pytest.raises(GovernanceError, match="genesis"):
        again.init(NS, Electorate.of(0, {me: 1}))
    other = PgGovStore(pg_dsn, "another-village", me)  # namespaces do not see each other's rows
    other.init("another-village", genesis)
    assert other.load().certificates == {} and other.signed() == {}
    with psycopg.connect(pg_dsn) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
    assert "governance" in names  # (later migrations follow it)
    again.close()
    other.close()


def test_the_store_reconnects_after_the_server_drops_its_connection(pg_dsn: str) -> None:
    k = nacl.signing.SigningKey(b"\x44" * 32)
    genesis = Electorate.of(0, {bytes(k.verify_key): 1})
    store = PgGovStore(pg_dsn, "village-reconnect", bytes(k.verify_key))
    store.init("village-reconnect", genesis)
    [(pid,)] = store._exec("SELECT pg_backend_pid()", ())
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    p = make_proposal("village-reconnect", 0, 0, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=10_000, signer=k)
    store.save_proposal(p)  # the pool's check (or the one retry) replaces the dead connection
    [(pid2,)] = store._exec("SELECT pg_backend_pid()", ())
    assert pid2 != pid
    assert store.load().proposal(p.hash) == p
    store.close()


@pytest.fixture
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_inline)


async def test_a_node_with_the_anchor_store_keeps_village_governance_in_postgres(
    pg_dsn: str,
    nursery: trio.Nursery,
    tmp_path: Path,
    inline_threads: None,
    autojump_clock: trio.testing.MockClock,
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 1)
    node = mesh.nodes[0]
    node.services.append(GovStoreService(lambda: pg_dsn, timeout_s=5.0))  # what the anchor plugin adds
    settings = GovernanceSettings(village_members=(node.identity.signing_public.hex(),))
    v = VillageGovernance(node, settings, node.config.data_dir, trio.CapacityLimiter(1))
    await nursery.start(v.run)
    out = await village_propose(v, ProposeParams(kind="config", key="ble.power_mode", value="saver"))
    assert out["certificate"]["signers"] == 1
    assert node.config.section(BleSection).power_mode == "saver"
    assert not (node.config.data_dir / "agents" / "village.sqlite").exists()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM gov_certificates").fetchone() == (1,)
    node.config = node.config.with_sections(BleSection())
    again = VillageGovernance(node, settings, node.config.data_dir, trio.CapacityLimiter(1))
    await nursery.start(again.run)  # a restart: state rebuilt from PostgreSQL
    assert node.config.section(BleSection).power_mode == "saver"


def test_pooled_connections_carry_statement_and_lock_timeouts(pg_dsn: str) -> None:
    """A stuck server fails a call after timeout_s instead of hanging governance (review of govfix, finding 2)."""
    store = PgGovStore(pg_dsn, NS, b"\x01" * 32, timeout_s=2.5)
    try:
        assert store._exec("SHOW statement_timeout", ()) == [("2500ms",)]
        assert store._exec("SHOW lock_timeout", ()) == [("2500ms",)]
        with store._pool.connection() as conn:
            assert conn.info.get_parameters().get("keepalives") == "1"  # TCP keepalives notice a lost server
    finally:
        store.close()
