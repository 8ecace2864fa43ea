"""One logger namespace, one format: every logger of node/ and anchor/ is ``village.<subsystem>``, and py-libp2p's
records come out of ``village run``'s handler like ours (time, level, subsystem), escaped."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing
from libp2p.network.swarm import Swarm

from node.identity import Identity
from node.logs import AUTO_CONNECTOR_LOGGER, LOG_LINK, RepeatedLineFilter, install_log_handler
from node.transports.betanet.transport import BetanetTransport
from tests.test_textsafe import assert_terminal_safe
from tests.transports.test_betanet import LOOPBACK as BETANET_LOOPBACK

ROOT = Path(__file__).resolve().parent.parent
# getLogger calls that are not a logger of ours, and why.
NOT_OURS = {
    ("node/logs.py", "root"): "the root logger, where the handler goes",
    ("node/logs.py", "name"): "adopt_library_loggers rewires the libraries' loggers",
    ("anchor/stores/postgres.py", "'psycopg.pool'"): "quietens a library's logger (setLevel only)",
    ("node/logs.py", "AUTO_CONNECTOR_LOGGER"): "quietens py-libp2p's auto-connector (a filter only)",
}
OUR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<message>.*)$")


def logger_calls() -> Iterator[tuple[str, str]]:
    """(file, argument) of every ``getLogger(...)`` call in node/ and anchor/ (``root`` for no argument)."""
    for path in sorted(p for pkg in ("node", "anchor") for p in (ROOT / pkg).rglob("*.py")):
        for call in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "getLogger":
                arg = ast.unparse(call.args[0]) if call.args else "root"
                yield str(path.relative_to(ROOT)), arg


def is_ours(where: str, arg: str) -> bool:
    return (where, arg) in NOT_OURS or re.fullmatch(r"""['"]village(\.[a-z_]+)*['"]""", arg) is not None


def test_every_logger_is_in_the_village_namespace() -> None:
    calls = list(logger_calls())
    assert len(calls) > 20  # the walk found the modules
    strays = [call for call in calls if not is_ours(*call)]
    assert not strays, f"loggers outside village.*: {strays} (use logging.getLogger('village.<subsystem>'))"


def test_the_namespace_check_refuses_module_and_foreign_names() -> None:
    assert is_ours("node/rag/service.py", "'village.rag'")
    assert not is_ours("node/rag/service.py", "__name__")
    assert not is_ours("node/rag/service.py", "'node.rag'")
    assert not is_ours("node/rag/service.py", "'villager'")


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """py-libp2p's loggers as its import leaves them (LIBP2P_DEBUG unset), whatever earlier tests did; afterwards the
    root logger and the libp2p loggers put back as they were (other tests share the process)."""
    from libp2p.utils.logging import setup_logging  # what ``import libp2p`` runs

    root = logging.getLogger()
    names = ["libp2p", *(n for n in logging.Logger.manager.loggerDict if n.startswith("libp2p."))]
    saved = {n: (logging.getLogger(n).propagate, list(logging.getLogger(n).handlers)) for n in names}
    filters = {n: list(logging.getLogger(n).filters) for n in names}
    root_state = (root.level, list(root.handlers))
    monkeypatch.delenv("LIBP2P_DEBUG", raising=False)
    setup_logging()
    try:
        yield
    finally:
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]
        for name in list(logging.Logger.manager.loggerDict):
            if name == "libp2p" or name.startswith("libp2p."):
                logger = logging.getLogger(name)
                propagate, handlers = saved.get(name, (True, []))
                logger.propagate = propagate
                logger.handlers[:] = handlers
                logger.filters[:] = filters.get(name, [])


