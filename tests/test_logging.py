"""One logger namespace, one format: every logger of node/ and anchor/ is ``village.<subsystem>``, and py-libp2p's
records come out of ``village run``'s handler like ours (time, level, subsystem), escaped."""

from __future__ import annotations

import ast
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.textsafe import install_log_handler

ROOT = Path(__file__).resolve().parent.parent
# getLogger calls that are not a logger of ours, and why.
NOT_OURS = {
    ("node/textsafe.py", "root"): "the root logger, where the handler goes",
    ("node/textsafe.py", "name"): "adopt_library_loggers rewires the libraries' loggers",
    ("anchor/stores/postgres.py", "'psycopg.pool'"): "quietens a library's logger (setLevel only)",
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
