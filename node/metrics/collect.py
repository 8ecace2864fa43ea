"""The node's counters as Prometheus metric families, read at scrape time (nothing is counted twice).

:func:`take_snapshot` reads what the node already keeps, through the same in-process status methods the control
socket serves (``node.status``, ``rag.stats``, ``twin.status``, ``mcp.status``, ``mailbox.status``,
``vote.status``) plus the mesh core's bounded structures and the governance core's counters; :class:`NodeCollector`
(a ``prometheus_client`` custom collector) turns one snapshot into families; :func:`render` writes the text
exposition. Names: ``village_<subsystem>_<what>``, counters end in ``_total``, units in the name (``_bytes``,
``_seconds``). Of the subsystems' status answers only the figures :data:`SOURCES` names are exported (an allowlist:
those answers also describe what the user does); the anchor's route leaves out the twin altogether
(:data:`PERSONAL_SUBSYSTEMS`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from node import __version__
from node.errors import NodeError
from node.logs import repeated_lines_dropped

if TYPE_CHECKING:
    from node.control.rpc import Registry as MethodRegistry
    from node.node import Node

# Mesh counters (node.status "counters") that count frames dropped, exported as village_frames_dropped_total{cause}.
DROP_CAUSES = frozenset(
    {
        "malformed",
        "duplicate",
        "stale",
        "own_echo",
        "bad_signature",
        "unverified_sender",
        "key_mismatch",
        "binding_mismatch",
        "not_for_us",
        "decrypt_failed",
        "replayed",
        "unknown_type",
        "relay_queue_full",
        "nested_fragment",
        "oversize",
        "rate_limited",
        "handshake_refused",
        "leave_replayed",
        "pin_conflict",
        "unencodable",
        "link_queue_dropped",
        "ping_refused",
        "courier_refused",
    }
)
# (status method, subsystem, {key: is a counter}): the only figures of each answer that are exported. An explicit
# allowlist, never "every number": these answers also carry what the user does (how much the twin learned, battery,
# temperature, bits per token, how many private documents the knowledge base holds), and a scrape can leave the
# device (a remote Prometheus, the anchor's /metrics). Exported: health, errors, bounds and what is already public.
SOURCES: tuple[tuple[str, str, Mapping[str, bool]], ...] = (
    # RAG: documents shared with the mesh only (peers can count them anyway), the model and index state.
    ("rag.stats", "rag", {"shared_documents": False, "model_loaded": False, "index_rebuilds": True}),
    # Twin: its errors and its disk use against the bound, nothing it learned, nor the battery/temperature readings.
    (
        "twin.status",
        "twin",
        {"learn_errors": True, "deferred_dropped": True, "state_bytes": False, "max_disk_bytes": False},
    ),
    ("mcp.status", "mcp", {"tools": False, "calls": True, "audit_records": True}),  # not the memory graph's size
    ("mailbox.status", "mailbox", {}),  # its client/serving counters: see _mailbox
    (
        "vote.status",
        "governance",
        {"epoch": False, "evidence": False, "proposals": False, "certificates": False, "electorate_members": False},
    ),
)
# Subsystems whose figures describe the device's user: never exported through a listener that may be remote.
PERSONAL_SUBSYSTEMS = frozenset({"twin"})
log = logging.getLogger("village.metrics")

# The classic text format, which every Prometheus server reads; our names need none of 1.0.0's UTF-8 escaping.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class Snapshot:
    """What one scrape reads: the answers of the status methods, the mesh core's bounded sizes and extras."""

    status: Mapping[str, Any]  # node.status
    sources: Mapping[str, Any] = field(default_factory=dict)  # subsystem -> its status method's answer
    failed: tuple[str, ...] = ()  # subsystems whose status could not be read this time
    bounds: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # structure -> (size, bound)
    governance_events: Mapping[str, int] = field(default_factory=dict)  # the governance core's counters
    labelled_counters: Mapping[str, tuple[str, str, Mapping[str, int]]] = field(default_factory=dict)
    # ^ extra families from a front end: name -> (help, label name, {label value: count}), e.g. the gateway's
    log_lines_dropped: Mapping[str, int] = field(default_factory=dict)  # logger -> repeated lines dropped


