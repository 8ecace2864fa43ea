"""Governance surface: control methods ``vote.propose|cast|status|evidence`` and ``village vote ...``.

Two namespaces: ``village`` (the village's nodes vote, gossiped over the mesh; needs
``governance.village_members``) and ``local`` (this node's own decisions, voted by its agents: each agent's key
is a member, and a local proposal certifies once more than 2/3 of their power voted for it; it never leaves the
node). Without ``namespace`` a call goes to the village when one is configured.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.control.rpc import param

if TYPE_CHECKING:
    from node.agents.service import AgentsService
    from node.agents.village import VillageGovernance
    from node.cli_support import CliRegistry
    from node.control.rpc import Notify, Registry
    from node.node import Node

NAMESPACES = ("village", "local")
# A proposal may be named by a unique prefix of its hash at least this long (64 bits: grinding a proposal whose
# hash shares it costs ~2^64 hashes); casting after waiting for the proposal to arrive needs the full hash.
MIN_PREFIX_CHARS = 16
HASH_CHARS = 64


MAX_WAIT_S = 600.0


@dataclass(frozen=True, slots=True)
class NamespaceParams:
    namespace: str | None = param(None, doc="village or local; default: village when configured, else local.")


@dataclass(frozen=True, slots=True)
class StatusParams:
    namespace: str | None = param(None, doc="village or local; default: village when configured, else local.")
    certified: str | None = param(None, doc="Wait until this village proposal (hash or prefix) has a certificate.")
    wait_s: float = param(30.0, doc="How long to wait for `certified`, in seconds (at most 600).")


@dataclass(frozen=True, slots=True)
class ProposeParams:
    kind: str = param(doc="config, policy, admit or remove.")
    key: str = param(doc="The config key (SECTION.KEY) or policy key, or the member's Ed25519 public key in hex.")
    value: str | None = param(
        None, doc="The new value as JSON text (a bare word is taken as a string); the power for admit."
    )
    ttl_s: float = param(3600.0, doc="Seconds until the proposal expires (votes after it are refused).")
    namespace: str | None = param(None, doc="village or local; default: village when configured, else local.")
    vote: bool = param(True, doc="Also vote yes as this node (village; a local proposal is always voted).")


@dataclass(frozen=True, slots=True)
class CastParams:
    proposal: str = param(
        doc="The proposal's hash in hex (64 characters; without wait_s a unique prefix of at least 16 will do)."
    )
    value: str = param(doc="yes or no.")
    wait_s: float = param(0.0, doc="Wait up to this many seconds for the proposal to arrive from peers (max 600).")


def json_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _village_or_local(svc: AgentsService, namespace: str | None) -> VillageGovernance | None:
    from node.agents.errors import GovernanceError

    if namespace is not None and namespace not in NAMESPACES:
        raise GovernanceError(f"namespace must be village or local, not {namespace!r}")
    if namespace == "local":
        return None
    if svc.village is None:
        if namespace == "village":
            raise GovernanceError("no village governance here: set governance.village_members")
        return None
    return svc.village


async def wait_until(village: VillageGovernance, pred: Any, wait_s: float) -> bool:
    """Wait (event-driven, on the village's ``changed`` event) until ``pred()`` holds or ``wait_s`` passes."""
    import trio

    mesh = village.mesh
    assert mesh is not None
    with trio.move_on_after(max(0.0, min(wait_s, MAX_WAIT_S))):
        while not pred():
            await mesh.changed.wait()
    return bool(pred())


def _matches(village: VillageGovernance, ref: str) -> list[bytes]:
    ref = ref.lower()
    return [p.hash for p in village.gov.all_proposals() if p.hash.hex().startswith(ref)]


def find_proposal(village: VillageGovernance, ref: str) -> bytes:
    from node.agents.errors import GovernanceError

    ref = ref.lower()
    if len(ref) < MIN_PREFIX_CHARS or any(c not in "0123456789abcdef" for c in ref):
        raise GovernanceError(f"name a proposal by its hash in hex (at least {MIN_PREFIX_CHARS} characters)")
    hits = _matches(village, ref)
    if len(hits) != 1:
        raise GovernanceError(f"{len(hits)} proposals match {ref!r} (pull from peers, or give more characters)")
    return hits[0]


async def village_propose(village: VillageGovernance, p: ProposeParams) -> dict[str, Any]:
    """Propose on the village and vote YES for it as this node (when a member)."""
    from node.agents.errors import GovernanceError
    from node.agents.governance import Value

    value = json_value(p.value)
    if p.kind == "config" and (why := village.check_config(p.key, value)) is not None:
        raise GovernanceError(f"not a change the village may vote on: {why}")
    mesh = village.mesh
    assert mesh is not None
    prop = await mesh.propose(p.kind, p.key, value, ttl_s=p.ttl_s)
    if p.vote and mesh.gov.electorate.index(mesh.voter.public) is not None:
        await mesh.cast(prop.hash, Value.YES)
    cert = mesh.gov.certificates.get((prop.epoch, prop.round))
    return {
        "namespace": mesh.namespace,
        "proposal": prop.hash.hex(),
        "epoch": prop.epoch,
        "round": prop.round,
        "certificate": cert.to_json() if cert else None,
        "state": mesh.gov.state(),
    }


async def village_cast(village: VillageGovernance, p: CastParams) -> dict[str, Any]:
    from node.agents.errors import GovernanceError
    from node.agents.governance import ActionKind, Value

    if p.value not in ("yes", "no"):
        raise GovernanceError(f"value must be yes or no, not {p.value!r}")
    mesh = village.mesh
    assert mesh is not None
    if p.wait_s > 0:
        # waiting for a proposal to arrive lets anyone race one with a matching prefix in: the full hash only
        if len(p.proposal) != HASH_CHARS:
            raise GovernanceError(f"waiting for a proposal needs its full hash ({HASH_CHARS} hex characters)")
        await wait_until(village, lambda: len(_matches(village, p.proposal)) == 1, p.wait_s)
    h = find_proposal(village, p.proposal)
    prop = mesh.gov.proposal(h)
    assert prop is not None
    value = Value.YES if p.value == "yes" else Value.NO
    a = prop.action
    if value is Value.YES and a.kind is ActionKind.CONFIG and (why := village.check_config(a.key, a.value)):
        raise GovernanceError(f"this node will not vote yes: {why}")
    vote = await mesh.cast(h, value)
    cert = mesh.gov.certificates.get((prop.epoch, prop.round))
    return {
        "namespace": mesh.namespace,
        "proposal": h.hex(),
        "vote": vote.to_json(),
        "certificate": cert.to_json() if cert else None,
        "state": mesh.gov.state(),
    }


def add_rpc(node: Node, reg: Registry, service: Any) -> None:
    """Register the vote.* methods; ``service()`` returns the running AgentsService (or raises RpcError)."""
    from node.agents.errors import AgentError
    from node.control.rpc import APP_ERROR, RpcError

    async def status(p: StatusParams, notify: Notify) -> Any:
        from node.agents.errors import GovernanceError

        try:
            s = service()
            v = _village_or_local(s, "village" if p.certified else p.namespace)
            if v is not None and p.certified:

                def certified() -> bool:
                    hits = _matches(v, p.certified or "")
                    return len(hits) == 1 and any(c.proposal_hash == hits[0] for c in v.gov.certificates.values())

                if not await wait_until(v, certified, p.wait_s):
                    raise GovernanceError(f"no certificate for {p.certified} within {p.wait_s:g} s")
            return v.status() if v is not None else {**s.gov_status(), "namespace": "local"}
        except AgentError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc

    async def evidence(p: NamespaceParams, notify: Notify) -> Any:
        try:
            s = service()
            v = _village_or_local(s, p.namespace)
        except AgentError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc
        g = v.gov if v is not None else s.gov
        return [e.to_json() for e in g.evidence.values()] if g is not None else []

    async def propose(p: ProposeParams, notify: Notify) -> Any:
        if not 1 <= p.ttl_s <= 30 * 86400:
            raise RpcError(APP_ERROR, "ttl_s must be from 1 s to 30 days")
        try:
            s = service()
            v = _village_or_local(s, p.namespace)
            if v is not None:
                return await village_propose(v, p)
            return await s.propose(p.kind, p.key, json_value(p.value), ttl_s=p.ttl_s)
        except AgentError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc

    async def cast(p: CastParams, notify: Notify) -> Any:
        try:
            v = _village_or_local(service(), "village")
            assert v is not None
            return await village_cast(v, p)
        except AgentError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc

    reg.add("vote.status", StatusParams, "Governance: epoch, electorate, proposals, certificates, state.", status)
    reg.add("vote.evidence", NamespaceParams, "Equivocation evidence: pairs of conflicting signed votes.", evidence)
    reg.add("vote.propose", ProposeParams, "Propose a typed change and vote yes for it as this node.", propose)
    reg.add("vote.cast", CastParams, "Vote yes or no on a village proposal as this node (once per proposal).", cast)


def add_cli(cli: CliRegistry) -> None:
    from node.cli_support import EXIT_OK, call, client, emit

    def ns(args: argparse.Namespace) -> dict[str, Any]:
        return {"namespace": args.namespace} if args.namespace else {}

    def cmd_status(args: argparse.Namespace) -> int:
        def human(d: Any) -> str:
            lines = [
                f"{d['namespace']}: epoch {d['epoch']}, {len(d['electorate'])} voter(s), "
                f"{len(d['certificates'])} certificate(s)",
                f"config: {d['state']['config']}",
                f"policy: {d['state']['policy']}",
            ]
            lines += [
                f"  {p['hash'][:16]} round {p['round']}: {p['kind']} {p['key']} = {p['value']!r}"
                for p in d.get("proposals", [])
            ]
            return "\n".join(lines)

        if args.certified:
            with client(args, timeout_s=args.wait + 15) as c:
                out = c.call("vote.status", certified=args.certified, wait_s=args.wait)
        else:
            out = call(args, "vote.status", **ns(args))
        emit(args, out, human)
        return EXIT_OK

    def cmd_evidence(args: argparse.Namespace) -> int:
        emit(args, call(args, "vote.evidence", **ns(args)), lambda d: "\n".join(e["voter"] for e in d) or "no evidence")
        return EXIT_OK

    def cmd_propose(args: argparse.Namespace) -> int:
        out = call(args, "vote.propose", kind=args.kind, key=args.key, value=args.value, **ns(args))
        emit(
            args,
            out,
            lambda d: (
                f"proposal {d['proposal']} round {d['round']}: "
                + ("certified and adopted" if d["certificate"] else "waiting for votes")
            ),
        )
        return EXIT_OK

    def cmd_cast(args: argparse.Namespace) -> int:
        with client(args, timeout_s=args.wait + 15) as c:
            out = c.call("vote.cast", proposal=args.proposal, value=args.value, wait_s=args.wait)
        emit(
            args,
            out,
            lambda d: (
                f"voted {args.value} on {d['proposal'][:16]}"
                + (": certified" if d["certificate"] else ": waiting for more votes")
            ),
        )
        return EXIT_OK

    v = cli.group("vote", "Governance: proposals, certificates (> 2/3 of the power), evidence.")
    st = v.command("status", cmd_status, "Show the epoch, electorate, proposals, certificates and adopted state.")
    ev = v.command("evidence", cmd_evidence, "List equivocation evidence.")
    pp = v.command("propose", cmd_propose, "Propose a config/policy change or a member; vote yes for it.")
    pp.add_argument("kind", choices=("config", "policy", "admit", "remove"), help="what the proposal changes")
    pp.add_argument("key", help="SECTION.KEY, a policy key, or the member's public key (hex)")
    pp.add_argument("value", nargs="?", help="the value (JSON), or the power for admit")
    cp = v.command("cast", cmd_cast, "Vote yes or no on a village proposal as this node.")
    cp.add_argument("proposal", help="the proposal hash (without --wait, a unique prefix of 16+ hex characters)")
    cp.add_argument("value", choices=("yes", "no"), help="the vote")
    cp.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the proposal to arrive from peers")
    st.add_argument("--certified", metavar="PROPOSAL", help="wait until this village proposal is certified")
    st.add_argument("--wait", type=float, default=30.0, help="seconds to wait for --certified (default 30)")
    for p in (st, ev, pp):
        p.add_argument("--namespace", choices=NAMESPACES, help="village or local (default: village when configured)")
