"""The `[ble]` config section: defaults, bare booleans for `enabled`, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import ConfigError
from node.settings import config_as_dict, load_config
from node.transports.ble.settings import BleSection


def _load(tmp_path: Path, toml: str) -> BleSection:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    return load_config(path, data_dir=tmp_path, env={}).ble


def test_defaults(tmp_path: Path) -> None:
    ble = load_config(data_dir=tmp_path, env={}).ble
    assert ble == BleSection()
    assert (ble.enabled, ble.adapter, ble.power_mode) == ("auto", "bluez", "auto")
    assert (ble.bumble_transport, ble.nickname) == ("", "")
    assert ble.max_central_links == 6 and ble.rssi_min_dbm == -90


@pytest.mark.parametrize(
    ("value", "stored"),
    [("true", "true"), ("false", "false"), ('"true"', "true"), ('"false"', "false"), ('"auto"', "auto")],
)
def test_enabled_takes_bare_booleans_and_strings(tmp_path: Path, value: str, stored: str) -> None:
    assert _load(tmp_path, f"[ble]\nenabled = {value}\n").enabled == stored


def test_every_key_read_from_the_file(tmp_path: Path) -> None:
    ble = _load(
        tmp_path,
        '[ble]\nenabled = true\nadapter = "bumble"\nbumble_transport = "usb:0"\npower_mode = "saver"\n'
        'max_central_links = 0\nrssi_min_dbm = -75\nnickname = "shelf-pi"\n',
    )
    assert ble == BleSection("true", "bumble", "usb:0", "saver", 0, -75, "shelf-pi")


def test_config_show_includes_ble(tmp_path: Path) -> None:
    shown = config_as_dict(load_config(data_dir=tmp_path, env={}))
    assert shown["ble"]["enabled"] == "auto" and shown["ble"]["rssi_min_dbm"] == -90


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[ble]\nenabled = "yes"\n', r"ble\.enabled: expected one of 'auto', 'true', 'false', got 'yes'"),
        ("[ble]\nenabled = 1\n", r"ble\.enabled: expected auto, true or false, got 1"),
        ('[ble]\nadapter = "hci0"\n', r"ble\.adapter: expected one of 'bluez', 'bumble'"),
        ('[ble]\npower_mode = "turbo"\n', r"ble\.power_mode: expected one of 'auto', 'performance'"),
        ("[ble]\nmax_central_links = 17\n", r"ble\.max_central_links: expected a value from 0 to 16, got 17"),
        ("[ble]\nmax_central_links = 2.5\n", r"ble\.max_central_links: expected a whole number"),
        ("[ble]\nrssi_min_dbm = -120\n", r"ble\.rssi_min_dbm: expected a value from -100 to -30, got -120"),
        ("[ble]\nrssi_min_dbm = 10\n", r"ble\.rssi_min_dbm: expected a value from -100 to -30, got 10"),
        ("[ble]\nnickname = 3\n", r"ble\.nickname: expected a string"),
        ('[ble]\nnickname = "' + "é" * 200 + '"\n', r"ble\.nickname: expected at most 255 UTF-8 bytes"),
        ('[ble]\nadapter = "bumble"\n', r"ble\.bumble_transport: adapter = \"bumble\" needs a Bumble transport"),
        ("[ble]\nscan_s = 3\n", r"ble\.scan_s: unknown key \(known keys in \[ble\]: adapter, bumble_transport"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, toml)


def test_bumble_without_transport_is_fine_when_ble_is_off(tmp_path: Path) -> None:
    assert _load(tmp_path, '[ble]\nenabled = false\nadapter = "bumble"\n').adapter == "bumble"
