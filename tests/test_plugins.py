"""The plugin interface (node.plugin): a plugin's settings section, services, control methods and commands plug
into the composition root without the core naming it; external plugins come from the aivillage.plugins entry
points of installed distributions."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from node.cli import build_parser
from node.cli_support import CliRegistry, call, emit
from node.control.methods import build_registry
from node.control.rpc import NoParams, Notify, Registry
from node.daemon import build_node, load_plugins
from node.errors import ConfigError
from node.identity import Identity
from node.node import Node
from node.plugin import Plugin
from node.schema import setting
from node.settings import Config, NodeSection, all_sections, config_as_dict, example_toml, load_config
from node.transports.base import Link, Transport

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class DemoSettings:
    SECTION: ClassVar[str] = "demo"

    enabled: bool = setting(True, "Run the demo services.")
    greeting: str = setting("hello", "What demo.greet answers.")
    min_items: int = setting(1, "Fewest items.", min=0, max=10)
    max_items: int = setting(4, "Most items.", min=1, max=10)

    def __post_init__(self) -> None:
        if self.min_items > self.max_items:
            raise ConfigError(f"demo.min_items: expected at most demo.max_items ({self.max_items})")


class Recorder:
    """What happened, in order, across the services and the transport of one node."""

    def __init__(self) -> None:
        self.events: list[str] = []


class DemoService:
    def __init__(self, name: str, rec: Recorder) -> None:
        self.name = name
        self.rec = rec

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        control = "control up" if node.control_server is not None else "no control"
        self.rec.events.append(f"{self.name} start ({control})")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.rec.events.append(f"{self.name} stop")


class RecordingTransport(Transport):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    @property
    def name(self) -> str:
        return "recording"

    async def run(
        self, link_sink: trio.MemorySendChannel[Link], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.rec.events.append("transport start")
        task_status.started()
        await trio.sleep_forever()


def demo_plugin(rec: Recorder) -> Plugin:
    def services(cfg: Config) -> list[DemoService]:
        if not cfg.section(DemoSettings).enabled:
            return []
        return [DemoService("first", rec), DemoService("second", rec)]

    def rpc(node: Node, reg: Registry) -> None:
        async def greet(_: NoParams, notify: Notify) -> Any:
            return {"greeting": node.config.section(DemoSettings).greeting}

        reg.add("demo.greet", NoParams, "Answer the configured demo greeting (a test plugin's method).", greet)

    def greet(args: argparse.Namespace) -> int:
        emit(args, call(args, "demo.greet"), str)
        return 0

    def cli(reg: CliRegistry) -> None:
        group = reg.group("demo", "A test plugin's commands.")
        p = group.command("greet", greet, "Ask the node.")
        p.add_argument("--loud", action="store_true", help="shout")

    return Plugin(name="demo", sections=(DemoSettings,), services=services, rpc=rpc, cli=cli)


SECTIONS = (*all_sections(), DemoSettings)


def test_a_plugin_section_is_loaded_checked_and_documented(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[demo]\ngreeting = "hi"\nmax_items = 7\n')
    cfg = load_config(path, env={}, sections=SECTIONS)
    assert cfg.section(DemoSettings) == DemoSettings(greeting="hi", max_items=7)
    assert Config(data_dir=tmp_path).section(DemoSettings) == DemoSettings()  # absent: the defaults
    for toml, message in [
        ("[demo]\ngreting = 1\n", r"demo\.greting: unknown key"),
        ("[demo]\nmax_items = 11\n", r"demo\.max_items: expected a value from 1 to 10, got 11"),
        ("[demo]\nmin_items = 5\nmax_items = 2\n", r"demo\.min_items: expected at most demo\.max_items \(2\)"),
    ]:
        path.write_text(toml)
        with pytest.raises(ConfigError, match=message):
            load_config(path, env={}, sections=SECTIONS)
    path.write_text("[demo]\n")
    with pytest.raises(ConfigError, match=r"\[demo\]: unknown section"):
        load_config(path, env={})  # not registered: the file is refused, not silently ignored
    text = example_toml(SECTIONS)
    assert "\n[demo]\n# Run the demo services.\nenabled = true\n" in text
    assert "# Most items. Range 1 to 10.\nmax_items = 4\n" in text
    assert config_as_dict(cfg, SECTIONS)["demo"] == {"enabled": True, "greeting": "hi", "min_items": 1, "max_items": 7}


async def test_services_start_in_order_between_control_and_transports(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "n").mkdir()
    cfg = Config(data_dir=tmp_path / "n", node=NodeSection(nickname="demo"))
    node = build_node(cfg, Identity.generate(), plugins=[demo_plugin(rec)], transports=[RecordingTransport(rec)])
    assert [s.name for s in node.services] == ["first", "second"]
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        assert rec.events == ["first start (control up)", "second start (control up)", "transport start"]
        assert node.service("second") is node.services[1] and node.service("nope") is None
        node.request_stop()
    assert rec.events[3:] == ["first stop", "second stop"] or rec.events[3:] == ["second stop", "first stop"]


async def test_a_disabled_section_means_no_services(tmp_path: Path) -> None:
    cfg = Config(data_dir=tmp_path, demo=DemoSettings(enabled=False))
    node = build_node(cfg, Identity.generate(), plugins=[demo_plugin(Recorder())], transports=[])
    assert node.services == []


async def test_a_plugin_adds_control_methods(tmp_path: Path) -> None:
    cfg = Config(data_dir=tmp_path, demo=DemoSettings(greeting="good evening"))
    node = Node(cfg, Identity.generate(), plugins=[demo_plugin(Recorder())])
    reg = build_registry(node)
    method = reg.lookup("demo.greet")

    async def notify(name: str, data: Any) -> None:
        pass

    assert await method.handler(reg.bind_params(method, {}), notify) == {"greeting": "good evening"}
    assert "demo.greet" in {m["name"] for m in await reg.lookup("rpc.methods").handler(NoParams(), notify)}


def test_a_plugin_adds_a_command_group() -> None:
    parser = build_parser(plugins=[demo_plugin(Recorder())])
    args = parser.parse_args(["demo", "greet", "--loud", "--json"])
    assert args.loud and args.json and callable(args.func)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices["demo"].description == "A test plugin's commands."
    assert parser.parse_args(["demo"]).func(args) == 2  # a group without an action prints its help


def test_the_builtin_plugins_are_found() -> None:
    names = [p.name for p in load_plugins()]
    assert names[:2] == ["rag", "mailbox"]


PLUGIN_MODULE = """
from dataclasses import dataclass
from typing import ClassVar

