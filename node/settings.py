"""The settings loader: a registry of sections, :class:`Config`, TOML loading and the example generator.

Each subsystem declares its own section beside its code (a frozen dataclass with ``SECTION`` and :func:`setting`
fields, see :mod:`node.schema`); the core's sections are listed in :data:`BUILTIN_SECTIONS`, plugins bring theirs
(:attr:`node.plugin.Plugin.sections`). :func:`load_config` rejects unknown sections and keys and values of the wrong
type or range with a :class:`~node.errors.ConfigError` naming the key (``mesh.announce_interval_s``) and the expected
form; checks across fields run in each section's ``__post_init__``.

Where things live (first match wins):

* data dir: ``--data-dir`` → ``$VILLAGE_DATA_DIR`` → ``node.data_dir`` in the config file → platformdirs'
  user data dir for ``aivillage`` (``~/.local/share/aivillage`` on Linux).
* config file: ``--config`` → ``$VILLAGE_CONFIG`` → ``<data dir>/config.toml`` if it exists → built-in defaults.

``configs/node.example.toml`` is generated from the sections' metadata (``village config example``); a test keeps
the two identical. Imports: the standard library only (plugins are discovered on first use), so client commands
stay fast.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import stat
import tomllib
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from node.errors import ConfigError
from node.schema import check_utf8_bytes, parse_host_port, setting

if TYPE_CHECKING:
    from node.control.settings import ControlSection
    from node.routing.settings import MeshSection
    from node.transports.betanet.settings import BetanetSection
    from node.transports.ble.settings import BleSection
    from node.wire.limits import WireLimits

__all__ = [
    "BUILTIN_SECTIONS",
    "Config",
    "all_sections",
    "config_as_dict",
    "config_from_mapping",
    "default_data_dir",
    "example_toml",
    "load_config",
    "parse_host_port",
    "setting",
]

APP_NAME = "aivillage"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")  # node.logs

# The core's own sections ("module:Class"), imported on first use; plugins add theirs (Plugin.sections).
BUILTIN_SECTIONS: tuple[str, ...] = (
    "node.settings:NodeSection",
    "node.control.settings:ControlSection",
    "node.routing.settings:MeshSection",
    "node.wire.limits:WireLimits",
    "node.transports.betanet.settings:BetanetSection",
    "node.transports.ble.settings:BleSection",
)

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class NodeSection:
    SECTION: ClassVar[str] = "node"

    nickname: str = setting(
        "",
        "Name shown to peers in announces (<= 255 UTF-8 bytes). Empty: 'village-' + "
        "the first 4 hex digits of the peer ID.",
    )
    data_dir: str = setting(
        "",
        "Where keys, state and the control socket live. Empty: --data-dir, "
        "$VILLAGE_DATA_DIR, or the platform's user data dir.",
    )
    log_level: str = setting("info", "Log verbosity.", choices=LOG_LEVELS)
    log_format: str = setting(
        "text",
        "Log lines on stderr: text (time level subsystem: message) or json (one object per line with time, level, "
        "subsystem, message and peer/link where known; for journald/Loki).",
        choices=LOG_FORMATS,
    )
    shutdown_deadline_s: float = setting(
        10.0, "Seconds allowed for a clean drain after SIGINT/SIGTERM before tasks are cancelled.", min=0.1, max=600
    )
    link_send_queue_bytes: int = setting(
        4 * 1_048_576,
        "Bytes of frames queued for one link (besides at most 256 frames); a link whose peer does not keep up has "
        "further frames dropped and counted (status: link_queue_dropped). One frame always fits an empty queue.",
        min=65_536,
        max=1_073_741_824,
    )
    gc_freeze: bool = setting(
        True,
        "Once the daemon is ready, collect garbage once and freeze what is alive (gc.freeze): later full garbage "
        "collections skip the start-up objects (~150,000 on an anchor), which cuts their event-loop pauses from "
        "50-250 ms to a few ms. Objects alive at start that later become unreachable cycles are then never freed.",
    )
    malloc_arena_max: int = setting(
        2,
        "glibc malloc arenas for the daemon's process (mallopt M_ARENA_MAX, set before any thread starts; "
        "MALLOC_ARENA_MAX in the environment wins: then this is not applied). glibc's default, 8 per core, keeps a "
        "high-water mark of freed memory per thread that allocated; 2 cut a SciFact ingest's RSS "
        "(bench/ingest_peak.py). 0: glibc's default. Ignored on other C libraries.",
        min=0,
        max=1024,
    )
    malloc_mmap_threshold_bytes: int = setting(
        131_072,
        "Blocks of this many bytes or more get their own memory mapping, returned to the system when freed "
        "(mallopt M_MMAP_THRESHOLD, set at start; MALLOC_MMAP_THRESHOLD_ in the environment wins). 0: glibc's "
        "dynamic threshold, which rises to every mapped block freed, up to 32 MiB, so later blocks of that size "
        "stay in the heap after use (the twin's load left ~7 MiB there; bench/ingest_peak.py). Ignored on other C "
        "libraries.",
        min=0,
        max=33_554_432,
    )

    def __post_init__(self) -> None:
        check_utf8_bytes("node.nickname", self.nickname, 255)


def _import(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@functools.cache
def builtin_sections() -> tuple[type, ...]:
    return tuple(_import(spec) for spec in BUILTIN_SECTIONS)


def all_sections() -> tuple[type, ...]:
    """Every registered section: the core's, then each plugin's (built-in plugins, then entry points)."""
    from node.daemon import load_plugins  # lazily: the daemon module imports this one

    found = list(builtin_sections())
    for plugin in load_plugins():
        found += [cls for cls in plugin.sections if cls not in found]
    return tuple(found)


def section_name(cls: type) -> str:
    name = getattr(cls, "SECTION", None)
    if not isinstance(name, str):
        raise TypeError(f"{cls.__qualname__} is not a settings section (no SECTION name)")
    return name


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


class Config:
    """The loaded configuration: one instance per registered section (its defaults where the file said nothing),
    the resolved data dir and the file it came from (``None``: defaults). Immutable.

    ``Config(data_dir=..., mesh=MeshSection(...))`` builds one in code; :meth:`section` is how a subsystem reads its
    own section (``cfg.section(TwinSettings)``); the core's sections are also properties (``cfg.mesh``)."""

    __slots__ = ("_sections", "data_dir", "source")
    data_dir: Path
    source: Path | None
    _sections: dict[str, Any]

    def __init__(self, *, data_dir: Path | None = None, source: Path | None = None, **sections: Any) -> None:
        for name, value in sections.items():
            if getattr(type(value), "SECTION", None) != name:
                raise TypeError(f"Config({name}=...) needs a [{name}] section, got {type(value).__qualname__}")
        object.__setattr__(self, "data_dir", data_dir if data_dir is not None else default_data_dir())
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_sections", dict(sections))

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def section(self, cls: type[S]) -> S:
        """The loaded (or default) instance of the registered section ``cls``."""
        name = section_name(cls)
        value = self._sections.get(name)
        if value is None:
            value = self._sections[name] = cls()  # a cache of the default: the Config stays unchanged
        if not isinstance(value, cls):
            raise TypeError(f"[{name}] holds a {type(value).__qualname__}, not a {cls.__qualname__}")
        return value

    def with_sections(self, *sections: Any) -> Config:
        """A copy with ``sections`` (section instances) in place of the ones of their names."""
        merged = {**self._sections, **{section_name(type(v)): v for v in sections}}
        return Config(data_dir=self.data_dir, source=self.source, **merged)

    def _named(self, name: str) -> Any:
        value = self._sections.get(name)
        if value is not None:
            return value
        for cls in builtin_sections():
            if section_name(cls) == name:
                return self.section(cls)
        raise KeyError(name)  # pragma: no cover - properties name built-in sections only

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        if (self.data_dir, self.source) != (other.data_dir, other.source):
            return False
        for name in set(self._sections) | set(other._sections):
            cls = type(self._sections.get(name) or other._sections[name])
            if self.section(cls) != other.section(cls):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._sections.items())
        return f"Config(data_dir={self.data_dir!r}, source={self.source!r}{', ' if given else ''}{given})"

    @property
    def socket_path(self) -> Path:
        return Path(self.control.socket_path) if self.control.socket_path else self.data_dir / "control.sock"

    # The core's sections (a plugin's, rag and mailbox included: cfg.section(cls)).
    @property
    def node(self) -> NodeSection:
        return self._named("node")  # type: ignore[no-any-return]

    @property
    def control(self) -> ControlSection:
        return self._named("control")  # type: ignore[no-any-return]

    @property
    def mesh(self) -> MeshSection:
        return self._named("mesh")  # type: ignore[no-any-return]

    @property
    def wire(self) -> WireLimits:
        return self._named("wire")  # type: ignore[no-any-return]

    @property
    def betanet(self) -> BetanetSection:
        return self._named("betanet")  # type: ignore[no-any-return]

    @property
    def ble(self) -> BleSection:
        return self._named("ble")  # type: ignore[no-any-return]


