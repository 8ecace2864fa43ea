"""Where the settings used to live: kept so older imports work. New code imports the loader from
:mod:`node.settings` and each section from beside its code (``node.routing.settings.MeshSection``, ...)."""

from __future__ import annotations

from node.control.settings import ControlSection
from node.mailbox.settings import MailboxSection
from node.rag.settings import RagSection
from node.routing.settings import MeshSection
from node.schema import parse_host_port
from node.settings import (
    APP_NAME,
    Config,
    NodeSection,
    all_sections,
    config_as_dict,
    config_from_mapping,
    default_data_dir,
    example_toml,
    load_config,
)
from node.transports.betanet.settings import BetanetSection
from node.transports.ble.settings import BleSection

__all__ = [
    "APP_NAME",
    "BetanetSection",
    "BleSection",
    "Config",
    "ControlSection",
    "MailboxSection",
    "MeshSection",
    "NodeSection",
    "RagSection",
    "all_sections",
    "config_as_dict",
    "config_from_mapping",
    "default_data_dir",
    "example_toml",
    "load_config",
    "parse_host_port",
]
