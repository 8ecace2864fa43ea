"""The anchor as a plugin of the node's composition root, registered through the ``aivillage.plugins`` entry point
(pyproject.toml): the ``[anchor]`` section, ``village anchor ...`` and the services

* ``mailbox-server`` (with ``mailbox.serve``): :class:`anchor.mailbox.MailboxServerService`;
* ``governance-store`` (with ``anchor.enabled``): the village governance's PostgreSQL store
  (:class:`anchor.stores.govstore_pg.GovStoreService`);
* ``anchor-gateway`` (with ``anchor.enabled``, or ``village anchor run``): :class:`anchor.run.GatewayService`.

The node never imports this package; importing this module is cheap (the gateway's and stores' libraries load when
a node builds the services).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anchor.settings import AnchorSection
from node.errors import StartupError
from node.mailbox.settings import MailboxSection
from node.plugin import Plugin, Service

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.settings import Config


def _services(cfg: Config) -> list[Service]:
    services: list[Service] = []
    try:
        if cfg.section(MailboxSection).serve:  # before the gateway: it answers GET /v1/mailbox from this one
            from anchor.mailbox import MailboxServerService

            services.append(MailboxServerService())
        anchor = cfg.section(AnchorSection)
        if anchor.enabled:
            from anchor.run import GatewayService, load_services
            from anchor.stores.govstore_pg import GovStoreService

            # the village's governance persists in PostgreSQL here (node.agents.village looks this service up)
            services.append(GovStoreService(lambda: load_services(cfg).postgres.dsn, timeout_s=anchor.store_timeout_s))
            services.append(GatewayService())
    except ImportError as missing:
        raise StartupError(f"the anchor needs the anchor extra ({missing}): pip install 'aivillage[anchor]'") from None
    return services


def _cli(cli: CliRegistry) -> None:
    from anchor.cli import add_commands

    add_commands(cli)


PLUGIN = Plugin(name="anchor", sections=(AnchorSection,), services=_services, cli=_cli)
