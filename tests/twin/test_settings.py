from __future__ import annotations

from pathlib import Path

import pytest

from node.daemon import load_plugins
from node.errors import ConfigError
from node.settings import load_config
from node.twin.settings import TwinSettings


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"twin\.gate_fraction"):
        TwinSettings(gate_fraction=2.0)
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text("[twin]\nmax_disk_bytes = 5\n")
    with pytest.raises(ConfigError, match=r"twin\.max_disk_bytes"):
        load_config(cfg_file, data_dir=tmp_path)


def test_twin_is_a_builtin_plugin_with_its_section(tmp_path: Path) -> None:
    plugin = next(p for p in load_plugins() if p.name == "twin")
    assert TwinSettings in plugin.sections and plugin.cli and plugin.rpc and plugin.services
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text("[twin]\nenabled = false\n")
    assert plugin.services(load_config(cfg_file, data_dir=tmp_path)) == []
    cfg_file.write_text("[twin]\nmin_battery_percent = 50\n")
    cfg = load_config(cfg_file, data_dir=tmp_path)
    [svc] = plugin.services(cfg)
    assert svc.name == "twin" and cfg.section(TwinSettings).min_battery_percent == 50
