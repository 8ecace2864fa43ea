"""Config: defaults, every validation error names its key, the example file matches the code."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.settings import Config, all_sections, config_from_mapping, example_toml, load_config, section_name

REPO = Path(__file__).resolve().parents[1]
PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"  # a well-formed libp2p peer ID
RELAYED = f"/ip4/192.0.2.7/tcp/4001/p2p/{PEER}/p2p-circuit/p2p/{PEER}"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(data_dir=tmp_path, env={})
    assert cfg == Config(data_dir=tmp_path)
    assert cfg.mesh.default_ttl == 7 and cfg.wire.max_payload_bytes == 1_179_760
    assert cfg.socket_path == tmp_path / "control.sock"
    assert cfg.source is None


def test_example_file_is_the_generated_one_and_parses_to_defaults() -> None:
    text = (REPO / "configs" / "node.example.toml").read_text()
    assert text == example_toml(), "regenerate with: village config example > configs/node.example.toml"
    cfg = config_from_mapping(tomllib.loads(text), data_dir=Path("/x"))
    assert cfg == Config(data_dir=Path("/x"))
    for cls in all_sections():
        name = section_name(cls)
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text.split(f"[{name}]")[1], f"{name}.{f.name} undocumented"


def test_file_values_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[node]\nnickname = "pi-shelf"\n[mesh]\nannounce_interval_s = 30\n[wire]\nfragment_max_assemblies = 16\n'
    )
    cfg = load_config(path, data_dir=tmp_path, env={})
    assert cfg.node.nickname == "pi-shelf"
    assert cfg.mesh.announce_interval_s == 30.0 and isinstance(cfg.mesh.announce_interval_s, float)
    assert cfg.wire.fragment_max_assemblies == 16
    assert cfg.source == path


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[mesh]\nannounce_interval = 3\n", r"mesh\.announce_interval: unknown key"),
        ("[meshh]\n", r"\[meshh\]: unknown section"),
        ("[mesh]\ndefault_ttl = 9\n", r"mesh\.default_ttl: expected a value from 1 to 7, got 9"),
        ("[mesh]\ndefault_ttl = 2.5\n", r"mesh\.default_ttl: expected a whole number"),
        ('[mesh]\nannounce_interval_s = "15"\n', r"mesh\.announce_interval_s: expected a number"),
        ('[node]\nlog_level = "loud"\n', r"node\.log_level: expected one of 'debug', 'info'"),
        ("[node]\nnickname = 5\n", r"node\.nickname: expected a string"),
        ("[control]\nmax_connections = true\n", r"control\.max_connections: expected a whole number"),
        ("[wire]\nmax_route_hops = 300\n", r"wire\.max_route_hops: expected a value from 0 to 255"),
        ("[rag]\nembed_batch_tokens = 100\n", r"rag\.embed_batch_tokens: expected a value from 256"),
        ("mesh = 3\n", r"\[mesh\]: expected a table"),
        ("[node\n", r"not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, data_dir=tmp_path, env={})


def test_nickname_byte_limit() -> None:
    with pytest.raises(ConfigError, match="255 UTF-8 bytes"):
        config_from_mapping({"node": {"nickname": "é" * 200}})


def test_data_dir_precedence(tmp_path: Path) -> None:
    env_dir, file_dir, flag_dir = tmp_path / "env", tmp_path / "file", tmp_path / "flag"
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[node]\ndata_dir = "{file_dir}"\n')
    assert load_config(cfg_file, env={}).data_dir == file_dir
    assert load_config(cfg_file, env={"VILLAGE_DATA_DIR": str(env_dir)}).data_dir == env_dir
    assert load_config(cfg_file, data_dir=flag_dir, env={"VILLAGE_DATA_DIR": str(env_dir)}).data_dir == flag_dir


def test_config_found_in_data_dir_and_via_env(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[node]\nnickname = "from-data-dir"\n')
    assert load_config(data_dir=tmp_path, env={}).node.nickname == "from-data-dir"
    other = tmp_path / "other.toml"
    other.write_text('[node]\nnickname = "from-env"\n')
    assert load_config(data_dir=tmp_path, env={"VILLAGE_CONFIG": str(other)}).node.nickname == "from-env"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_config_is_frozen() -> None:
    cfg = Config(data_dir=Path("/x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mesh.default_ttl = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/nope"]\n', "betanet.listen: not a valid multiaddr list"),
        ('[betanet]\nbootstrap = ["/ip4/127.0.0.1/tcp/4001"]\n', "betanet.bootstrap: '/ip4/127.0.0.1/tcp/4001' is not"),
        ('[betanet]\nbootstrap = ["/dns9/x/p2p/Qm"]\n', "betanet.bootstrap: '/dns9/x/p2p/Qm' is not a multiaddr"),
        (
            f'[betanet]\nrelay = "off"\nbootstrap = ["{RELAYED}"]\n',
            "betanet.bootstrap: .* is a relayed address but betanet.relay is off",
        ),
        ('[betanet]\nauto_connect = "all"\n', "betanet.auto_connect: expected one of 'off', 'peerstore', got 'all'"),
        ('[mailbox]\nanchors = ["/ip4/10.0.0.1/udp/4001/quic-v1"]\n', "mailbox.anchors: .* is not a multiaddr"),
        ('[ble]\nadapter = "bumble"\n', 'ble.bumble_transport: adapter = "bumble" needs'),
        ("[rag]\nchunk_chars = 300\nchunk_overlap_chars = 300\n", r"rag.chunk_overlap_chars: expected less than"),
        ('[anchor]\ngateway_listen = "8000"\n', "anchor.gateway_listen: expected HOST:PORT"),
    ],
)
def test_config_check_refuses_what_a_start_would(tmp_path: Path, toml: str, message: str) -> None:
    """`village config check` (the real CLI) validates every section a start builds, multiaddrs included."""
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "config", "check", "--config", str(bad), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stdout
    assert re.search(message, r.stderr), r.stderr
    good = tmp_path / "good.toml"
    good.write_text(f'[betanet]\nlisten = ["/ip4/127.0.0.1/udp/0/quic-v1"]\nbootstrap = ["{RELAYED}"]\n')
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "config", "check", "--config", str(good), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_the_settings_loader_stays_light() -> None:
    """Client commands load the config: the loader, the core's sections and the plugins' (discovered, anchor
    included) pull in no heavy library."""
    code = "import sys, node.settings as s; s.all_sections(); print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = {"trio", "libp2p", "multiaddr", "platformdirs", "numpy", "onnxruntime", "fastapi", "psycopg", "node.node"}
    assert not heavy & set(out), heavy & set(out)


def _config_in(d: Path, mode: int = 0o600) -> Path:
    path = d / "config.toml"
    path.write_text('[node]\nnickname = "planted"\n')
    path.chmod(mode)
    return path


def test_a_config_others_can_change_is_refused_naming_the_fix(tmp_path: Path) -> None:
    """The config decides what listens where and what MCP may read: only this user (or root) may change it."""
    path = _config_in(tmp_path, 0o666)
    with pytest.raises(ConfigError, match=rf"can be changed by group or others \(mode 0666\).*chmod go-w {path}"):
        load_config(data_dir=tmp_path, env={})
    path.chmod(0o644)
    assert load_config(data_dir=tmp_path, env={}).node.nickname == "planted"


def test_a_config_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """The review's case: a world-writable data dir (anyone could replace config.toml)."""
    d = tmp_path / "data"
    d.mkdir()
    _config_in(d)
    d.chmod(0o777)
    with pytest.raises(ConfigError, match=rf"in {d}, which group or others can write .*chmod go-w {d}"):
        load_config(data_dir=d, env={})
    with pytest.raises(ConfigError, match="chmod go-w"):
        load_config(d / "config.toml", env={})
    d.chmod(0o1777)  # sticky, like /tmp: others cannot replace a file they do not own
    assert load_config(data_dir=d, env={}).node.nickname == "planted"
    d.chmod(0o700)