async def take_snapshot(
    node: Node, registry: MethodRegistry | None = None, *, exclude: frozenset[str] = frozenset()
) -> Snapshot:
    """Read every counter ``node`` keeps, now, through ``registry`` (default: the control socket's, or one built for
    this node), leaving out the subsystems in ``exclude``. A subsystem whose status fails is named in ``failed``."""
    if registry is None:
        from node.control.methods import build_registry

        registry = node.control_server.registry if node.control_server is not None else build_registry(node)

    async def no_notify(_method: str, _params: Any) -> None:
        return None

    status = node.status()
    sources: dict[str, Any] = {}
    failed: list[str] = []
    for method, subsystem, _figures in SOURCES:
        if method not in registry.methods or subsystem in exclude:
            continue
        m = registry.lookup(method)
        try:
            sources[subsystem] = await m.handler(registry.bind_params(m, {}), no_notify)
        except NodeError:  # e.g. rag.stats while the knowledge base is off: its metrics are absent, `up` says so
            failed.append(subsystem)
        except Exception:  # a failing subsystem costs its own figures, never the scrape (`<subsystem>_up 0`)
            log.exception("metrics: reading %s failed", method)
            failed.append(subsystem)
    core = node.core
    bounds: Mapping[str, tuple[int, int]] = {}
    try:
        bounds = core.bounded_sizes() if core is not None else {}
    except Exception:
        log.exception("metrics: reading the mesh's bounded structures failed")
        failed.append("bounds")
    events: Mapping[str, int] = {}
    try:
        events = _governance_counters(node)
    except Exception:
        log.exception("metrics: reading the governance counters failed")
        failed.append("governance_events")
    return Snapshot(
        status=status,
        sources=sources,
        failed=tuple(failed),
        bounds=bounds,
        governance_events=events,
        log_lines_dropped=repeated_lines_dropped(),
    )


def _governance_counters(node: Node) -> dict[str, int]:
    from node.agents.service import AgentsService

    service = node.service("agents")
    gov = getattr(service, "gov", None) if isinstance(service, AgentsService) else None
    return dict(gov.counters) if gov is not None else {}


