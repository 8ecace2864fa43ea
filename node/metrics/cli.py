"""`village metrics token`: the bearer token of the metrics listener (created 0600 on first use), for Prometheus's
``authorization: {credentials_file: <path>}`` (``--json`` gives the path too). Reads the data dir only: no node
needs to run, so Prometheus can be set up first."""

from __future__ import annotations

import argparse
import sys

from node.cli_support import EXIT_OK, CliRegistry, emit, load_config


def cmd_metrics_token(args: argparse.Namespace) -> int:
    from node.tokenfile import ensure_token, metrics_token_path

    path = metrics_token_path(load_config(args).data_dir)
    token = ensure_token(path, "metrics token")
    if not args.json:
        print(f"(Prometheus: authorization: {{credentials_file: {path}}})", file=sys.stderr)
    emit(args, {"token": token, "path": str(path)}, lambda d: str(d["token"]))
    return EXIT_OK


def add_commands(cli: CliRegistry) -> None:
    metrics = cli.group("metrics", "The Prometheus metrics listener ([metrics] listen).")
    metrics.command(
        "token",
        cmd_metrics_token,
        "Print the bearer token GET /metrics requires (created 0600 in <data dir>/metrics/token on first use).",
    )
