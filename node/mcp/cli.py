"""`village mcp [serve|token|status]` and `village memory export|forget|purge-legacy`: thin clients of the daemon.

``village mcp`` (``serve``) is what an MCP client launches: an MCP server on stdin/stdout that forwards to the
running daemon (node.mcp.stdio). Its stdout carries the protocol only; messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from node.cli_support import EXIT_OK, EXIT_USAGE, CliError, CliRegistry, call, emit, load_config, socket_path


def cmd_mcp(args: argparse.Namespace) -> int:
    if args.action == "token":
        from node.tokenfile import ensure_token, token_path

        path = token_path(load_config(args).data_dir)
        token = ensure_token(path)
        emit(args, {"token": token, "path": str(path)}, lambda d: str(d["token"]))
        return EXIT_OK
    if args.action == "status":
        emit(args, call(args, "mcp.status"), _status_text)
        return EXIT_OK
    import trio

    from node.mcp.errors import ToolError
    from node.mcp.stdio import serve_stdio

    try:
        trio.run(serve_stdio, socket_path(args))
    except ToolError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


def _status_text(d: dict[str, Any]) -> str:
    mem = d.get("memory") or {}
    return "\n".join(
        [
            f"tools        {d['tools']}",
            f"calls        {d['calls']} ({sum(d['failures'].values())} failed)",
            f"http         {d['http_url'] or 'off (set mcp.http_listen)'}",
            f"memory       {mem.get('entities', 0)} entities, {mem.get('relations', 0)} relations, "
            f"{mem.get('bytes', 0)} bytes",
        ]
    )


def cmd_memory_export(args: argparse.Namespace) -> int:
    data = call(args, "memory.export")
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if args.output:
        import os

        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        graph = data["knowledge_graph"]
        other = data.get("other")
        also = ""
        if other and "error" in other:
            also = f"; the other store could not be read: {other['error']}"
        elif other:
            og = other["knowledge_graph"]
            also = (
                f'; and, under "other", {len(og["entities"])} entities and {len(og["relations"])} relations of an '
                f"earlier copy in the {other['store']} store ({other['refused']} rows there not readable)"
            )
        print(
            f"wrote {len(graph['entities'])} entities and {len(graph['relations'])} relations "
            f"(from the {data.get('store', '?')} store{also}) to {args.output}"
        )
    else:
        sys.stdout.write(text + "\n")
    return EXIT_OK


def _other_line(other: dict[str, Any] | None) -> str:
    if not other:
        return ""
    if "error" in other:
        return f"; the other store could not be reached, its copy (if any) is still there: {other['error']}"
    return f"; and {other['rows']} rows of an earlier copy in the {other['store']} store"


def cmd_memory_forget(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError("this erases the node's persistent and working memory; add --yes to confirm", EXIT_USAGE)
    data = call(args, "memory.forget")
    emit(
        args,
        data,
        lambda d: (
            f"erased {d['knowledge_graph']['entities']} entities, {d['knowledge_graph']['relations']} "
            f"relations and {d['working_memory']['entries']} scratch entries" + _other_line(d.get("other"))
        ),
    )
    return EXIT_OK


def cmd_memory_purge_legacy(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError("this deletes the graph store's old plaintext memory rows; add --yes to confirm", EXIT_USAGE)
    data = call(args, "memory.purge_legacy")

    def text(d: dict[str, Any]) -> str:
        parts = []
        for which in ("active", "other"):
            got = d.get(which)
            if got is None:
                continue
            if "error" in got:
                parts.append(f"{which} store not reached: {got['error']}")
            else:
                parts.append(f"{which} store: {got['entities']} entities and {got['relations']} relations deleted")
        return "; ".join(parts)

    emit(args, data, text)
    return EXIT_OK


def add_commands(cli: CliRegistry) -> None:
    p = cli.command(
        "mcp",
        cmd_mcp,
        "MCP: `village mcp` serves the running node's tools on stdin/stdout (for an MCP client to launch); "
        "`village mcp token` prints the bearer token of the HTTP endpoint; `village mcp status`.",
    )
    p.add_argument("action", nargs="?", choices=["serve", "token", "status"], default="serve", help="default: serve")
    memory = cli.group("memory", "The node's MCP memory (knowledge graph and scratch): export or erase it.")
    p = memory.command(
        "export",
        cmd_memory_export,
        "Print (or write 0600 to --output) all memory as JSON: the active store's, and under `other` a copy an "
        "earlier [anchor] mcp_memory setting left in the other store.",
    )
    p.add_argument("--output", "-o", help="write to this file (created 0600) instead of stdout")
    p = memory.command("forget", cmd_memory_forget, "Erase the knowledge graph and every client's scratch.")
    p.add_argument("--yes", action="store_true", help="confirm the erasure")
    p = memory.command(
        "purge-legacy",
        cmd_memory_purge_legacy,
        "Delete the MCP memory rows an unreleased version wrote to the anchor's graph store in plaintext (never "
        "served: skipped and counted at load); sealed rows are kept.",
    )
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
