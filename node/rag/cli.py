"""`village rag add|query|remove|share|unshare|stats|feedback|documents`: thin clients of the rag.* control methods.

``add`` resolves paths here (the node may run in another working directory) and, when stderr is a terminal
and ``--json`` is not given, shows a progress bar fed by the node's ``rag.progress`` notifications.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from node.cli_support import CliRegistry, client, emit
from node.control.client import ControlClient
from node.textsafe import safe_text

BAR_WIDTH = 30


def _client(args: argparse.Namespace) -> ControlClient:
    # Ingesting a large folder or loading the model the first time can take long: no read timeout.
    return client(args, timeout_s=None)


class ProgressBar:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = False

    def update(self, method: str, event: Any) -> None:
        if method != "rag.progress" or not isinstance(event, dict):
            return
        done, total = int(event.get("done", 0)), max(1, int(event.get("total", 1)))
        filled = BAR_WIDTH * done // total
        name = safe_text(Path(str(event.get("source", ""))).name)[-30:]
        line = f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {event.get('status', ''):9} {name}"
        self.out.write(line.ljust(BAR_WIDTH + 60)[: BAR_WIDTH + 60])
        self.out.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.out.write("\n")
            self.out.flush()


def cmd_add(args: argparse.Namespace) -> int:
    paths = [str(Path(p).expanduser().resolve()) for p in args.paths]
    show_bar = not args.json and sys.stderr.isatty()
    with _client(args) as client:
        if show_bar:
            bar = ProgressBar(sys.stderr)
            try:
                result = client.call_streaming("rag.add", bar.update, paths=paths, shared=args.shared, progress=True)
            finally:
                bar.close()
        else:
            result = client.call("rag.add", paths=paths, shared=args.shared)

    def human(d: dict[str, Any]) -> str:
        lines = [
            f"{o['status']:9} {safe_text(o['source'])}" + (f"  ({safe_text(o['detail'])})" if o.get("detail") else "")
            for o in d["outcomes"]
            if o["status"] != "unchanged" or args.verbose
        ]
        lines += [f"error     {safe_text(e['path'])}: {safe_text(e['error'])}" for e in d["errors"]]
        lines.append(
            f"{d['files']} files: {d['added']} added, {d['replaced']} replaced, {d['unchanged']} unchanged, "
            f"{d['duplicate']} duplicate, {d['shared']} shared, {d['unshared']} unshared, {d['empty']} empty, "
            f"{d['failed']} failed; {d['chunks']} chunks in "
            f"{d['seconds']:.1f} s"
        )
        return "\n".join(lines)

    emit(args, result, human)
    return 1 if result["failed"] or result["errors"] else 0


def cmd_query(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"text": " ".join(args.text), "k": args.k, "per_doc": not args.all_chunks}
    if args.mode:
        params["mode"] = args.mode
    if args.graph is not None:
        params["graph"] = args.graph
    if args.mesh:
        params["mesh"] = True
    with _client(args) as client:
        result = client.call("rag.query", **params)

    def human(d: dict[str, Any]) -> str:
        if not d["results"]:
            return "no results"
        out = []
        for n, r in enumerate(d["results"], 1):
            trust = "-" if r["trust"] is None else f"{r['trust']:.2f}±{r['uncertainty']:.2f}"
            # Sources, snippets, refs and peers' names come from peers (--mesh): escaped for the terminal.
            origin = f"  from peer {safe_text(r['origin_peer'])}" if r.get("origin_peer") else ""
            ref, source = safe_text(r.get("ref", r["id"])), safe_text(r["source"])
            out.append(f"{n:2}. [{ref}] {source}  score {r['score']:.3f}  trust {trust}{origin}")
            out.append("    " + safe_text(" ".join(r["snippet"].split())))
        for peer in d.get("peers", []):  # --mesh: one line per peer asked
            who = f"{safe_text(peer['peer_id'])} ({safe_text(peer['nickname'])})"
            out.append(f"peer {who}: {safe_text(peer['status'])}, {peer['hits']} hits")
        return "\n".join(out)

    emit(args, result, human)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    target = args.target
    params: dict[str, Any]
    if target.isdigit() and not Path(target).exists():
        params = {"id": int(target)}
    else:
        params = {"source": str(Path(target).expanduser().resolve()) if "://" not in target else target}
    with _client(args) as client:
        result = client.call("rag.remove", **params)
    emit(args, result, lambda d: f"removed {d['documents']} documents ({d['chunks']} chunks)")
    return 0


def _target_params(target: str) -> dict[str, Any]:
    if target.isdigit() and not Path(target).exists():
        return {"id": int(target)}
    return {"source": str(Path(target).expanduser().resolve()) if "://" not in target else target}


def cmd_share(args: argparse.Namespace) -> int:
    method = "rag.share" if args.rag_command == "share" else "rag.unshare"
    with _client(args) as client:
        result = client.call(method, **_target_params(args.target))
    word = "shared" if result["shared"] else "unshared"
    emit(args, result, lambda d: f"{d['documents']} documents now {word} ({d['changed']} changed)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.call("rag.stats")
    emit(args, result, lambda d: "\n".join(f"{k:18} {v}" for k, v in d.items()))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.call("rag.feedback", ref=args.id, verdict=args.verdict)

    def human(d: dict[str, Any]) -> str:
        s, c = d["source"], d["chunk"]
        return (
            f"{safe_text(s['source'])}: reputation {s['reputation']:.3f} "
            f"(alpha {s['alpha']:.2f}, beta {s['beta']:.2f})\n"
            f"result {d['id']}: trust {c['trust']:.3f}, uncertainty {c['uncertainty']:.3f}"
        )

    emit(args, result, human)
    return 0


def cmd_documents(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.call("rag.documents", limit=args.limit, offset=args.offset)
    emit(
        args,
        result,
        lambda docs: (
            "\n".join(
                f"{d['id']:6}  {d['n_chunks']:4} chunks  {'shared ' if d['shared'] else ''}{safe_text(d['source'])}"
                for d in docs
            )
            or "no documents"
        ),
    )
    return 0


def add_commands(cli: CliRegistry) -> None:
    """Add ``village rag ...`` (the rag plugin's ``cli`` hook)."""
    rag = cli.group("rag", "The local knowledge base: add files, query, remove, stats, feedback.")
    add = rag.command

    p = add("add", cmd_add, "Ingest files and folders (text, Markdown, HTML, PDF); shows progress on a terminal.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (folders recursively)")
    p.add_argument("--shared", action="store_true", help="mark the documents shared (peers may query them)")
    p.add_argument("--verbose", "-v", action="store_true", help="also list unchanged files")
    p = add("query", cmd_query, "Search the knowledge base; shows source, score, trust and a snippet.")
    p.add_argument("text", nargs="+", help="the question or keywords")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--mode", choices=["hybrid", "bm25", "dense"], help="retriever (default: rag.mode)")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, help="knowledge-graph expansion on/off")
    p.add_argument("--all-chunks", action="store_true", help="allow several chunks of one document")
    p.add_argument("--mesh", action="store_true", help="also ask reachable peers (their shared documents)")
    p = add("remove", cmd_remove, "Remove a document by id, or every document from a path (file or folder).")
    p.add_argument("target", help="document id, or a path / URI")
    p = add("share", cmd_share, "Mark a document (by id) or every document from a path shared with peers.")
    p.add_argument("target", help="document id, or a path / URI")
    p = add("unshare", cmd_share, "Mark a document (by id) or every document from a path not shared.")
    p.add_argument("target", help="document id, or a path / URI")
    add("stats", cmd_stats, "Show document, chunk and index counts.")
    p = add("feedback", cmd_feedback, "Mark a result good or bad (updates its source's reputation).")
    p.add_argument("id", help="result id shown by `village rag query` (<peer>:<claim> for a --mesh peer result)")
    p.add_argument("verdict", choices=["good", "bad"], help="good or bad")
    p = add("documents", cmd_documents, "List stored documents.")
    p.add_argument("--limit", type=int, default=100, help="how many (default 100)")
    p.add_argument("--offset", type=int, default=0, help="skip this many")