# ---------------------------------------------------------------- loading
def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _check_value(key: str, value: Any, typ: Any, meta: Mapping[str, Any]) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    elif typing.get_origin(typ) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        value = tuple(value)
    else:  # pragma: no cover - a new field type must be taught here
        raise ConfigError(f"{key}: unsupported field type {typ!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise ConfigError(f"{key}: expected a value from {_num(lo)} to {_num(hi)}, got {value!r}")
    return value


def build_section(cls: type[S], raw: Any) -> S:
    """One section from its parsed TOML table: every key known, typed and in range, then ``cls(**values)`` (whose
    ``__post_init__`` checks across fields). A section may define ``from_toml(key, value)`` to accept another
    spelling of a value (``ble.enabled = true``) before the checks."""
    name = section_name(cls)
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}]: expected a table of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    normalise = getattr(cls, "from_toml", None)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{name}.{key}: unknown key (known keys in [{name}]: {known})")
        if normalise is not None:
            value = normalise(key, value)
        kwargs[key] = _check_value(f"{name}.{key}", value, hints[key], fields[key].metadata)
    return cls(**kwargs)


def config_from_mapping(
    raw: Mapping[str, Any],
    *,
    data_dir: Path | None = None,
    source: Path | None = None,
    sections: Sequence[type] | None = None,
) -> Config:
    """Validate a parsed TOML document. ``data_dir`` (if given) wins over ``node.data_dir``."""
    by_name = {section_name(cls): cls for cls in (all_sections() if sections is None else sections)}
    built: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in by_name:
            raise ConfigError(f"[{name}]: unknown section (known sections: {', '.join(by_name)})")
        built[name] = build_section(by_name[name], value)
    if data_dir is None:
        node_dir = getattr(built.get("node"), "data_dir", "")
        data_dir = Path(node_dir).expanduser() if node_dir else default_data_dir()
    return Config(data_dir=data_dir, source=source, **built)


