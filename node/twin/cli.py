"""`village twin status|suggest|actions|export|forget`: thin clients of the twin.* control methods."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from node.control.client import ControlClient


def _client(args: argparse.Namespace) -> ControlClient:
    from node.cli import _socket

    return ControlClient(_socket(args), timeout_s=120.0)


def _emit(args: argparse.Namespace, data: Any, human: Any) -> None:
    from node.cli import _emit as emit

    emit(args, data, human)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        st = client.call("twin.status")

    def human(d: dict[str, Any]) -> str:
        nn = d.get("neural")
        lines = [
            f"learning: {d['learning']} ({d['reason']})",
            f"learned: {d['messages_learned']} messages, {d['tokens_learned']} tokens, {d['personal_words']} own "
            f"words, {d['personal_trigrams']} trigrams; {d['actions_known']} actions",
            f"recent surprisal: {d['recent_bits_per_token']} bits/token",
            f"neural tier: {nn['params']} params, weight {nn['weight']}, {nn['updates']} updates, gate "
            f"{nn['gate_threshold_bits']} bits (pass rate {nn['gate_pass_rate']})"
            if nn
            else "neural tier: off",
            f"battery: {d['battery_percent']} % external power {d['external_power']}; temperature {d['temp_c']} °C; "
            f"CPU {d['cpu_used_s_this_hour']} s of {d['cpu_budget_s_per_hour']} s this hour",
            f"deferred: {d['deferred_events']} events ({d['deferred_bytes']} bytes, {d['deferred_dropped']} dropped)",
            f"stored: {d['state_path']} {d['state_bytes']} bytes (bound {d['max_disk_bytes']}); shipped prior "
            f"{d['prior_bytes']} bytes",
        ]
        if d.get("load_error"):
            lines.append(f"note: {d['load_error']}")
        if d.get("actions_note"):
            lines.append(f"note: {d['actions_note']}")
        return "\n".join(lines)

    _emit(args, st, human)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.call("twin.suggest", text=args.text, k=args.k)
    _emit(args, out, lambda rows: "\n".join(f"{r['token']}\t{r['p']:.3f}" for r in rows) or "(no suggestion)")
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.call("twin.actions", k=args.k)
    _emit(args, out, lambda rows: "\n".join(f"{r['action']}\t{r['p']:.3f}" for r in rows) or "(nothing learned yet)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.call("twin.export")
    text = json.dumps(out, ensure_ascii=False, indent=1)
    if args.output:
        path = Path(args.output)
        fd_path = path.expanduser()
        fd_path.touch(mode=0o600, exist_ok=True)
        fd_path.chmod(0o600)
        fd_path.write_text(text + "\n", encoding="utf-8")
        print(f"exported to {fd_path} (0600)")
    else:
        print(text)
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    if not args.yes:
        print("this deletes everything the twin learned; run again with --yes")
        return 2
    with _client(args) as client:
        out = client.call("twin.forget")
    _emit(args, out, lambda d: f"erased {d['erased_bytes']} bytes under {d['path']}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``village twin ...`` to the top-level subparsers ``sub``."""
    help_text = "The twin, your personal on-device model: status, suggestions, export, forget."
    twin = sub.add_parser("twin", help=help_text, description=help_text)
    tsub = twin.add_subparsers(
        dest="twin_command", metavar="TWIN_COMMAND", required=True, help="status, suggest, actions, export, forget"
    )

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = tsub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    add("status", cmd_status, "What the twin learned, its sizes on disk, and whether learning is paused and why.")
    p = add("suggest", cmd_suggest, "Next words (or completions of the word being typed) for a partial text.")
    p.add_argument("text", help="the partial text (end it with a space for next words)")
    p.add_argument("-k", type=int, default=3, help="how many (1-10, default 3)")
    p = add("actions", cmd_actions, "The commands you are likely to use next.")
    p.add_argument("-k", type=int, default=3, help="how many (1-10, default 3)")
    p = add("export", cmd_export, "Everything the twin learned, as JSON (printed, or written 0600 to a file).")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p = add("forget", cmd_forget, "Delete every byte the twin learned (state files and memory).")
    p.add_argument("--yes", action="store_true", help="really delete")
