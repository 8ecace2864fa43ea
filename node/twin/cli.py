"""`village twin status|suggest|actions|export|forget`: thin clients of the twin.* control methods."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from node.cli_support import EXIT_OK, EXIT_USAGE, CliError, CliRegistry, call, emit
from node.textsafe import safe_json, safe_text


def _age(seconds: int) -> str:
    """An age for a person: seconds, minutes, hours or days, whole."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def cmd_status(args: argparse.Namespace) -> int:
    st = call(args, "twin.status", wait_s=args.wait)

    def human(d: dict[str, Any]) -> str:
        nn = d.get("neural")
        loaded = d.get("language_model", {}).get("loaded", True)
        lines = [
            f"learning: {d['learning']} ({d['reason']})",
            f"learned: {d['messages_learned']} messages, {d['tokens_learned']} tokens, {d['personal_words']} own "
            f"words, {d['personal_trigrams']} trigrams; {d['actions_known']} actions",
            f"recent surprisal: {d['recent_bits_per_token']} bits/token",
            f"neural tier: {nn['params']} params, weight {nn['weight']}, {nn['updates']} updates, gate "
            f"threshold {nn['gate_threshold_bits']} bits (message gate, token pass rate {nn['gate_pass_rate']})"
            if nn
            else "neural tier: off"
            if loaded
            else "language model: not loaded (it loads at the first text, suggestion, context or export)",
            f"battery: {d['battery_percent']} % external power {d['external_power']}; temperature {d['temp_c']} °C; "
            f"CPU {d['cpu_used_s_this_hour']} s of {d['cpu_budget_s_per_hour']} s this hour",
            f"queued: {d['queued_events']} events; deferred: {d['deferred_events']} events "
            f"({d['deferred_bytes']} bytes, {d['deferred_dropped']} dropped)",
            f"stored: {d['state_path']} {d['state_bytes']} bytes (bound {d['max_disk_bytes']})"
            + (f"; shipped prior {d['prior_bytes']} bytes" if d.get("prior_bytes") is not None else ""),
        ]
        if d.get("load_error"):
            lines.append(f"note: {d['load_error']}")
        if d.get("save_error"):
            lines.append(f"note: {d.get('save_failures')} saves failed in a row (the file is older): {d['save_error']}")
        if nn and nn.get("reset"):
            lines.append(f"note: neural tier: {nn['reset']}")
        if nn and nn.get("gate_reset"):
            lines.append(f"note: message gate: {nn['gate_reset']}")
        lm = d.get("language_model") or {}
        if lm.get("loaded") is False and lm.get("loads_at_save"):
            why = lm["loads_at_save"]  # (what the saved part holds that a real one does not)
            lines.append(f"note: the language model loads at the next save (its saved part is not copied: {why})")
        if d.get("actions_note"):
            lines.append(f"note: {d['actions_note']}")
        aside = d.get("set_aside")
        if aside:
            newest, state = safe_text(aside["files"][0]["name"]), Path(d["state_path"])
            lines.append(
                f"note: {aside['count']} state file(s) set aside, {aside['bytes']} bytes, not used (newest {newest}, "
                f"last written {_age(aside['files'][0]['age_s'])} ago); to restore one, stop the node and `mv {newest} "
                f'{state.name}` in {state.parent} (README: "Where it is stored"); `village twin forget` deletes them'
            )
        return "\n".join(lines)

    emit(args, st, human)
    return EXIT_OK


def cmd_suggest(args: argparse.Namespace) -> int:
    out = call(args, "twin.suggest", text=args.text, k=args.k)
    emit(args, out, lambda rows: "\n".join(f"{r['token']}\t{r['p']:.3f}" for r in rows) or "(no suggestion)")
    return EXIT_OK


def cmd_actions(args: argparse.Namespace) -> int:
    out = call(args, "twin.actions", k=args.k)
    emit(args, out, lambda rows: "\n".join(f"{r['action']}\t{r['p']:.3f}" for r in rows) or "(nothing learned yet)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    out = call(args, "twin.export")
    # The same JSON values, with DEL, C1 and bidi controls escaped: words and topics come from the user's text and
    # file names, which may hold terminal controls (printed raw, a C1 CSI or a bidi override reached the terminal).
    text = safe_json(json.dumps(out, ensure_ascii=False, indent=1))
    if args.output:
        path = Path(args.output).expanduser()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(text + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc}") from None
        print(f"exported to {path} (0600)")
    else:
        print(text)
    return EXIT_OK


def cmd_forget(args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError("this deletes everything the twin learned; run again with --yes", EXIT_USAGE)
    out = call(args, "twin.forget")
    emit(args, out, lambda d: f"erased {d['erased_bytes']} bytes under {d['path']}")
    return EXIT_OK


def add_commands(cli: CliRegistry) -> None:
    """Add ``village twin ...`` (the twin plugin's ``cli`` hook)."""
    twin = cli.group("twin", "The twin, your personal on-device model: status, suggestions, export, forget.")
    add = twin.command
    p = add("status", cmd_status, "What the twin learned, its sizes on disk, and whether learning is paused and why.")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds (0-25) for messages already sent to be learned (default: answer at once)",
    )
    p = add("suggest", cmd_suggest, "Next words (or completions of the word being typed) for a partial text.")
    p.add_argument("text", help="the partial text (end it with a space for next words)")
    p.add_argument("-k", type=int, default=3, help="how many (1-10, default 3)")
    p = add("actions", cmd_actions, "The commands you are likely to use next.")
    p.add_argument("-k", type=int, default=3, help="how many (1-10, default 3)")
    p = add("export", cmd_export, "Everything the twin learned, as JSON (printed, or written 0600 to a file).")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p = add("forget", cmd_forget, "Delete every byte the twin learned (state files and memory).")
    p.add_argument("--yes", action="store_true", help="really delete")
