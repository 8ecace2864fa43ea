"""`village`'s full command line (:func:`node.cli.main` comes here unless the fast path took the command).

``init``, ``id`` and ``config`` work on the data dir directly; ``run`` starts the daemon; every other command
is a thin client of the running node's control socket (one JSON-RPC call each). Every command takes
``--json`` for machine-readable output.

Exit codes: 0 success; 1 the operation failed (node not running, peer unknown, start failed); 2 bad usage or
bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import __version__
from node.cli_support import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    CliRegistry,
    call,
    emit,
    ms_to_local,
    socket_path,
    table,
)
from node.cli_support import load_config as config_for
from node.control.client import ControlClient
from node.control.errors import ClientError
from node.control.quick import status_text
from node.errors import ConfigError, IdentityError, NodeError, StartupError
from node.textsafe import safe_json, safe_text

if TYPE_CHECKING:
    from node.plugin import Plugin


# ---------------------------------------------------------------- commands
def cmd_init(args: argparse.Namespace) -> int:
    from node.identity import create_identity, identity_exists, load_identity

    cfg = config_for(args)
    if identity_exists(cfg.data_dir) and args.exist_ok:
        ident = load_identity(cfg.data_dir)
        created = False
    else:
        ident = create_identity(cfg.data_dir)
        created = True
    data = {
        "peer_id": ident.peer_id_hex,
        "fingerprint": ident.fingerprint,
        "data_dir": str(cfg.data_dir),
        "created": created,
    }
    emit(
        args,
        data,
        lambda d: (
            f"{'Created' if d['created'] else 'Found'} identity in {d['data_dir']}\n"
            f"peer ID      {d['peer_id']}\nfingerprint  {d['fingerprint']}"
        ),
    )
    return EXIT_OK


def cmd_id(args: argparse.Namespace) -> int:
    from node.identity import load_identity

    cfg = config_for(args)
    ident = load_identity(cfg.data_dir)
    data = {
        "peer_id": ident.peer_id_hex,
        "fingerprint": ident.fingerprint,
        "signing_public_key": ident.signing_public.hex(),
        "noise_public_key": ident.noise_public.hex(),
    }
    emit(args, data, lambda d: f"peer ID      {d['peer_id']}\nfingerprint  {d['fingerprint']}")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from node.settings import check_config, config_as_dict, example_toml

    if args.action == "example":
        print(example_toml(), end="")
        return EXIT_OK
    cfg = config_for(args)
    data = config_as_dict(cfg)
    if args.action == "check":
        check_config(cfg)
        print(f"configuration OK ({cfg.source or 'built-in defaults'})")
        return EXIT_OK
    print(json.dumps(data, indent=2))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from node.daemon import run_command

    return run_command(args)


def cmd_status(args: argparse.Namespace) -> int:
    emit(args, call(args, "node.status"), status_text)
    return EXIT_OK


def cmd_peers(args: argparse.Namespace) -> int:
    if args.action == "forget":
        if not args.peer:
            raise SystemExit("usage: village peers forget PEER_ID")
        result = call(args, "peers.forget", peer=args.peer)
        emit(args, result, lambda r: f"pin of {r['peer_id']} " + ("forgotten" if r["forgotten"] else "was not set"))
        return EXIT_OK
    if args.pins:

        def pins_human(pins: list[dict[str, Any]]) -> str:
            if not pins:
                return "no identity pins yet (a peer is pinned once a Noise handshake with it completes)"
            rows = [[p["peer_id"], p["nickname"] or "-", p["signing_public_key"][:16] + "…"] for p in pins]
            return table(rows, ["PEER", "NICKNAME", "SIGNING KEY"])

        emit(args, call(args, "peers.pins"), pins_human)
        return EXIT_OK
    if args.wait:
        with ControlClient(socket_path(args), timeout_s=args.timeout + 10) as client:
            info = client.call("peers.wait", peer=args.wait, timeout_s=args.timeout, direct=args.direct)
        emit(args, info, lambda p: f"{p['peer_id']} ({safe_text(p['nickname'])}) is reachable via {p['transport']}")
        return EXIT_OK

    def human(peers: list[dict[str, Any]]) -> str:
        if not peers:
            return "no peers known yet"
        rows = [
            [
                p["peer_id"],
                p["nickname"],
                "yes" if p["reachable"] else "no",
                p["transport"] or "-",
                p["address"] or "-",
                f"{p['last_seen_s_ago']:.0f}s",
                "yes" if p["session"] else "no",
                f"{p['rtt_ms']:.1f} ms" if p.get("rtt_ms") is not None else "-",
            ]
            for p in peers
        ]
        return table(rows, ["PEER", "NICKNAME", "REACHABLE", "TRANSPORT", "ADDRESS", "LAST SEEN", "SESSION", "RTT"])

    emit(args, call(args, "peers.list"), human)
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    if args.wait is None:
        emit(args, call(args, "messages.send", peer=args.peer, text=args.text), lambda d: d["id"])
        return EXIT_OK
    with ControlClient(socket_path(args), timeout_s=args.wait + 10) as client:
        sent = client.call("messages.send", peer=args.peer, text=args.text)
        state = client.call("messages.wait", id=sent["id"], timeout_s=args.wait)
    emit(args, state, lambda d: f"{d['id']}  {d['state']}{'  ' + safe_text(d['detail']) if d['detail'] else ''}")
    return EXIT_OK if state["state"] == "delivered" else EXIT_FAIL


def cmd_broadcast(args: argparse.Namespace) -> int:
    emit(args, call(args, "messages.broadcast", text=args.text), lambda d: d["id"])
    return EXIT_OK


def cmd_message(args: argparse.Namespace) -> int:
    emit(
        args,
        call(args, "messages.status", id=args.id),
        lambda d: f"{d['id']}  {d['state']}{'  ' + safe_text(d['detail']) if d['detail'] else ''}",
    )
    return EXIT_OK


def _inbox_line(m: dict[str, Any]) -> str:
    kind = "private" if m["private"] else "public "
    nickname, sender, text = safe_text(m["nickname"]), safe_text(m["from"][:8]), safe_text(m["text"])
    return f"[{ms_to_local(m['received_at_ms'])}] {kind} {nickname} ({sender}): {text}"


def cmd_inbox(args: argparse.Namespace) -> int:
    if not args.follow:
        msgs = call(args, "inbox.list", limit=args.limit)
        emit(args, msgs, lambda ms: "\n".join(_inbox_line(m) for m in ms) or "inbox is empty")
        return EXIT_OK
    with ControlClient(socket_path(args), timeout_s=None) as client:
        recent = client.call("inbox.list", limit=args.limit)
        last = recent[-1]["seq"] if recent else 0
        for m in recent:
            _print_inbox(args, m)
        for method, params in client.stream("inbox.follow", after_seq=last):
            if method == "inbox.message":
                _print_inbox(args, params)
    return EXIT_OK


def _print_inbox(args: argparse.Namespace, m: dict[str, Any]) -> None:
    print(safe_json(json.dumps(m, ensure_ascii=False)) if args.json else _inbox_line(m), flush=True)


def cmd_outbox(args: argparse.Namespace) -> int:
    def human(msgs: list[dict[str, Any]]) -> str:
        if not msgs:
            return "outbox is empty"
        rows = [
            [m["id"], m["to"], m["state"], ms_to_local(m["created_at_ms"]), m["text"][:40], m["detail"] or "-"]
            for m in msgs
        ]
        return table(rows, ["ID", "TO", "STATE", "ACCEPTED", "TEXT", "DETAIL"])

    emit(args, call(args, "outbox.list", state=args.state, limit=args.limit), human)
    return EXIT_OK


def cmd_mailbox(args: argparse.Namespace) -> int:
    if args.wait_deposited or args.wait_acked:
        with ControlClient(socket_path(args), timeout_s=args.timeout + 10) as client:
            data = client.call(
                "mailbox.wait", deposited=args.wait_deposited, acked=args.wait_acked, timeout_s=args.timeout
            )
    else:
        data = call(args, "mailbox.status")

    def human(d: dict[str, Any]) -> str:
        lines = [f"anchor {a['addr']}: {a['pending_deposits']} envelope(s) to deposit" for a in d["anchors"]]
        for part in ("client", "serving"):
            if d[part]:
                lines.append(f"{part}: " + ", ".join(f"{k} {v}" for k, v in d[part].items()))
        return "\n".join(lines) or "no mailbox anchors configured and not serving a mailbox"

    emit(args, data, human)
    return EXIT_OK


def cmd_route(args: argparse.Namespace) -> int:
    def human(routes: list[dict[str, Any]]) -> str:
        if not routes:
            return "no paths known yet"
        rows = [
            [
                r["destination"],
                r["nickname"] or "-",
                str(r["hops"]),
                r["next_hop"] or "-",
                r["transport"] or "-",
                f"{r['cost']:.2f}",
                r["source"],
                ",".join(h[:8] for h in r["via"]) or "-",
                f"{r['expires_in_s']:.0f}s",
            ]
            for r in routes
        ]
        return table(
            rows, ["DESTINATION", "NICKNAME", "HOPS", "NEXT HOP", "TRANSPORT", "COST", "LEARNED", "VIA", "TTL"]
        )

    emit(args, call(args, "routes.list"), human)
    return EXIT_OK


def cmd_connect(args: argparse.Namespace) -> int:
    emit(args, call(args, "peers.connect", addr=args.addr), lambda d: f"connected: {d['link_id']} to {d['remote']}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    emit(args, call(args, "node.stop"), lambda d: f"stopping (drain deadline {d['deadline_s']:g} s)")
    return EXIT_OK


def cmd_ble(args: argparse.Namespace) -> int:
    from node.transports.ble.doctor import diagnose

    diagnosis = diagnose(config_for(args).ble)  # action "doctor", the only one
    emit(args, diagnosis.to_json(), lambda _d: diagnosis.report())
    return EXIT_OK if diagnosis.usable else EXIT_FAIL


def cmd_rpc(args: argparse.Namespace) -> int:
    try:
        params = json.loads(args.params) if args.params else {}
    except ValueError as exc:
        raise CliError(f"PARAMS must be a JSON object: {exc}", EXIT_USAGE) from None
    if not isinstance(params, dict):
        raise CliError("PARAMS must be a JSON object", EXIT_USAGE)
    print(safe_json(json.dumps(call(args, args.method, **params), indent=2, ensure_ascii=False)))
    return EXIT_OK


# ---------------------------------------------------------------- parser
def build_parser(plugins: Sequence[Plugin] | None = None) -> argparse.ArgumentParser:
    """The `village` parser: the core's commands, then each plugin's (``plugins``: those of the daemon)."""
    parser = argparse.ArgumentParser(
        prog="village", description="AIVillage node: a peer-to-peer daemon that speaks the BitChat mesh protocol."
    )
    parser.add_argument("--version", action="version", version=f"village {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, help="data directory (default: $VILLAGE_DATA_DIR or the platform's user data dir)"
    )
    common.add_argument("--config", type=Path, help="config file (default: $VILLAGE_CONFIG or <data dir>/config.toml)")
    common.add_argument("--socket", type=Path, help="control socket (default: from the config)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "Create this node's identity (Ed25519 signing key + X25519 Noise key).")
    p.add_argument("--exist-ok", action="store_true", help="succeed (and show it) if an identity exists")
    add("id", cmd_id, "Show this node's peer ID and fingerprint.")
    p = add("run", cmd_run, "Run the node in the foreground until SIGINT/SIGTERM.")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override node.log_level")
    p.add_argument("--log-format", choices=["text", "json"], help="override node.log_format")
    add("status", cmd_status, "Show the running node's identity, uptime, transports and peers.")
    p = add("peers", cmd_peers, "List the peers the running node knows.")
    p.add_argument("--wait", metavar="PEER", help="instead, wait until PEER (ID, fingerprint or nickname) is reachable")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds --wait may take (default 30)")
    p.add_argument("--direct", action="store_true", help="with --wait: until PEER is a direct neighbour (one hop)")
    p.add_argument("--pins", action="store_true", help="instead, list identity pins (keys proven by a handshake)")
    p.add_argument("action", nargs="?", choices=["forget"], help="forget: reset the identity pin of PEER_ID")
    p.add_argument("peer", nargs="?", metavar="PEER_ID", help="with forget: the full peer ID (16 hex digits)")
    p = add("send", cmd_send, "Send an encrypted private message to a peer; prints the message ID.")
    p.add_argument(
        "peer", help="peer ID, fingerprint (or unique prefix) or nickname; a full peer ID may be a peer not seen yet"
    )
    p.add_argument("text", help="message text (at most 255 UTF-8 bytes)")
    p.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=30.0,
        metavar="SECONDS",
        help="wait for the delivery ack (default 30 s); exit 1 unless delivered",
    )
    p = add("broadcast", cmd_broadcast, "Send a signed public message to the mesh; prints the message ID.")
    p.add_argument("text", help="message text")
    p = add("message", cmd_message, "Show the delivery state of a message you sent.")
    p.add_argument("id", help="message ID printed by send or broadcast")
    p = add("inbox", cmd_inbox, "Show received messages (with --follow, keep printing new ones).")
    p.add_argument("--follow", "-f", action="store_true", help="keep running and print messages as they come")
    p.add_argument("--limit", type=int, default=50, help="how many recent messages to show (default 50)")
    p = add("outbox", cmd_outbox, "Show private messages accepted for sending and their state (kept on disk).")
    p.add_argument("--state", choices=["pending", "delivered", "failed"], help="only messages in this state")
    p.add_argument("--limit", type=int, default=50, help="how many recent messages to show (default 50)")
    p = add("mailbox", cmd_mailbox, "Show the offline-peer mailbox: anchors, deposits, fetches (or wait for them).")
    p.add_argument("--wait-deposited", type=int, default=0, metavar="N", help="wait until N envelopes were deposited")
    p.add_argument("--wait-acked", type=int, default=0, metavar="N", help="wait until N fetched envelopes were acked")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a wait may take (default 30)")
    add("route", cmd_route, "Show the path table: how this node reaches each peer it knows a way to.")
    p = add("connect", cmd_connect, "Connect to a peer over BetaNet (libp2p; QUIC, or TCP with Noise).")
    p.add_argument(
        "addr",
        help="multiaddr ending in /p2p/<peer id>, e.g. /ip4/192.0.2.7/udp/4001/quic-v1/p2p/12D3Koo... (falls back "
        "to TCP on the same port) or /ip4/192.0.2.7/tcp/4001/p2p/12D3Koo...",
    )
    add("stop", cmd_stop, "Stop the running node gracefully.")
    p = add("config", cmd_config, "Print the example config, check the config, or show the effective one.")
    p.add_argument("action", choices=["example", "check", "show"], help="what to do")
    p = add("ble", cmd_ble, "Bluetooth LE: `village ble doctor` says what BLE needs here and what is missing.")
    p.add_argument(
        "action",
        choices=["doctor"],
        help="doctor: check the kernel, BlueZ, D-Bus, the adapter, rfkill, permissions and libraries; exit 1 "
        "when BLE cannot work",
    )
    p = add("rpc", cmd_rpc, "Call any control method (see `village rpc rpc.methods`).")
    p.add_argument("method", help="JSON-RPC method name")
    p.add_argument("params", nargs="?", help="params as a JSON object")
    registry = CliRegistry(sub, common)
    if plugins is None:
        from node.daemon import load_plugins

        plugins = load_plugins()
    for plugin in plugins:
        if plugin.cli is not None:
            plugin.cli(registry)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"village: {exc}", file=sys.stderr)
        return exc.code
    except (ClientError, IdentityError, StartupError) as exc:
        print(f"village: {safe_text(exc)}", file=sys.stderr)  # may name peers (their nicknames)
        return EXIT_FAIL
    except ConfigError as exc:
        print(f"village: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NodeError as exc:
        print(f"village: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    return code
