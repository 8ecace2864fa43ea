"""`village anchor ...`: run an anchor and manage its API keys.

``village anchor run`` starts node + gateway + stores (as ``village run`` does with ``[anchor] enabled =
true``). ``village anchor keys create|list|revoke`` work on the stores directly (PostgreSQL for the hashed keys,
Redis so a revocation reaches a running gateway at once); they need the services, not a running anchor.

:func:`add_commands` is the anchor plugin's ``cli`` hook; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from anchor.gateway.roles import ALL_SCOPES, ROLES
from anchor.settings import AnchorSection
from node.cli_support import EXIT_USAGE, CliError, CliRegistry, emit, load_config, ms_to_local, table

if TYPE_CHECKING:
    from node.settings import Config


def add_commands(cli: CliRegistry) -> None:
    """Add ``village anchor ...`` (the anchor plugin's ``cli`` hook)."""
    anchor = cli.group("anchor", "Run an anchor (node + HTTP gateway + stores) or manage its API keys.")
    p = anchor.command(
        "run",
        cmd_run,
        "Run node + gateway + stores in the foreground until SIGINT/SIGTERM (needs `scripts/services up`).",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override node.log_level")
    p.add_argument("--log-format", choices=["text", "json"], help="override node.log_format")

    keys = anchor.group("keys", "Create, list or revoke the API keys clients trade for access tokens.")
    p = keys.command(
        "create",
        cmd_keys_create,
        "Create an API key; prints its ID and the key itself (shown once: only a hash is kept).",
    )
    p.add_argument("name", help="a name for the key (who or what uses it)")
    p.add_argument("--role", choices=ROLES, default="user", help="admin, user (default) or node")
    p.add_argument(
        "--scope",
        action="append",
        choices=ALL_SCOPES,
        help="limit the key to this scope (repeat for several; default: every scope of the role but rag:private)",
    )
    keys.command("list", cmd_keys_list, "List the API keys (never the keys themselves).")
    p = keys.command(
        "revoke", cmd_keys_revoke, "Revoke an API key: no new tokens, and tokens already issued stop working at once."
    )
    p.add_argument("key_id", help="the key's ID (from `village anchor keys list`)")


def cmd_run(args: argparse.Namespace) -> int:
    """The node daemon with the gateway (as ``village run`` with ``[anchor] enabled = true``)."""
    from node.daemon import run_command

    def enable(cfg: Config) -> Config:
        return cfg.with_sections(dataclasses.replace(cfg.section(AnchorSection), enabled=True))

    return run_command(args, configure=enable)


def _stores(args: argparse.Namespace) -> Any:
    from anchor.run import open_key_admin

    return open_key_admin(load_config(args))


def _run(args: argparse.Namespace, action: Callable[[Any], Any]) -> Any:
    import trio  # here: `village` builds this group for every command, and most never need trio

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
