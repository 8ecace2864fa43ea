"""Certified actions take effect: a village certificate changes the running node's configuration (whitelisted keys,
checked by the settings schema), survives a restart, and shared policy is read back; every refusal is tested.
Three real in-process Nodes over memory links (autojump clock), each running VillageGovernance on its own store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.agents.errors import GovernanceError
from node.agents.governance import Value
from node.agents.govsettings import GovernanceSettings
from node.agents.govstore import GovStore
from node.agents.village import VillageGovernance
from node.agents.vote import CastParams, ProposeParams, village_cast, village_propose
from node.transports.ble.settings import BleSection
from tests.routing.harness import Mesh, start_mesh

SIM_TIMEOUT_S = 900


@pytest.fixture(autouse=True)
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite runs inline instead of in worker threads, so the autojump clock only jumps on real idleness."""

    async def run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_inline)


async def _village(nursery: trio.Nursery, tmp_path: Path, n: int = 3) -> tuple[Mesh, list[VillageGovernance]]:
    mesh = await start_mesh(nursery, tmp_path, n)
    for i in range(n):
        for j in range(i + 1, n):
            mesh.connect(i, j)
    with trio.fail_after(SIM_TIMEOUT_S):
        for i in range(n):
            for j in range(n):
                if i != j:
                    await mesh.wait_until_known(i, j)
    members = tuple(nd.identity.signing_public.hex() for nd in mesh.nodes)
    vs = []
    for nd in mesh.nodes:
        v = VillageGovernance(
            nd, GovernanceSettings(village_members=members), nd.config.data_dir, trio.CapacityLimiter(1)
        )
        await nursery.start(v.run)
        vs.append(v)
    return mesh, vs


async def _everywhere(vs: list[VillageGovernance], pred: Callable[[VillageGovernance], bool]) -> None:
    async def one(v: VillageGovernance) -> None:
        assert v.mesh is not None
        while not pred(v):
            await v.mesh.changed.wait()

    async with trio.open_nursery() as n:
        for v in vs:
            n.start_soon(one, v)


async def _decide(vs: list[VillageGovernance], kind: str, key: str, value: str) -> str:
    out = await village_propose(vs[0], ProposeParams(kind=kind, key=key, value=value))
    h = out["proposal"]
    await _everywhere(vs, lambda v: any(p.hash.hex() == h for p in v.gov.all_proposals()))
    for v in vs[1:]:
        await village_cast(v, CastParams(proposal=h[:16], value="yes"))
    return str(h)


async def test_a_certified_config_change_applies_to_every_running_node_and_survives_a_restart(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh, vs = await _village(nursery, tmp_path)
    assert all(nd.config.section(BleSection).power_mode == "auto" for nd in mesh.nodes)
    with trio.fail_after(SIM_TIMEOUT_S):
        await _decide(vs, "config", "ble.power_mode", "saver")
        await _everywhere(vs, lambda v: v.applied.get("ble.power_mode") == "saver")
    assert all(nd.config.section(BleSection).power_mode == "saver" for nd in mesh.nodes)
    # a restart: the stored certificates (verified again on load) set the same configuration
    node = mesh.nodes[1]
    node.config = node.config.with_sections(BleSection())
    again = VillageGovernance(node, vs[1].settings, node.config.data_dir / "restart-copy", trio.CapacityLimiter(1))
    (node.config.data_dir / "restart-copy" / "agents").mkdir(parents=True)
    assert isinstance(vs[1].store, GovStore)
    vs[1].store.db.execute("VACUUM INTO ?", (str(node.config.data_dir / "restart-copy" / "agents" / "village.sqlite"),))
    await nursery.start(again.run)
    assert node.config.section(BleSection).power_mode == "saver"
    assert again.applied == {"ble.power_mode": "saver"}


async def test_refusals_not_votable_invalid_value_no_quorum_and_a_certificate_for_a_key_we_do_not_allow(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh, vs = await _village(nursery, tmp_path)
    with pytest.raises(GovernanceError, match=r"not one of governance\.votable_keys"):
        await village_propose(vs[0], ProposeParams(kind="config", key="mesh.default_ttl", value="3"))
    with pytest.raises(GovernanceError, match=r"ble\.power_mode: expected one of"):
        await village_propose(vs[0], ProposeParams(kind="config", key="ble.power_mode", value="turbo"))
    with trio.fail_after(SIM_TIMEOUT_S):
        # one yes of three: no certificate, nothing changes however long we wait
        out = await village_propose(vs[0], ProposeParams(kind="config", key="ble.max_central_links", value="2"))
        with trio.move_on_after(300):
            await _everywhere(vs, lambda v: bool(v.gov.certificates))
        assert not any(v.gov.certificates for v in vs)
        assert all(nd.config.section(BleSection).max_central_links != 2 for nd in mesh.nodes)
        # a proposal this node's whitelist refuses: its operator cannot vote yes on it ...
        await _everywhere(vs, lambda v: any(p.hash.hex() == out["proposal"] for p in v.gov.all_proposals()))
        assert vs[1].mesh is not None and vs[2].mesh is not None
        wide = vs[0]
        wide.settings = GovernanceSettings(
            village_members=wide.settings.village_members, votable_keys=("mesh.default_ttl",)
        )
        assert wide.mesh is not None
        p = await wide.mesh.propose("config", "mesh.default_ttl", 3, ttl_s=600)
        await _everywhere(vs, lambda v: v.gov.proposal(p.hash) is not None)
        with pytest.raises(GovernanceError, match="will not vote yes"):
            await village_cast(vs[1], CastParams(proposal=p.hash.hex(), value="yes"))
        # ... and when the others certify it anyway, it is recorded as refused here and changes nothing
        await wide.mesh.cast(p.hash, Value.YES)
        await vs[1].mesh.cast(p.hash, Value.YES)
        await vs[2].mesh.cast(p.hash, Value.YES)
        await _everywhere(vs, lambda v: (p.epoch, p.round) in v.gov.certificates and bool(v.gov.executed))
    assert mesh.nodes[0].config.mesh.default_ttl == 3  # the node whose whitelist allows it adopts it
    for v, nd in zip(vs[1:], mesh.nodes[1:], strict=True):
        assert nd.config.mesh.default_ttl == 7
        assert [r["key"] for r in v.refused] == ["mesh.default_ttl"]
        assert "votable_keys" in v.refused[0]["reason"]
    with pytest.raises(GovernanceError, match="proposals match"):
        await village_cast(vs[1], CastParams(proposal="ab" * 8, value="no"))
    # a short prefix could be ground; waiting for a proposal by a prefix would let a racer's proposal in
    with pytest.raises(GovernanceError, match="at least 16"):
        await village_cast(vs[1], CastParams(proposal=p.hash.hex()[:15], value="no"))
    with pytest.raises(GovernanceError, match="full hash"):
        await village_cast(vs[1], CastParams(proposal=p.hash.hex()[:16], value="no", wait_s=5))


async def test_shared_policy_is_certified_and_read_back(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    _, vs = await _village(nursery, tmp_path)
    assert vs[2].blocked_terms() == []
    with trio.fail_after(SIM_TIMEOUT_S):
        await _decide(vs, "policy", "privacy.blocked_terms", '["project-x", "salary"]')
        await _everywhere(vs, lambda v: v.blocked_terms() == ["project-x", "salary"])