def _name(*parts: str) -> str:
    return _NAME_UNSAFE.sub("_", "_".join(p for p in parts if p))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float]]:
    """Every number (bools as 0/1) in nested dicts, with its key path; lists and strings are skipped."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
        return
    number = _number(value)
    if number is not None and path:
        yield path, number


class NodeCollector:
    """A ``prometheus_client`` collector over one :class:`Snapshot`."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        yield from self._core()
        yield from self._bounds()
        for _method, subsystem, figures in SOURCES:
            up = GaugeMetricFamily(
                _name("village", subsystem, "up"), f"Whether the {subsystem} status could be read (1) or not (0)."
            )
            if subsystem in self.snapshot.sources:
                up.add_metric([], 1.0)
                yield up
                yield from self._source(subsystem, self.snapshot.sources[subsystem], figures)
            elif subsystem in self.snapshot.failed:
                up.add_metric([], 0.0)
                yield up
        for source in sorted(set(self.snapshot.failed) - {subsystem for _m, subsystem, _f in SOURCES}):
            up = GaugeMetricFamily(
                _name("village", source, "up"), f"Whether the {source} could be read (1) or not (0)."
            )
            up.add_metric([], 0.0)
            yield up
        if self.snapshot.governance_events:
            yield _labelled(
                "village_governance_events",
                "Governance core events (votes, proposals, certificates, evidence) by kind, refusals included.",
                "event",
                self.snapshot.governance_events,
            )
        if self.snapshot.log_lines_dropped:
            yield _labelled(
                "village_log_lines_dropped",
                "Log lines dropped as a repeat of the last one (py-libp2p's auto-connector state), by logger.",
                "logger",
                self.snapshot.log_lines_dropped,
            )
        for name, (help_text, label, values) in self.snapshot.labelled_counters.items():
            yield _labelled(name, help_text, label, values)

    def _core(self) -> Iterator[Metric]:
        s = self.snapshot.status
        info = InfoMetricFamily("village_node", "This node's identity and version.")
        info.add_metric([], {"peer_id": str(s["peer_id"]), "version": __version__})
        yield info
        for name, key, help_text in (
            ("village_uptime_seconds", "uptime_s", "Seconds since the node started."),
            ("village_links", "links", "Open links (all transports)."),
            ("village_peers_reachable", "peers", "Peers reachable now (directly or over the mesh)."),
            ("village_routes", "routes", "Destinations in the path table."),
            ("village_pending_private", "pending_private", "Private messages held for peers not reachable yet."),
        ):
            g = GaugeMetricFamily(name, help_text)
            g.add_metric([], float(s[key]))
            yield g
        outbox = GaugeMetricFamily("village_outbox_messages", "Outbox messages by state.", None, ["state"])
        for state, n in sorted(s.get("outbox", {}).items()):
            outbox.add_metric([str(state)], float(n))
        yield outbox
        counters: Mapping[str, int] = s.get("counters", {})
        for key in ("frames_in", "frames_out"):
            c = CounterMetricFamily(_name("village", key), f"Mesh frames {key.removeprefix('frames_')} (all links).")
            c.add_metric([], float(counters.get(key, 0)))
            yield c
        yield _labelled(
            "village_frames_dropped",
            "Frames dropped or refused, by cause (hostile traffic and full queues included).",
            "cause",
            {k: v for k, v in counters.items() if k in DROP_CAUSES},
        )
        for key, value in sorted(counters.items()):
            if key not in DROP_CAUSES and key not in ("frames_in", "frames_out"):
                c = CounterMetricFamily(_name("village_mesh", key), f"Mesh counter {key} (see node/routing/events.py).")
                c.add_metric([], float(value))
                yield c
        for key, value in sorted(s.get("app_counters", {}).items()):
            c = CounterMetricFamily(_name("village_app", key), f"Request/response app protocol: {key}.")
            c.add_metric([], float(value))
            yield c
        yield _labelled(
            "village_contained",
            "Frames or timer tasks a failure ended, by cause (error:<class> or bug:<class>; bug should stay 0).",
            "cause",
            s.get("contained", {}),
        )
        per_transport: dict[str, CounterMetricFamily] = {}
        for transport, values in sorted(s.get("transport_counters", {}).items()):
            for key, value in sorted(values.items()):
                name = _name("village_transport", key)
                family = per_transport.get(name)
                if family is None:
                    family = per_transport[name] = CounterMetricFamily(
                        name, f"Transport counter {key}.", labels=["transport"]
                    )
                family.add_metric([str(transport)], float(value))
        yield from per_transport.values()

    def _bounds(self) -> Iterator[Metric]:
        if not self.snapshot.bounds:
            return
        size = GaugeMetricFamily(
            "village_bounded_size",
            "Current size of each structure remote input can grow (entries, or bytes if the name ends in _bytes).",
            labels=["structure"],
        )
        limit = GaugeMetricFamily("village_bounded_limit", "The bound of each structure.", None, ["structure"])
        for structure, (n, bound) in sorted(self.snapshot.bounds.items()):
            size.add_metric([structure], float(n))
            limit.add_metric([structure], float(bound))
        yield size
        yield limit

    def _source(self, subsystem: str, answer: Any, figures: Mapping[str, bool]) -> Iterator[Metric]:
        if subsystem == "mailbox":
            yield from _mailbox(answer)
            return
        if subsystem == "mcp" and isinstance(answer, Mapping):
            failures = answer.get("failures", {})
            yield _labelled("village_mcp_failures", "MCP tool calls that failed, by cause.", "cause", failures)
        if subsystem == "governance" and isinstance(answer, Mapping):
            answer = {
                "epoch": answer.get("epoch", 0),
                "evidence": answer.get("evidence", 0),
                "proposals": len(answer.get("proposals", ())),
                "certificates": len(answer.get("certificates", ())),
                "electorate_members": len(answer.get("electorate", ())),
            }
        if not isinstance(answer, Mapping):
            return
        for key, is_counter in figures.items():
            value = _number(answer.get(key))
            if value is None:
                continue
            if is_counter:
                c = CounterMetricFamily(_name("village", subsystem, key), f"{subsystem}: {key} (counter).")
                c.add_metric([], value)
                yield c
            else:
                g = GaugeMetricFamily(_name("village", subsystem, key), f"{subsystem}: {key}.")
                g.add_metric([], value)
                yield g


def _mailbox(answer: Any) -> Iterator[Metric]:
    if not isinstance(answer, Mapping):
        return
    pending = GaugeMetricFamily(
        "village_mailbox_pending_deposits", "Envelopes waiting to be deposited at an anchor.", labels=["anchor"]
    )
    for a in answer.get("anchors", ()):
        pending.add_metric([str(a["addr"])], float(a["pending_deposits"]))
    yield pending
    for part in ("client", "serving"):
        for path, value in _leaves(answer.get(part) or {}):
            c = CounterMetricFamily(_name("village_mailbox", part, *path), f"Mailbox ({part}): {'_'.join(path)}.")
            c.add_metric([], value)
            yield c


def _labelled(name: str, help_text: str, label: str, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([str(key)], float(value))
    return family


def render(snapshot: Snapshot, *, process: bool = True) -> bytes:
    """The Prometheus text exposition of ``snapshot`` (and this process's CPU, memory and file descriptors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(snapshot))
    if process:
        ProcessCollector(namespace="village", registry=registry)
    return generate_latest(registry)