from node.cli_support import CliRegistry, emit
from node.plugin import Plugin
from node.schema import setting


@dataclass(frozen=True, slots=True)
class OutsideSettings:
    SECTION: ClassVar[str] = "outside"
    level: int = setting(3, "How far outside.", min=1, max=5)


def hello(args):
    emit(args, {"hello": "from outside"}, str)
    return 0


def cli(reg: CliRegistry) -> None:
    reg.group("outside", "Commands of a plugin installed from elsewhere.").command(
        "hello", hello, "Say hello without a node."
    )


PLUGIN = Plugin(name="outside", sections=(OutsideSettings,), cli=cli)
"""


def test_an_installed_distribution_plugs_in_through_its_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "outside_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "outside_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: outside-plugin\nVersion: 1.0\n"
    )
    (site / "outside_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[aivillage.plugins]\noutside = outside_plugin:PLUGIN\n"
    )
    (site / "outside_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])}

    def village(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "node.cli", *args, "--data-dir", str(tmp_path / "data")]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)

    r = village("config", "example")
    assert r.returncode == 0 and "\n[outside]\n# How far outside. Range 1 to 5.\nlevel = 3\n" in r.stdout
    r = village("outside", "hello", "--json")
    assert r.returncode == 0 and '"hello": "from outside"' in r.stdout, r.stderr
    (tmp_path / "bad.toml").write_text("[outside]\nlevel = 9\n")
    r = village("config", "check", "--config", str(tmp_path / "bad.toml"))
    assert r.returncode == 2 and "outside.level: expected a value from 1 to 5, got 9" in r.stderr
