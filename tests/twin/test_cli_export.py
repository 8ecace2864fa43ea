"""`village twin export` prints what the twin learned from the user's text and file names: terminal controls in it
are shown escaped, and the JSON values are unchanged."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from node.twin import cli


def test_export_escapes_terminal_controls_and_keeps_the_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    learned: dict[str, Any] = {"topics": ["\x9b31mred", "\u202eevil.pdf", "caf\u00e9"], "words": ["ok\x7f"]}
    monkeypatch.setattr(cli, "call", lambda args, method, params=None: learned)
    assert cli.cmd_export(argparse.Namespace(output=None)) == 0
    out = capsys.readouterr().out
    assert "\x9b" not in out and "\u202e" not in out and "\x7f" not in out
    assert "caf\u00e9" in out  # ordinary text stays readable
    assert json.loads(out) == learned
