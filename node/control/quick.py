"""The fast path of ``village status``: a control-socket call without the config loader, trio or any plugin.

``village`` is started for one JSON-RPC call most of the time; importing the full CLI (argparse, the settings
loader, every plugin's commands) costs more than the call itself. :func:`fast_main` handles the commands listed in
:data:`FAST_COMMANDS` when their arguments are simple enough, and returns ``None`` otherwise so the full CLI
(:mod:`node.cli`) takes over with its exact behaviour (help, usage errors, a config file it must check).

Finding the socket cheaply, first match wins: ``--socket``; else, when no config file applies (no ``--config``,
no ``$VILLAGE_CONFIG``, no ``<data dir>/config.toml``), ``<data dir>/control.sock`` with the data dir from
``--data-dir``, ``$VILLAGE_DATA_DIR`` or the platform's user data dir; else a config file that this user alone can
change (the loader's rule, checked here with one ``stat``) is read for ``control.socket_path`` and ``node.data_dir``
(with :mod:`tomllib` only when the text names either key). Anything else (a doubtful config file, an option this
module does not know) falls back. The file is not validated here: ``village config check`` and ``village run`` do.

Imports: the standard library (json, socket, os; tomllib and platformdirs on demand, never typing) and
:mod:`node.control.client`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from node.control.client import ControlClient
from node.control.errors import ClientError

TYPE_CHECKING = False  # not typing's: importing typing would cost this path more than the call itself
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

FAST_COMMANDS = ("status",)
_VALUE_OPTIONS = ("--socket", "--data-dir", "--config")
MAX_CONFIG_BYTES = 1 << 20  # as node.settings: a larger file is not a node config (the full loader says so)


def status_text(d: Mapping[str, Any]) -> str:
    """``village status`` for people (shared with the full CLI). Every field is escaped: the reply comes from
    whatever serves the socket, and a nickname or address could carry terminal escapes."""
    from node.textsafe import safe_text

    try:
        uptime = f"{float(d['uptime_s']):.0f}"
        transports = ", ".join(safe_text(t) for t in d["transports"]) or "none"
        listening = ", ".join(safe_text(a) for a in d["listen_addrs"]) or "-"
        fields = [safe_text(d[k]) for k in ("peer_id", "fingerprint", "nickname", "peers", "links", "pending_private")]
        data_dir = safe_text(d["data_dir"])
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
        raise ClientError("the node sent a malformed reply") from None
    peer_id, fingerprint, nickname, peers, links, pending = fields
    return "\n".join(
        [
            f"peer ID      {peer_id}",
            f"fingerprint  {fingerprint}",
            f"nickname     {nickname}",
            f"uptime       {safe_text(uptime)} s",
            f"transports   {transports}",
            f"listening    {listening}",
            f"peers        {peers}",
            f"links        {links}",
            f"pending      {pending} private message(s)",
            f"data dir     {data_dir}",
        ]
    )


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, str], bool] | None:
    """``(command, {option: value}, json)`` for a fast command with known options only; None otherwise."""
    if not argv or argv[0] not in FAST_COMMANDS:
        return None
    opts: dict[str, str] = {}
    as_json = False
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg == "--json":
            as_json = True
            continue
        name, eq, value = arg.partition("=")
        if name not in _VALUE_OPTIONS or name in opts:
            return None  # --help, a typo, a repeated option: the full parser decides
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if not value or value.startswith("-"):
            return None  # `--socket --json`: an option where a value belongs; the full parser decides
        opts[name] = value
    return argv[0], opts, as_json


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("aivillage", appauthor=False))


def _private_file(path: Path) -> bool:
    """Whether ``path`` is a regular file owned by this user (or root) that nobody else can write, in directories
    nobody else can write (without a sticky bit); the full loader explains every other case."""
    try:
        st = path.stat()
        dirs = [path.parent.stat(), Path(os.path.realpath(path)).parent.stat()]
    except OSError:
        return False
    me = os.geteuid()
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (me, 0) or st.st_mode & 0o022 or st.st_size > MAX_CONFIG_BYTES:
        return False
    return all(d.st_uid in (me, 0) and (not d.st_mode & 0o022 or d.st_mode & stat.S_ISVTX) for d in dirs)


def find_socket(opts: Mapping[str, str], env: Mapping[str, str]) -> Path | None:
    """The control socket these options and this environment name, or None when only the full loader can say."""
    if "--socket" in opts:
        return Path(opts["--socket"])
    data_arg = opts.get("--data-dir") or env.get("VILLAGE_DATA_DIR") or ""
    config = opts.get("--config") or env.get("VILLAGE_CONFIG") or ""
    data_dir = Path(data_arg).expanduser() if data_arg else None
    config_path = Path(config) if config else (data_dir or _default_data_dir()) / "config.toml"
    if not config and not os.path.lexists(config_path):
        return (data_dir or _default_data_dir()) / "control.sock"
    if not _private_file(config_path):
        return None
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    if not any(word in text for word in ("socket_path", "data_dir", "\\u", "\\U")):
        # Neither key is set (a TOML key is spelt out, or escaped in a quoted key): no need to parse (tomllib costs
        # more than the call).
        return (data_dir or _default_data_dir()) / "control.sock"
    import tomllib

    try:
        raw = tomllib.loads(text)
    except ValueError:
        return None
    control, node = raw.get("control", {}), raw.get("node", {})
    if not isinstance(control, dict) or not isinstance(node, dict):
        return None
    sock, node_dir = control.get("socket_path", ""), node.get("data_dir", "")
    if not isinstance(sock, str) or not isinstance(node_dir, str):
        return None
    if sock:
        return Path(sock) if sock.startswith("/") else None  # relative: the full loader names the key
    if data_dir is None:
        data_dir = Path(node_dir).expanduser() if node_dir else _default_data_dir()
    return data_dir / "control.sock"


def fast_main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int | None:
    """Run a fast command and return its exit code, or None for the full CLI to handle ``argv``."""
    parsed = parse_args(argv)
    if parsed is None:
        return None
    _command, opts, as_json = parsed  # "status", the only fast command
    path = find_socket(opts, os.environ if env is None else env)
    if path is None:
        return None
    try:
        with ControlClient(path) as client:
            data = client.call("node.status")
        if as_json:
            from node.textsafe import safe_json

            text = safe_json(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            text = status_text(data)
    except ClientError as exc:
        from node.textsafe import safe_text

        print(f"village: {safe_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(text)
    return 0
