"""The village's governance on one node: its store, its :class:`GovMesh`, and what its certificates do.

Certified actions take effect here, and only here, and only with a current-epoch certificate (the core
executes nothing else, see :meth:`node.agents.governance.Governance.execute_ready`):

* **config** — the key must be one of ``governance.votable_keys`` and the value must pass that section's
  schema (``build_section``: type, range, choices, cross-field checks); then the running node's
  :class:`~node.settings.Config` carries it (tools that read ``node.config`` see it at once). A refused change is
  recorded with its reason and changes nothing. Certificates persist in the store, so a restart re-applies
  the same state (the certificates are verified again on load).
* **admit/remove** — the core moves to the next epoch with the changed electorate.
* **policy** — kept in the shared state; the Legal agent's ``policy.check`` reads ``privacy.blocked_terms``.

The store is ``<data dir>/agents/village.sqlite``, unless a plugin provides a ``governance-store`` service (the
anchor's PostgreSQL store, :class:`node.agents.govstore.GovernanceStoreProvider`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.agents.errors import GovernanceError
from node.agents.governance import ActionKind, Electorate, Executed, Governance, Value
from node.agents.govmesh import GovMesh
from node.agents.govsettings import GovernanceSettings
from node.agents.govstore import PROVIDER_SERVICE, GovernanceStore, GovStore
from node.errors import ConfigError

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("village.governance")

BLOCKED_TERMS_POLICY = "privacy.blocked_terms"  # shared policy: terms no request may send to peers
MAX_REFUSALS_KEPT = 64


class VillageGovernance:
    def __init__(
        self, node: Node, settings: GovernanceSettings, data_dir: Path | None, db_limiter: trio.CapacityLimiter
    ) -> None:
        self.node, self.settings, self.data_dir, self.db_limiter = node, settings, data_dir, db_limiter
        self.store: GovernanceStore | None = None
        self.mesh: GovMesh | None = None
        self.applied: dict[str, Any] = {}  # config key -> value in effect by certificate
        self.refused: list[dict[str, Any]] = []  # certified config changes that could not apply, with why

    @property
    def gov(self) -> Governance:
        if self.mesh is None:
            raise GovernanceError("village governance is not running")
        return self.mesh.gov

    def genesis(self) -> Electorate:
        return Electorate.of(0, self.settings.electorate_powers())

    def _open(self) -> Governance:
        ns = self.settings.village_namespace
        provider = self.node.service(PROVIDER_SERVICE)  # e.g. the anchor's PostgreSQL (a plugin's service)
        store: GovernanceStore
        if provider is not None and hasattr(provider, "open_store"):
            store = provider.open_store(ns, self.node.identity.signing_public)
        elif self.data_dir is None:
            return Governance(ns, self.genesis())
        else:
            store = GovStore(self.data_dir / "agents" / "village.sqlite")
        self.store = store
        try:
            store.init(ns, self.genesis())
        except GovernanceError as exc:
            raise ConfigError(f"governance.village_members / village_namespace: {exc}") from exc
        return store.load()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        gov = await trio.to_thread.run_sync(self._open, limiter=self.db_limiter)
        for key, (_version, value) in sorted(gov.config.items()):  # what certificates decided before a restart
            self._apply_config(key, value)
        self.mesh = GovMesh(
            self.node,
            gov,
            self.store,
            self.node.identity.signing_key,
            self.settings,
            db_limiter=self.db_limiter,
            on_executed=self._executed,
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.mesh.run)
                task_status.started()
        finally:
            if self.store is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(self.settings.store_timeout_s) as scope:
                    await trio.to_thread.run_sync(self.store.close, limiter=self.db_limiter, abandon_on_cancel=True)
                if scope.cancelled_caught:
                    log.warning(
                        "the governance store did not close within %s s; left behind", self.settings.store_timeout_s
                    )

    async def _executed(self, executed: list[Executed]) -> None:
        for ex in executed:
            a = ex.proposal.action
            if ex.value is Value.YES and a.kind is ActionKind.CONFIG:
                # the core's LWW table decides which certified value stands (by (epoch, round))
                self._apply_config(a.key, self.gov.config[a.key][1])

    def _apply_config(self, key: str, value: Any) -> None:
        why = self.check_config(key, value)
        if why is not None:
            log.warning("certified config change %s = %r not applied: %s", key, value, why)
            self.refused.append({"key": key, "value": value, "reason": why})
            del self.refused[:-MAX_REFUSALS_KEPT]
            return
        section_name, _, name = key.partition(".")
        cls = _section_class(section_name)
        assert cls is not None
        current: Any = self.node.config.section(cls)
        new = _rebuilt(cls, current, name, value)
        self.node.set_config(self.node.config.with_sections(new))
        self.applied[key] = value
        log.info("certified config change applied: %s = %r", key, value)

    def check_config(self, key: str, value: Any) -> str | None:
        """Why ``key = value`` may not be adopted by vote (None: it may)."""
        if key not in self.settings.votable_keys:
            return f"{key} is not one of governance.votable_keys ({', '.join(self.settings.votable_keys)})"
        section_name, _, name = key.partition(".")
        cls = _section_class(section_name)
        if cls is None:
            return f"no settings section [{section_name}] on this node"
        try:
            _rebuilt(cls, self.node.config.section(cls), name, value)
        except ConfigError as exc:
            return str(exc)
        return None

    def blocked_terms(self) -> list[str]:
        have = self.gov.policy.get(BLOCKED_TERMS_POLICY)
        if have is None or not isinstance(have[1], list):
            return []
        return [t for t in have[1] if isinstance(t, str) and t]

    def status(self) -> dict[str, Any]:
        if self.mesh is None:
            raise GovernanceError("village governance is not running")
        return {**self.mesh.status(), "applied": dict(self.applied), "refused": list(self.refused)}


def _section_class(name: str) -> type | None:
    from node.settings import all_sections, section_name

    return next((c for c in all_sections() if section_name(c) == name), None)


def _rebuilt(cls: type, current: Any, name: str, value: Any) -> Any:
    """``current`` with ``name = value``, through the loader's checks (as if read from the config file)."""
    from node.settings import build_section

    raw = {f.name: getattr(current, f.name) for f in dataclasses.fields(cls)}
    if name not in raw:
        raise ConfigError(f"{name}: unknown key")
    raw = {k: list(v) if isinstance(v, tuple) else v for k, v in raw.items()}
    raw[name] = value
    return build_section(cls, raw)