def test_libp2p_records_come_out_in_our_format(restore_logging: None) -> None:
    # What py-libp2p's import leaves (LIBP2P_DEBUG unset): records that never reach our handler.
    assert logging.getLogger("libp2p").propagate is False
    # What LIBP2P_DEBUG=tcp:debug leaves: a module logger with its own handler and format, not propagating.
    theirs = io.StringIO()
    tcp = logging.getLogger("libp2p.transport.tcp")
    tcp.addHandler(logging.StreamHandler(theirs))
    tcp.propagate = False

    out = io.StringIO()
    install_log_handler("INFO", out)
    logging.getLogger("libp2p.transport.tcp").warning("dial to %s failed", "mallory\x1b[2J")
    logging.getLogger("libp2p.host.basic_host").warning("stream refused")
    logging.getLogger("village.betanet").info("ours")

    lines = out.getvalue().splitlines()
    parsed = [OUR_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["level"], m["name"], m["message"]) for m in parsed if m] == [
        ("WARNING", "libp2p.transport.tcp", "dial to mallory\\x1b[2J failed"),  # escaped like ours
        ("WARNING", "libp2p.host.basic_host", "stream refused"),
        ("INFO", "village.betanet", "ours"),
    ]
    assert theirs.getvalue() == ""  # once, in our format only


def test_libp2p_keeps_its_level(restore_logging: None) -> None:
    """Adopting libp2p's loggers does not turn on its debug chatter: its own level (WARNING) still filters."""
    out = io.StringIO()
    install_log_handler("DEBUG", out)
    logging.getLogger("libp2p.network.swarm").info("chatter")
    logging.getLogger("libp2p.network.swarm").error("real trouble")
    assert [m["message"] for m in map(OUR_LINE.match, out.getvalue().splitlines()) if m] == ["real trouble"]


def test_an_idle_node_logs_the_auto_connectors_state_once(restore_logging: None) -> None:
    """py-libp2p's auto-connector logs its state at INFO on every cycle, every 10 s under 50 connections: "initiating
    200 new dials" with an empty peerstore. Through our handler an idle node says each line once, and again only when
    it changes. Its real periodic task on our real host, an hour of cycles under the mock clock."""
    out = io.StringIO()
    install_log_handler("INFO", out)
    (quiet,) = [f for f in logging.getLogger(AUTO_CONNECTOR_LOGGER).filters if isinstance(f, RepeatedLineFilter)]
    # (off by default, betanet.auto_connect; "peerstore" runs it as py-libp2p does)
    transport = BetanetTransport(Identity.generate(), dataclasses.replace(BETANET_LOOPBACK, auto_connect="peerstore"))
    connections = [0]

    def dial_lines() -> list[str]:
        return [line for line in out.getvalue().splitlines() if "new dials" in line]

    async def main() -> None:
        swarm = transport._make_host([]).get_network()
        assert isinstance(swarm, Swarm)
        swarm.get_total_connections = lambda: connections[0]  # type: ignore[method-assign]
        connector = swarm.auto_connector
        await connector.start()
        async with trio.open_nursery() as nursery:
            await connector.run_background_task(nursery)
            await trio.sleep(3600)
            assert len(dial_lines()) == 1 and "initiating 200 new dials" in dial_lines()[0]
            assert quiet.dropped >= 2 * 350  # ~360 cycles ran, each with its two state lines
            connections[0] = 1  # a peer connected: the state changed, and is said once
            await trio.sleep(600)
            await connector.stop()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(dial_lines()) == 2 and "initiating 199 new dials" in dial_lines()[1]
    states = [line for line in out.getvalue().splitlines() if "AUTO_CONNECTOR_STATE" in line]
    assert len(states) == 2 and "num_connections=1 " in states[1]
    logging.getLogger(AUTO_CONNECTOR_LOGGER).warning("other lines pass")
    assert out.getvalue().splitlines()[-1].endswith("other lines pass")


def test_the_repeat_filter_never_drops_a_warning(restore_logging: None) -> None:
    """A record above INFO passes even when its text repeats the last one of its kind."""
    out = io.StringIO()
    install_log_handler("INFO", out)
    (quiet,) = [f for f in logging.getLogger(AUTO_CONNECTOR_LOGGER).filters if isinstance(f, RepeatedLineFilter)]
    lg = logging.getLogger(AUTO_CONNECTOR_LOGGER)
    for _ in range(2):
        lg.info("Connections (%d below target)", 3)
    for _ in range(2):
        lg.warning("Connections (%d below target)", 3)
        lg.error("Connections (%d below target)", 3)
    levels = [m["level"] for m in map(OUR_LINE.match, out.getvalue().splitlines()) if m]
    assert levels == ["INFO", "WARNING", "ERROR", "WARNING", "ERROR"]  # only the repeated INFO line dropped
    assert quiet.dropped == 1