def test_a_config_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.toml", 0o600)  # reading it would block `village run` for ever
    result: list[BaseException | str] = []

    def load() -> None:
        try:
            load_config(data_dir=tmp_path, env={})
            result.append("loaded")
        except BaseException as exc:  # noqa: BLE001 - the thread hands whatever ended it to the test
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(30)
    assert result, "load_config blocked on a FIFO"
    assert isinstance(result[0], ConfigError) and "is not a regular file" in str(result[0])
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "config", "check", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "is not a regular file" in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's needs root")
def test_a_config_of_another_user_or_group_is_refused(tmp_path: Path) -> None:
    path = _config_in(tmp_path, 0o644)
    os.chown(path, 65534, -1)  # nobody
    with pytest.raises(ConfigError, match=r"belongs to another user \(uid 65534\)"):
        load_config(data_dir=tmp_path, env={})
    os.chown(path, 0, 65534)  # a shared group that may write it
    path.chmod(0o664)
    with pytest.raises(ConfigError, match="can be changed by group or others"):
        load_config(data_dir=tmp_path, env={})
    os.chown(tmp_path, 65534, -1)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"in {tmp_path}, which belongs to another user \(uid 65534\)"):
        load_config(data_dir=tmp_path, env={})
    os.chown(tmp_path, 0, -1)
    assert load_config(data_dir=tmp_path, env={}).node.nickname == "planted"