def load_config(
    config_path: Path | None = None,
    *,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    sections: Sequence[type] | None = None,
) -> Config:
    """Find, read and validate the configuration (see the module docstring for the search order)."""
    env = os.environ if env is None else env
    if data_dir is None and env.get("VILLAGE_DATA_DIR"):
        data_dir = Path(env["VILLAGE_DATA_DIR"])
    if config_path is None and env.get("VILLAGE_CONFIG"):
        config_path = Path(env["VILLAGE_CONFIG"])
    if config_path is None:
        candidate = (data_dir or default_data_dir()) / "config.toml"
        if not candidate.exists():
            return Config(data_dir=(data_dir or default_data_dir()).expanduser())
        config_path = candidate
    text = read_config_file(config_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_path} is not valid TOML: {exc}") from exc
    try:
        return config_from_mapping(
            raw, data_dir=data_dir.expanduser() if data_dir else None, source=config_path, sections=sections
        )
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; a larger one is not ours


def read_config_file(path: Path) -> str:
    """The text of a config file, which decides security-relevant settings (what listens where, plaintext, the
    files MCP may read), so it is refused unless only this user (or root) can change it: a regular file owned by
    this user or root, not writable by group or others, in directories no one else can write to. Group write is
    allowed for a user private group (the user's own group with no other member, as umask 002 systems use)."""
    for d in dict.fromkeys((path.parent, Path(os.path.realpath(path)).parent)):
        _check_config_dir(path, d)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: a FIFO must not hang us
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"config file {path} is not a regular file; point --config or $VILLAGE_CONFIG at one")
        if st.st_uid not in (os.geteuid(), 0):
            raise ConfigError(
                f"config file {path} belongs to another user (uid {st.st_uid}), who could change this node's "
                "settings; use a config file you own"
            )
        if _writable_by_others(st):
            raise ConfigError(
                f"config file {path} can be changed by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"fix it with: chmod go-w {path}"
            )
        try:
            data = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES} bytes; it is not a node config")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None


