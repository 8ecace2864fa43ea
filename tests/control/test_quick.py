"""`village status`'s fast path (node/control/quick.py): the same answer as the full CLI from a real daemon, without
importing trio, the config loader, argparse or any plugin, and the full CLI whenever the fast path cannot be sure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.control.quick import find_socket, parse_args
from tests.test_cli import running_daemon, village

# Modules the fast path must not import (each costs tens of milliseconds, or is the daemon's).
HEAVY = (
    "trio",
    "typing",
    "tomllib",  # the test daemon's config.toml names neither key, so it is not parsed
    "platformdirs",  # the data dir is given
    "node.settings",
    "node.cli_commands",
    "node.cli_support",
    "node.daemon",
    "node.plugin",
    "node.identity",
    "argparse",
    "importlib.metadata",
    "logging",
    "pydantic",
    "nacl",
    "libp2p",
    "numpy",
)
PROBE = """
import json, sys
from node.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # argparse's --help
    code = exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def probe(*args: str, env: dict[str, str]) -> tuple[int, list[str], str]:
    """Run ``village ARGS`` through node.cli.main in a fresh interpreter: (exit code, heavy modules loaded, stdout)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], report["heavy"], done.stdout


def test_status_from_a_real_daemon_imports_nothing_heavy() -> None:
    with running_daemon("", "vq-") as (data, _proc):
        env = {"VILLAGE_DATA_DIR": str(data)}
        code, heavy, out = probe("status", "--json", env=env)
        assert code == 0 and heavy == []
        fast = json.loads(out)
        full = json.loads(village("rpc", "node.status", env=env).stdout)  # the full CLI, the same call
        assert fast["peer_id"] == full["peer_id"] and fast["data_dir"] == str(data)
        code, heavy, out = probe("status", env=env)
        assert code == 0 and heavy == [] and f"peer ID      {full['peer_id']}" in out
        # The config file beside the data dir (the test daemon's own, 0600 in a 0700 dir) is read with tomllib only.
        code, heavy, out = probe("status", "--json", "--config", str(data / "config.toml"), env=env)
        assert code == 0 and heavy == [] and json.loads(out)["peer_id"] == full["peer_id"]
        # --help is the full parser's: it imports what it needs and prints the usage.
        code, heavy, out = probe("status", "--help", env=env)
        assert code == 0 and "argparse" in heavy and "usage: village status" in out


def test_not_running_is_reported_like_the_full_cli(tmp_path: Path) -> None:
    sock = tmp_path / "none.sock"
    fast = village("status", "--socket", str(sock))
    assert fast.returncode == 1
    assert fast.stderr == f"village: no node is running on {sock} (start one with `village run`)\n"
    full = village("rpc", "node.status", "--socket", str(sock))
    assert (full.returncode, full.stderr) == (fast.returncode, fast.stderr)


def test_only_known_options_take_the_fast_path() -> None:
    assert parse_args(["status"]) == ("status", {}, False)
    assert parse_args(["status", "--json", "--socket=/s", "--data-dir", "/d"]) == (
        "status",
        {"--socket": "/s", "--data-dir": "/d"},
        True,
    )
    for argv in (
        [],
        ["peers"],
        ["status", "--help"],
        ["status", "--socket"],  # a missing value: the full parser's usage error
        ["status", "--socket", "/a", "--socket", "/b"],
        ["status", "--socket="],
        ["status", "--socket", "--json"],  # the next option is not a value: the full parser's usage error
        ["status", "--data-dir", "-x"],
        ["status", "--config=-"],
        ["status", "--jsn"],
        ["status", "extra"],
    ):
        assert parse_args(argv) is None, argv


def test_socket_found_as_the_loader_would(tmp_path: Path) -> None:
    from node.settings import load_config

    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    assert find_socket({}, {"VILLAGE_DATA_DIR": str(data)}) == data / "control.sock"  # no config file
    assert find_socket({"--socket": "/x.sock"}, {}) == Path("/x.sock")
    assert find_socket({"--data-dir": str(data)}, {"VILLAGE_DATA_DIR": "/elsewhere"}) == data / "control.sock"
    cfg = data / "config.toml"
    cases = [
        '[control]\nsocket_path = "/run/v/c.sock"\n',
        f'[node]\ndata_dir = "{tmp_path / "other"}"\n',
        "[mesh]\n",
        '[control]\n"socket\\u005fpath" = "/run/v/escaped.sock"\n',  # a quoted key with an escape: parsed
        "# data_dir is only mentioned in a comment\n[mesh]\n",
    ]
    for text in cases:
        cfg.write_text(text)
        cfg.chmod(0o600)
        loader = load_config(data_dir=None, env={"VILLAGE_CONFIG": str(cfg)}).socket_path
        assert find_socket({}, {"VILLAGE_CONFIG": str(cfg)}) == loader, text
        loader = load_config(data_dir=data, env={}).socket_path
        assert find_socket({"--data-dir": str(data)}, {}) == loader, text


@pytest.mark.parametrize("mode", [0o602, 0o666])
def test_a_config_others_could_change_goes_to_the_full_loader(tmp_path: Path, mode: int) -> None:
    """The full loader refuses it with a how-to-fix message; the fast path must not trust its socket_path."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('[control]\nsocket_path = "/tmp/someone-elses.sock"\n')
    cfg.chmod(mode)
    assert find_socket({"--config": str(cfg)}, {}) is None
    done = village("status", "--config", str(cfg), "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "can be changed by group or others" in done.stderr


def test_a_config_in_a_directory_others_can_write_goes_to_the_full_loader(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cfg = shared / "config.toml"
    cfg.write_text("[mesh]\n")
    cfg.chmod(0o600)
    assert find_socket({"--config": str(cfg)}, {}) is None