def test_the_repeat_filter_passes_a_record_it_cannot_format(restore_logging: None) -> None:
    """A record whose arguments do not fit its format string passes to the handler (which reports it:
    Handler.handleError), never raises from the filter into the caller."""
    out = io.StringIO()
    install_log_handler("INFO", out)
    (quiet,) = [f for f in logging.getLogger(AUTO_CONNECTOR_LOGGER).filters if isinstance(f, RepeatedLineFilter)]
    lg = logging.getLogger(AUTO_CONNECTOR_LOGGER)
    bad = lg.makeRecord(lg.name, logging.INFO, __file__, 1, "Connections (%s %s)", (1,), None)  # too few args
    assert quiet.filter(bad) is True  # passed on to the handler (which reports it), no TypeError into the caller
    lg.info("Connections (%d after the bad one)", 4)
    assert out.getvalue().splitlines()[-1].endswith("Connections (4 after the bad one)")


def test_json_lines_carry_time_level_subsystem_peer_and_link(restore_logging: None) -> None:
    """``--log-format json``: one object per line, ours and py-libp2p's alike, peers' text escaped, the peer a line is
    about (``extra``) and the link being served (the task's LOG_LINK) where known."""
    out = io.StringIO()
    install_log_handler("INFO", out, fmt="json")
    logging.getLogger("libp2p.transport.tcp").warning("dial to %s failed", "mallory\x1b[2J\u202e\n")
    logging.getLogger("village.node").info("new peer %s", "ab" * 8, extra={"peer": "ab" * 8})
    token = LOG_LINK.set("betanet:3")
    try:
        logging.getLogger("village.routing").warning("frame dropped")
    finally:
        LOG_LINK.reset(token)
    try:
        raise ValueError("boom\x1b[2J")
    except ValueError:
        logging.getLogger("village.daemon").exception("failed")

    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # a newline in a message or a traceback stays inside its line
    records = [json.loads(line) for line in lines]
    for r in records:
        assert datetime.fromisoformat(r["time"]).utcoffset() == timedelta(0)
        assert_terminal_safe("\n".join(lines))
    assert [(r["level"], r["subsystem"], r["message"]) for r in records] == [
        ("WARNING", "libp2p.transport.tcp", "dial to mallory\x1b[2J\u202e\n failed"),  # the same text, JSON-escaped
        ("INFO", "village.node", "new peer " + "ab" * 8),
        ("WARNING", "village.routing", "frame dropped"),
        ("ERROR", "village.daemon", "failed"),
    ]
    assert records[1]["peer"] == "ab" * 8 and "peer" not in records[0] and "peer" not in records[2]
    assert records[2]["link"] == "betanet:3" and "link" not in records[1] and "link" not in records[3]
    assert "ValueError: boom" in records[3]["exception"] and "Traceback" in records[3]["exception"]


def test_village_run_logs_json(tmp_path: Path) -> None:
    """A real ``village run --log-format json``: every line it writes, py-libp2p's included, is one JSON object."""
    from tests.test_cli import LOOPBACK_CONFIG, village

    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    # py-libp2p's auto-connector (betanet.auto_connect = "peerstore", the default; said so anyway) logs its state
    # at INFO as it starts.
    config = LOOPBACK_CONFIG + 'auto_connect = "peerstore"\n\n[node]\nnickname = "evil\\u001b[2J"\n'
    (data / "config.toml").write_text(config)
    assert village("init", "--data-dir", str(data)).returncode == 0
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "n.sock"))
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "n.sock"), "VILLAGE_DATA_DIR": str(data)}
    cmd = [sys.executable, "-m", "node.cli", "run", "--log-format", "json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    assert len(records) >= 3
    assert all({"time", "level", "subsystem", "message"} <= set(r) for r in records)
    subsystems = {r["subsystem"] for r in records}
    assert {"village.node", "village.daemon"} <= subsystems
    assert any(s.startswith("libp2p.") for s in subsystems), subsystems  # py-libp2p's lines come through ours
    assert_terminal_safe(err)
    assert any("evil\\u001b[2J" in line for line in err.splitlines())  # the nickname, escaped as JSON
