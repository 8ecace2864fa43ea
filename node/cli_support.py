"""What a `village` command group needs, in public: registration, the control-socket call, output, the config.

A plugin's ``cli`` hook receives a :class:`CliRegistry` and adds its commands::

    def add_commands(cli: CliRegistry) -> None:
        twin = cli.group("twin", "The personal model: status, export, erase.")
        p = twin.command("status", cmd_status, "Show the twin's size and surprisal.")
        p.add_argument(...)

    def cmd_status(args: argparse.Namespace) -> int:
        emit(args, call(args, "twin.status"), lambda d: f"{d['bytes']} bytes")
        return EXIT_OK

Every command gets the common options (``--data-dir``, ``--config``, ``--socket``, ``--json``). Errors: raise
:class:`CliError` (printed as ``village: message``, exit code 1, or 2 for usage); control-socket and node errors are
reported the same way by :func:`node.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.control.client import ControlClient
from node.errors import ConfigError
from node.textsafe import safe_json, safe_text

if TYPE_CHECKING:
    from node.settings import Config

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A command failed: the message is printed as ``village: message`` and ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


class CommandGroup:
    """``village <group> ACTION ...``: add actions (or nested groups) to it."""

    def __init__(self, parser: argparse.ArgumentParser, common: argparse.ArgumentParser, dest: str) -> None:
        self.parser = parser
        self._common = common
        self._sub = parser.add_subparsers(dest=dest, metavar="ACTION")
        self._dest = dest
        self._names: list[str] = []

    def command(self, name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = self._sub.add_parser(name, parents=[self._common], help=help, description=help)
        p.set_defaults(func=func)
        self._names.append(name)
        self._sub.help = ", ".join(self._names)
        return p

    def group(self, name: str, help: str) -> CommandGroup:
        p: argparse.ArgumentParser = self._sub.add_parser(name, parents=[self._common], help=help, description=help)
        self._names.append(name)
        self._sub.help = ", ".join(self._names)
        return _group(p, self._common, f"{self._dest}_{name}")


def _group(parser: argparse.ArgumentParser, common: argparse.ArgumentParser, dest: str) -> CommandGroup:
    group = CommandGroup(parser, common, dest)

    def usage(_: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    parser.set_defaults(func=usage)
    return group


class CliRegistry:
    """The ``village`` parser as plugins see it: top-level commands and command groups."""

    def __init__(self, subparsers: Any, common: argparse.ArgumentParser) -> None:
        self._sub = subparsers  # argparse's _SubParsersAction (a private type)
        self.common = common

    def command(self, name: str, func: Command, help: str) -> argparse.ArgumentParser:
        """``village <name> ...``: one command."""
        p: argparse.ArgumentParser = self._sub.add_parser(name, parents=[self.common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    def group(self, name: str, help: str) -> CommandGroup:
        """``village <name> ACTION ...``: a group of actions; without an action it prints its help (exit 2)."""
        p: argparse.ArgumentParser = self._sub.add_parser(name, parents=[self.common], help=help, description=help)
        return _group(p, self.common, f"{name.replace('-', '_')}_command")


# ---------------------------------------------------------------- helpers for commands
def load_config(args: argparse.Namespace) -> Config:
    """The configuration ``--config``/``--data-dir`` (or the environment) point at; exit 2 if it is invalid."""
    from node.settings import load_config as load_settings  # on first use: commands that need no config stay light

    try:
        return load_settings(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None))
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}", EXIT_USAGE) from None


def socket_path(args: argparse.Namespace) -> Path:
    """The running node's control socket: ``--socket``, else the configuration's."""
    socket: Path | None = getattr(args, "socket", None)
    return socket if socket else load_config(args).socket_path


def client(args: argparse.Namespace, *, timeout_s: float | None = 30.0) -> ControlClient:
    """A control-socket client (a context manager) for several calls or a streaming call."""
    return ControlClient(socket_path(args), timeout_s=timeout_s)


def call(args: argparse.Namespace, method: str, **params: Any) -> Any:
    """One JSON-RPC call to the running node; its errors become ``village: ...`` with exit code 1."""
    with ControlClient(socket_path(args)) as c:
        return c.call(method, **params)


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON with ``--json``, else ``human(data)`` (nothing if it is empty)."""
    if getattr(args, "json", False):
        print(safe_json(json.dumps(data, indent=2, ensure_ascii=False)))  # same values, controls escaped
    else:
        text = human(data)
        if text:
            print(text)


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Columns padded to their widest cell, a header line first. Cells hold peers' nicknames, IDs and texts: shown
    with visible escapes (node/textsafe.py)."""
    rows = [[safe_text(c) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def ms_to_local(ms: int) -> str:
    """A wall-clock time in milliseconds as local ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