def _check_config_dir(path: Path, directory: Path) -> None:
    try:
        st = directory.stat()
    except OSError:
        return  # the file's own open reports what is wrong
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"config file {path} is in {directory}, which belongs to another user (uid {st.st_uid}) who could "
            "replace it; keep the config in a directory you own"
        )
    if _writable_by_others(st) and not st.st_mode & stat.S_ISVTX:  # sticky (/tmp): others cannot replace it
        raise ConfigError(
            f"config file {path} is in {directory}, which group or others can write "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), so they could replace it; fix it with: chmod go-w {directory}"
        )


def _writable_by_others(st: os.stat_result) -> bool:
    if st.st_mode & stat.S_IWOTH:
        return True
    return bool(st.st_mode & stat.S_IWGRP) and not _user_private_group(st.st_gid)


def _user_private_group(gid: int) -> bool:
    """``gid`` is this user's own group (named after the user) that no other account has or belongs to."""
    import grp
    import pwd

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    if group.gr_name != user or any(m != user for m in group.gr_mem):
        return False
    return all(p.pw_name == user for p in pwd.getpwall() if p.pw_gid == gid)


def check_config(cfg: Config, sections: Iterable[type] | None = None) -> None:
    """Build every registered section (defaults included), so `village config check` sees what a start would."""
    for cls in all_sections() if sections is None else sections:
        cfg.section(cls)


# ---------------------------------------------------------------- the example file
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


def example_toml(sections: Sequence[type] | None = None) -> str:
    """The documented example config: every key of every registered section, its default, meaning and range."""
    lines = [
        "# AIVillage node configuration. Every key is optional; the values shown are the defaults.",
        "# Generated by `village config example`; tests keep this file and the code in step.",
        "# Units are in the key names: _s seconds, _bytes bytes, _chars characters.",
    ]
    for cls in all_sections() if sections is None else sections:
        lines.append("")
        lines.append(f"[{section_name(cls)}]")
        defaults = cls()
        for f in dataclasses.fields(cls):
            meta = f.metadata
            rng = ""
            if "choices" in meta:
                rng = " One of: " + ", ".join(meta["choices"]) + "."
            elif "min" in meta:
                rng = f" Range {_num(meta['min'])} to {_num(meta['max'])}."
            lines.append(f"# {meta['help']}{rng}")
            lines.append(f"{f.name} = {_toml_value(getattr(defaults, f.name))}")
    return "\n".join(lines) + "\n"


def config_as_dict(cfg: Config, sections: Sequence[type] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        section_name(cls): dataclasses.asdict(cfg.section(cls))
        for cls in (all_sections() if sections is None else sections)
    }
    out["resolved"] = {
        "data_dir": str(cfg.data_dir),
        "socket_path": str(cfg.socket_path),
        "source": str(cfg.source) if cfg.source else None,
    }
    return out
