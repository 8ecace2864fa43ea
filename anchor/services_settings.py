"""The stores' connection settings: the JSON file ``scripts/services up`` writes (``tools/services.py``), or one
written by hand for servers run elsewhere. Standard library only; every runtime reader (the gateway's stores, the
mailbox server, ``village anchor keys``) finds it through :func:`settings_path`."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from node.errors import NodeError

SETTINGS_ENV = "VILLAGE_SERVICES_SETTINGS"
SETTINGS_FILE = "settings.json"
# Where `scripts/services up` keeps its servers in a development checkout (the last place looked).
CHECKOUT_DIR = Path(__file__).resolve().parent.parent / ".services"


class ServicesError(NodeError):
    """The settings file is absent or incomplete, or (tools/services.py) a server could not be run."""


@dataclasses.dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    socket_dir: str

    @property
    def dsn(self) -> str:
        """A libpq connection URI for the default database."""
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        user, password = quote(self.user, safe=""), quote(self.password, safe="")  # compose passwords may hold @:/
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{quote(dbname, safe='')}"


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    host: str
    port: int
    password: str
    socket_path: str

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@{self.host}:{self.port}/0"


@dataclasses.dataclass(frozen=True)
class GraphSettings:
    """A Bolt server: FalkorDB here (no auth: ``user`` empty), Neo4j 5 in compose (``user`` = neo4j)."""

    kind: str  # "falkordb" or "neo4j"
    host: str
    bolt_port: int
    user: str
    password: str
    redis_port: int  # FalkorDB's own Redis port (0 for Neo4j)

    @property
    def bolt_url(self) -> str:
        return f"bolt://{self.host}:{self.bolt_port}"


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    postgres: PostgresSettings
    redis: RedisSettings
    graph: GraphSettings


def settings_path(configured: str, data_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """``anchor.services_settings`` (``configured``) → ``$VILLAGE_SERVICES_SETTINGS`` → ``<data dir>/services.json``
    → the development checkout's ``.services/settings.json``."""
    env = os.environ if env is None else env
    if configured:
        return Path(configured).expanduser()
    if env.get(SETTINGS_ENV):
        return Path(env[SETTINGS_ENV])
    in_data_dir = data_dir / "services.json"
    return in_data_dir if in_data_dir.exists() else CHECKOUT_DIR / SETTINGS_FILE


def load_settings(path: Path) -> ServiceSettings:
    """Read a settings file (raises ServicesError naming it when absent or incomplete)."""
    try:
        raw = json.loads(path.read_text())
        return ServiceSettings(
            postgres=PostgresSettings(**known_fields(PostgresSettings, raw["postgres"])),
            redis=RedisSettings(**known_fields(RedisSettings, raw["redis"])),
            graph=GraphSettings(**known_fields(GraphSettings, raw["graph"])),
        )
    except FileNotFoundError as exc:
        raise ServicesError(f"{path} does not exist; run `scripts/services up`") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ServicesError(f"{path} is incomplete or corrupt ({exc!r}); run `scripts/services up`") from exc


def known_fields(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}
