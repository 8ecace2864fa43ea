"""The knowledge base as a plugin of the composition root: the ``[rag]`` section and ``village rag``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.config import RagSection
from node.plugin import Plugin

if TYPE_CHECKING:
    from node.cli_support import CliRegistry


def _cli(cli: CliRegistry) -> None:
    from node.rag.cli import add_commands

    add_commands(cli)


PLUGIN = Plugin(name="rag", sections=(RagSection,), cli=_cli)
