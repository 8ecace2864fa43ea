"""`village`: the command-line face of a node.

``init``, ``id`` and ``config`` work on the data dir directly; ``run`` starts the daemon; every other command
is a thin client of the running node's control socket (one JSON-RPC call each). Every command takes
``--json`` for machine-readable output.

This module is the entry point and stays light: ``village status`` is answered by :mod:`node.control.quick` (one
socket call; no argparse, config loader, trio or plugin imported), everything else by the full command line in
:mod:`node.cli_commands`, imported only then.

Exit codes: 0 success; 1 the operation failed (node not running, peer unknown, start failed); 2 bad usage or
bad configuration.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: `village status` must not import typing (node/control/quick.py)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from node.plugin import Plugin


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``village`` with ``argv`` (default: the process's arguments); returns the exit code."""
    from node.control.quick import fast_main

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        fast = fast_main(args)
    except BrokenPipeError:
        return 0
    if fast is not None:
        return fast
    from node.cli_commands import main as full_main

    return full_main(args)


def build_parser(plugins: Sequence[Plugin] | None = None) -> argparse.ArgumentParser:
    """The `village` parser: the core's commands, then each plugin's (``plugins``: those of the daemon)."""
    from node.cli_commands import build_parser as build

    return build(plugins)


if __name__ == "__main__":
    sys.exit(main())
