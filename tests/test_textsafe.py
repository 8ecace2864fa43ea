"""Remote-controlled strings on the terminal: a peer whose nickname and message carry ``ESC [ 2 J`` (clear screen)
and U+202E (right-to-left override) is shown with visible escapes by `village peers`, `village inbox` and
`village rag query`, never interpreted; ``--json`` output stays valid JSON with the same values."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import pytest
import trio

from node.cli import main
from node.identity import Identity
from node.logs import install_log_handler
from node.node import Node
from node.rag import cli as rag_cli
from node.settings import Config, NodeSection
from node.textsafe import safe_json, safe_text
from node.transports.memory import MemoryNetwork

CLEAR = "\x1b[2J"
RLO = "\u202e"
EVIL_NICK = f"mallory{CLEAR}{RLO}gnp.exe"
EVIL_TEXT = f"hello{CLEAR}\x9b31m{RLO}evil\rfake line\nsecond\x07"
# What must never reach a terminal from a peer: C0 (bar none), DEL, C1, bidi controls, line separators.
UNSAFE = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + [
    *"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u2028\u2029"
]


def assert_terminal_safe(text: str) -> None:
    # Newlines the CLI itself puts between lines are fine; every other unsafe character is not.
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in UNSAFE and c != "\n"})
    assert not bad, f"unescaped {bad} in {text!r}"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (CLEAR, "\\x1b[2J"),
        (RLO + "gnp.exe", "\\u202egnp.exe"),
        ("a\rb\nc\td\x00e\x7f", "a\\x0db\\x0ac\\x09d\\x00e\\x7f"),
        ("\x9b31m\x85", "\\x9b31m\\x85"),  # 8-bit CSI, NEL
        ("\u2066x\u2069\u200f\u2028", "\\u2066x\\u2069\\u200f\\u2028"),
        ("a\\x1b", "a\\\\x1b"),  # a literal backslash cannot pass for an escape
        ("Zoë 日本 🙂 ĳ", "Zoë 日本 🙂 ĳ"),  # every script and emoji pass
        ("x\ud800y\udfff", "x\\ud800y\\udfff"),  # lone surrogates: UTF-8 cannot carry them
    ],
)
def test_safe_text_escapes_controls_visibly(raw: str, shown: str) -> None:
    assert safe_text(raw) == shown
    safe_text(raw).encode()  # always UTF-8 encodable
    assert_terminal_safe(safe_text(raw))


def test_safe_json_keeps_the_values_and_escapes_what_json_leaves_raw() -> None:
    value = {"nick": EVIL_NICK, "text": EVIL_TEXT + "\u2029\ud800", "plain": "Zoë"}
    raw = json.dumps(value, ensure_ascii=False)
    assert RLO in raw and "\x9b" in raw  # json.dumps alone lets these through
    safe = safe_json(raw)
    assert json.loads(safe) == value
    safe.encode()  # a lone surrogate is a \\u escape, not an unencodable character
    assert_terminal_safe(safe)
    assert "Zoë" in safe


async def test_cli_prints_a_hostile_peers_announce_and_message_escaped(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real announce and a real private message over an in-memory link, read through `village peers` and
    `village inbox` (the CLI's own code, against the node's real control socket), and the log `village run` writes
    (its own handler: the node logs a new peer's nickname)."""
    log_out = io.StringIO()
    root = logging.getLogger()
    level_before = root.level
    handler = install_log_handler("INFO", log_out)
    try:
        await _hostile_peer_through_the_cli(nursery, tmp_path, capsys)
    finally:
        root.removeHandler(handler)
        root.setLevel(level_before)
    logged = log_out.getvalue()
    assert "new peer" in logged and "(mallory\\x1b[2J\\u202egnp.exe)" in logged
    assert_terminal_safe(logged)


async def _hostile_peer_through_the_cli(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = MemoryNetwork(seed=5)
    await nursery.start(net.run)
    base = Path(tmp_path)
    ta, tb = net.transport("a"), net.transport("b")
    alice = Node(
        Config(node=NodeSection(nickname=EVIL_NICK), data_dir=base / "a"), Identity.generate(), transports=[ta]
    )
    bob = Node(Config(data_dir=base / "b"), Identity.generate(), transports=[tb])
    for node in (alice, bob):
        node.config.data_dir.mkdir(mode=0o700)
        await nursery.start(node.run)
    net.connect(ta, tb)
    assert alice.core is not None and bob.core is not None
    with trio.fail_after(30):
        await bob.wait_until(lambda: bob.core.peers.get(alice.identity.peer_id) is not None)  # type: ignore[union-attr]
        await alice.wait_until(lambda: alice.core.peers.get(bob.identity.peer_id) is not None)  # type: ignore[union-attr]
        message_id = alice.send_private(bob.identity.peer_id_hex, EVIL_TEXT)
        await alice.wait_until(lambda: alice.outgoing[message_id].state == "delivered")
    sock = ["--socket", str(bob.config.socket_path)]

    def village(*args: str) -> str:
        capsys.readouterr()
        assert main([*args, *sock]) == 0
        return capsys.readouterr().out

    peers = await trio.to_thread.run_sync(village, "peers")
    inbox = await trio.to_thread.run_sync(village, "inbox")
    for out in (peers, inbox):
        assert_terminal_safe(out)
        assert "mallory\\x1b[2J\\u202egnp.exe" in out
    assert "hello\\x1b[2J\\x9b31m\\u202eevil\\x0dfake line\\x0asecond\\x07" in inbox
    # --json: the same values for programs, and still nothing a terminal would act on.
    for command in ("peers", "inbox"):
        out = await trio.to_thread.run_sync(village, command, "--json")
        assert_terminal_safe(out)
        got = json.loads(out)
        assert EVIL_NICK in [entry["nickname"] for entry in got]
    assert [m["text"] for m in json.loads(out)] == [EVIL_TEXT]
    nursery.cancel_scope.cancel()


def test_rag_query_output_escapes_peer_supplied_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """`village rag query --mesh` shows sources, snippets and names that peers sent: escaped."""
    result = {
        "results": [
            {
                "id": 1,
                "ref": f"p:{CLEAR}",
                "source": f"{RLO}fdp.exe",
                "score": 0.5,
                "trust": None,
                "uncertainty": None,
                "snippet": f"text {CLEAR} more",
                "origin_peer": f"ab{CLEAR}",
            }
        ],
        "peers": [{"peer_id": "ab", "nickname": EVIL_NICK, "status": f"ok{CLEAR}", "hits": 1}],
    }

    class FakeClient:  # the control socket's answer; the formatting under test is the CLI's own
        def __enter__(self) -> FakeClient:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def call(self, method: str, **params: object) -> object:
            return result

    original = rag_cli._client
    rag_cli._client = lambda args: FakeClient()  # type: ignore[assignment,return-value]
    try:
        args = argparse.Namespace(text=["q"], k=10, all_chunks=False, mode=None, graph=None, mesh=True)
        args.json = False
        assert rag_cli.cmd_query(args) == 0
    finally:
        rag_cli._client = original
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert "\\u202efdp.exe" in out and "mallory\\x1b[2J" in out and "ok\\x1b[2J" in out
