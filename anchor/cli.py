"""`village anchor ...`: run an anchor and manage its API keys.

``village anchor run`` starts node + gateway + stores (as ``village run`` does with ``[anchor] enabled =
true``). ``village anchor keys create|list|revoke`` work on the stores directly (PostgreSQL for the hashed keys,
Redis so a revocation reaches a running gateway at once); they need the services, not a running anchor.

:func:`add_commands` is all ``node.cli`` calls; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import trio

from anchor.gateway.roles import ALL_SCOPES, ROLES
from node.cli_support import EXIT_USAGE, CliError, emit, load_config, ms_to_local, table


def add_commands(
    sub: Any,  # argparse's _SubParsersAction (private type)
    common: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Add ``village anchor`` to the ``village`` parser; ``run`` is node.cli's daemon runner."""
    text = "Run an anchor (node + HTTP gateway + stores) or manage its API keys."
    anchor = sub.add_parser("anchor", parents=[common], help=text, description=text)
    anchor.set_defaults(func=lambda args: _usage(anchor))
    asub = anchor.add_subparsers(dest="anchor_command", metavar="ACTION", help="run or keys")

    text = "Run node + gateway + stores in the foreground until SIGINT/SIGTERM (needs `scripts/services up`)."
    p = asub.add_parser("run", parents=[common], help=text, description=text)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override node.log_level")
    p.set_defaults(func=lambda args: run(args), anchor=True)

    text = "Create, list or revoke the API keys clients trade for access tokens."
    keys = asub.add_parser("keys", parents=[common], help=text, description=text)
    keys.set_defaults(func=lambda args: _usage(keys))
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", help="create, list or revoke")

    text = "Create an API key; prints its ID and the key itself (shown once: only a hash is kept)."
    p = ksub.add_parser("create", parents=[common], help=text, description=text)
    p.add_argument("name", help="a name for the key (who or what uses it)")
    p.add_argument("--role", choices=ROLES, default="user", help="admin, user (default) or node")
    p.add_argument(
        "--scope",
        action="append",
        choices=ALL_SCOPES,
        help="limit the key to this scope (repeat for several; default: every scope of the role)",
    )
    p.set_defaults(func=cmd_keys_create)

    text = "List the API keys (never the keys themselves)."
    p = ksub.add_parser("list", parents=[common], help=text, description=text)
    p.set_defaults(func=cmd_keys_list)

    text = "Revoke an API key: no new tokens, and tokens already issued stop working at once."
    p = ksub.add_parser("revoke", parents=[common], help=text, description=text)
    p.add_argument("key_id", help="the key's ID (from `village anchor keys list`)")
    p.set_defaults(func=cmd_keys_revoke)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _stores(args: argparse.Namespace) -> Any:
    from anchor.run import open_key_admin

    return open_key_admin(load_config(args))


def _run(args: argparse.Namespace, action: Callable[[Any], Any]) -> Any:
    async def main() -> Any:
        async with _stores(args) as admin:
            return await action(admin)

    return trio.run(main)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from anchor.gateway.app import key_out
    from anchor.gateway.auth import check_role_scopes
    from anchor.gateway.errors import GatewayError

    try:
        scopes = check_role_scopes(args.role, args.scope)
    except GatewayError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    info, secret = _run(args, lambda admin: admin.create(args.name, args.role, scopes))
    data = {**key_out(info), "secret": secret}
    emit(
        args,
        data,
        lambda d: (
            f"key ID   {d['key_id']}\nrole     {d['role']} ({' '.join(d['scopes'])})\nAPI key  {d['secret']}\n"
            "Keep the API key now: it is not stored and cannot be shown again."
        ),
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from anchor.gateway.app import key_out

    keys = _run(args, lambda admin: admin.list())
    data = [key_out(k) for k in keys]

    def human(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no API keys yet (create one with `village anchor keys create NAME`)"
        return table(
            [
                [
                    r["key_id"],
                    r["name"],
                    r["role"],
                    " ".join(r["scopes"]),
                    ms_to_local(r["created_at_ms"]),
                    "revoked" if r["revoked"] else "active",
                ]
                for r in rows
            ],
            ["KEY ID", "NAME", "ROLE", "SCOPES", "CREATED", "STATE"],
        )

    emit(args, data, human)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:

    revoked = _run(args, lambda admin: admin.revoke(args.key_id))
    if not revoked:
        raise CliError(f"no active API key {args.key_id!r}")
    emit(args, {"key_id": args.key_id, "revoked": True}, lambda d: f"revoked {d['key_id']}")
    return 0
