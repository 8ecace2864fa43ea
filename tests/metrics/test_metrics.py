"""Prometheus metrics (node/metrics): every counter the node keeps is exported, read at scrape time from two real
nodes talking over an in-memory link; a real `village run` serves them on a loopback listener, refuses other Hosts
and paths, and every metric the Grafana dashboard (configs/grafana-dashboard.json) plots exists in its scrape."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from node.errors import ConfigError
from node.identity import Identity
from node.logs import AUTO_CONNECTOR_LOGGER, quiet_auto_connector
from node.metrics.collect import DROP_CAUSES, Snapshot, render, take_snapshot
from node.metrics.service import MetricsApp, Scraper
from node.metrics.settings import MetricsSection
from node.node import Node
from node.settings import Config, config_from_mapping
from node.transports.memory import MemoryNetwork
from tests.test_cli import running_daemon, village

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "configs" / "grafana-dashboard.json"
METRIC = re.compile(r"\bvillage_[a-z0-9_]+")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed by prometheus_client's own parser (which rejects malformed text)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def families(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    [(_l, v)] = [(lab, v) for lab, v in found[name] if all(lab.get(k) == x for k, x in labels.items())]
    return v


async def two_nodes(nursery: trio.Nursery, tmp_path: Path) -> tuple[Node, Node]:
    net = MemoryNetwork(seed=3)
    await nursery.start(net.run)
    ta, tb = net.transport("a"), net.transport("b")
    alice = Node(Config(data_dir=tmp_path / "a"), Identity.generate(), transports=[ta], control=False)
    bob = Node(Config(data_dir=tmp_path / "b"), Identity.generate(), transports=[tb], control=False)
    for node in (alice, bob):
        node.config.data_dir.mkdir(mode=0o700)
        await nursery.start(node.run)
    net.connect(ta, tb)
    with trio.fail_after(30):
        core = alice.core
        assert core is not None
        await alice.wait_until(lambda: core.peers.get(bob.identity.peer_id) is not None)
        message_id = alice.send_private(bob.identity.peer_id_hex, "hello")
        await alice.wait_until(lambda: alice.outgoing[message_id].state == "delivered")
    return alice, bob


async def test_every_counter_the_node_keeps_is_exported_at_scrape_time(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    alice, _bob = await two_nodes(nursery, tmp_path)
    text = render(await take_snapshot(alice)).decode()
    found = samples(text)
    assert len(families(text)) == len(set(families(text)))  # no family twice
    status = alice.status()
    assert value(found, "village_links") == 1 == status["links"]
    assert value(found, "village_peers_reachable") == 1
    assert value(found, "village_outbox_messages", state="delivered") == 1
    assert value(found, "village_frames_out_total") == status["counters"]["frames_out"] > 0
    assert value(found, "village_frames_in_total") == status["counters"]["frames_in"] > 0
    assert value(found, "village_node_info", peer_id=alice.identity.peer_id_hex) == 1
    # Every mesh counter, by name: a drop cause, frames in/out, or its own family; app and transport counters too.
    for key, n in status["counters"].items():
        if key in DROP_CAUSES:
            assert value(found, "village_frames_dropped_total", cause=key) == n, key
        elif key not in ("frames_in", "frames_out"):
            assert value(found, f"village_mesh_{key}_total") == n, key
    for key, n in status["app_counters"].items():
        assert value(found, f"village_app_{key}_total") == n, key
    for transport, counters in status["transport_counters"].items():
        for key, n in counters.items():
            assert value(found, f"village_transport_{key}_total", transport=transport) == n, key
    assert alice.core is not None
    for structure, (size, bound) in alice.core.bounded_sizes().items():
        assert value(found, "village_bounded_size", structure=structure) == size
        assert value(found, "village_bounded_limit", structure=structure) == bound
    assert value(found, "village_process_resident_memory_bytes") > 0
    # Read at scrape time: the next scrape sees what happened since.
    before = value(found, "village_frames_out_total")
    alice.broadcast("again")
    after = samples(render(await take_snapshot(alice)).decode())
    assert value(after, "village_frames_out_total") > before


async def test_a_flood_of_scrapes_reads_the_node_once_per_interval(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    alice, _bob = await two_nodes(nursery, tmp_path)
    scraper = Scraper(alice, reuse_s=1.0)
    texts: list[bytes] = []

    async def scrape() -> None:
        texts.append(await scraper.text())

    async with trio.open_nursery() as n:
        for _ in range(50):
            n.start_soon(scrape)
    assert scraper.scrapes == 1 and len(set(texts)) == 1 and len(texts) == 50
    await trio.sleep(1.0)
    await scraper.text()
    assert scraper.scrapes == 2


def test_the_listener_is_loopback_only_unless_allowed() -> None:
    assert MetricsSection().listen == ""  # off by default
    for ok in ("127.0.0.1:9464", "[::1]:0", "localhost:9464", "127.0.0.2:1"):
        MetricsSection(listen=ok)
    with pytest.raises(ConfigError, match=r"^metrics\.listen: '0\.0\.0\.0' is not a loopback address"):
        config_from_mapping({"metrics": {"listen": "0.0.0.0:9464"}})
    with pytest.raises(ConfigError, match=r"^metrics\.listen: expected HOST:PORT"):
        config_from_mapping({"metrics": {"listen": "9464"}})
    cfg = config_from_mapping({"metrics": {"listen": "192.0.2.1:9464", "allow_non_loopback": True}})
    assert cfg.section(MetricsSection).host_port() == ("192.0.2.1", 9464)


def get(url: str, *, method: str = "GET", host: str | None = None, token: str | None = None) -> tuple[int, str, str]:
    headers = {"Host": host} if host else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers["content-type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


def dashboard_metrics() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 10 and all(p["title"] and p["targets"] for p in dash["panels"])
    return {m for e in exprs for m in METRIC.findall(e)}


def test_a_real_daemon_serves_what_the_dashboard_plots() -> None:
    with running_daemon('\n[metrics]\nlisten = "127.0.0.1:0"\n', "vm-") as (data, _proc):
        env = {"VILLAGE_DATA_DIR": str(data)}
        answer = json.loads(village("rpc", "metrics.scrape", env=env).stdout)
        url = answer["url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url), url
        # A bearer token, 0600 in the data dir, printed by `village metrics token`: other local users and processes
        # cannot read the node's figures.
        token_file = data / "metrics" / "token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = village("metrics", "token", env=env).stdout.strip()
        assert token == token_file.read_text().strip() and len(token) >= 40
        assert json.loads(village("metrics", "token", "--json", env=env).stdout)["path"] == str(token_file)
        assert get(url)[0] == 401 and get(url, token="wrong")[0] == 401
        status, ctype, text = get(url, token=token)
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        found = samples(text)
        declared = set(families(text)) | set(found)
        missing = sorted(m for m in dashboard_metrics() if m not in declared)
        assert not missing, f"dashboard panels plot metrics the node does not export: {missing}"
        for subsystem in ("rag", "twin", "mcp", "mailbox", "governance"):  # the plugins' status read too
            assert value(found, f"village_{subsystem}_up") == 1, subsystem
        assert value(found, "village_mesh_contained_bugs_total") == 0
        # The same families over the control socket.
        assert set(families(answer["text"])) == set(families(text))
        # Only GET/HEAD /metrics, and only for a loopback Host (DNS rebinding).
        assert get(url, host="attacker.example", token=token)[0] == 421
        assert get(url.removesuffix("metrics") + "other", token=token)[0] == 404
        assert get(url, method="POST", token=token)[0] == 405
        assert get(url, host="localhost", token=token)[0] == 200
        # Only the allowlisted twin and RAG figures (the twin's health, the RAG's shared count), none of the user's.
        exported = {f for f in families(text) if f.startswith(("village_twin_", "village_rag_"))}
        assert exported == ALLOWED_PERSONAL_FAMILIES, exported


ALLOWED_PERSONAL_FAMILIES = {
    "village_twin_up",
    "village_twin_learn_errors_total",
    "village_twin_deferred_dropped_total",
    "village_twin_state_bytes",
    "village_twin_max_disk_bytes",
    "village_rag_up",
    "village_rag_shared_documents",
    "village_rag_model_loaded",
    "village_rag_index_rebuilds_total",
}


def test_personal_and_behavioural_figures_are_never_exported() -> None:
    """What the twin learned, the battery, the temperature, bits per token, the private document count: none of it
    is in a scrape, whatever the subsystems answer (an allowlist, not "every number")."""
    status = {"peer_id": "p", "uptime_s": 1, "links": 0, "peers": 0, "routes": 0, "pending_private": 0}
    twin = {
        "events": 41,
        "messages_learned": 42,
        "tokens_learned": 43,
        "personal_words": 44,
        "neural": {"updates": 45},
        "recent_bits_per_token": 4.6,
        "battery_percent": 47,
        "temp_c": 48.5,
        "cpu_used_s_this_hour": 49.5,
        "deferred_events": 50,
        "learn_errors": 3,
        "state_bytes": 1000,
    }
    rag = {"documents": 61, "chunks": 62, "shared_documents": 5, "queries": 63, "source_bytes": 64, "db_bytes": 65}
    mcp = {"tools": 7, "calls": 8, "memory": {"entities": 71, "relations": 72, "bytes": 73}, "failures": {}}
    snapshot = Snapshot(status=status, sources={"twin": twin, "rag": rag, "mcp": mcp})
    found = samples(render(snapshot, process=False).decode())
    values = {v for series in found.values() for _labels, v in series}
    assert not values & {41, 42, 43, 44, 45, 4.6, 47, 48.5, 49.5, 50, 61, 62, 63, 64, 65, 71, 72, 73}
    assert value(found, "village_twin_learn_errors_total") == 3 and value(found, "village_twin_state_bytes") == 1000
    assert value(found, "village_rag_shared_documents") == 5 and value(found, "village_mcp_calls_total") == 8


def test_the_dashboard_names_only_village_metrics() -> None:
    names = dashboard_metrics()
    assert {"village_frames_dropped_total", "village_bounded_size", "village_links"} <= names


async def test_one_failing_subsystem_costs_its_own_figures_not_the_scrape(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.control.methods import build_registry
    from node.control.rpc import NoParams, Notify

    alice, _bob = await two_nodes(nursery, tmp_path)
    registry = build_registry(alice)

    async def broken(_: NoParams, notify: Notify) -> object:
        raise RuntimeError("the knowledge base's database is gone")

    async def fine(_: NoParams, notify: Notify) -> object:
        return {"tools": 3, "calls": 4}

    registry.methods.pop("rag.stats", None)
    registry.methods.pop("mcp.status", None)
    registry.add("rag.stats", NoParams, "broken", broken)
    registry.add("mcp.status", NoParams, "fine", fine)
    assert alice.core is not None

    def no_bounds() -> object:
        raise ValueError("a bug in a bound")

    monkeypatch.setattr(alice.core, "bounded_sizes", no_bounds)
    found = samples(render(await take_snapshot(alice, registry)).decode())
    assert value(found, "village_rag_up") == 0 and value(found, "village_bounds_up") == 0
    assert value(found, "village_mcp_up") == 1 and value(found, "village_mcp_calls_total") == 4
    assert value(found, "village_frames_out_total") > 0 and value(found, "village_links") == 1


class FixedScraper(Scraper):
    def __init__(self) -> None:  # no node: the app's checks are under test
        self.scrapes = 0

    async def text(self) -> bytes:
        self.scrapes += 1
        return b"village_up 1\n"


async def asgi_get(app: MetricsApp, host: str, token: str | None = "t0ken") -> int:
    headers = [(b"host", host.encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, object]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": headers}
    await app(scope, receive, send)
    status = sent[0]["status"]
    assert isinstance(status, int)
    return status


async def test_the_host_is_checked_whatever_the_listen_address() -> None:
    """DNS rebinding: only IP literals, localhost and metrics.allowed_hosts, also for a non-loopback listen."""
    app = MetricsApp(FixedScraper(), frozenset({"Prom.Internal"}), "t0ken")
    for host in ("192.0.2.1:9464", "127.0.0.1", "[2001:db8::1]:9464", "[::1]", "localhost:9464", "prom.internal:1"):
        assert await asgi_get(app, host) == 200, host
    for host in ("attacker.example:9464", "192.0.2.1.nip.io", "", "prom.internal.attacker.example"):
        assert await asgi_get(app, host) == 421, host
    assert await asgi_get(app, "192.0.2.1", token=None) == 401
    cfg = config_from_mapping({"metrics": {"allowed_hosts": ["prom.lan"]}})
    assert cfg.section(MetricsSection).allowed_hosts == ("prom.lan",)
    with pytest.raises(ConfigError, match=r"^metrics\.allowed_hosts: 'a b' is not a host name"):
        config_from_mapping({"metrics": {"allowed_hosts": ["a b"]}})


async def test_the_repeated_log_lines_dropped_are_a_metric(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p's auto-connector lines the log filter drops as repeats are counted in the scrape, by logger."""
    logger = logging.getLogger(AUTO_CONNECTOR_LOGGER)
    monkeypatch.setattr(logger, "filters", list(logger.filters))  # the process's logger: restored afterwards
    monkeypatch.setattr(logger, "level", logging.INFO)  # as py-libp2p's import sets it
    quiet = quiet_auto_connector()
    alice, _bob = await two_nodes(nursery, tmp_path)
    assert value(samples(render(await take_snapshot(alice)).decode()), LINES_DROPPED, logger=AUTO_CONNECTOR_LOGGER) == 0
    for _ in range(4):  # the same state four times: said once, three dropped
        logger.info("AUTO_CONNECTOR_STATE: connections=%d", 0)
    logger.info("AUTO_CONNECTOR_STATE: connections=%d", 1)  # a change is said
    found = samples(render(await take_snapshot(alice)).decode())
    assert value(found, LINES_DROPPED, logger=AUTO_CONNECTOR_LOGGER) == 3 == quiet.dropped


LINES_DROPPED = "village_log_lines_dropped_total"
