"""Control methods of the mailbox: ``mailbox.status`` and ``mailbox.wait`` (the mailbox plugin's ``rpc`` hook,
:mod:`node.mailbox.plugin`). They see the client and, on an anchor, the mailbox it serves, through small Protocols."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

from node.control.rpc import APP_ERROR, NoParams, Notify, Registry, RpcError, param

if TYPE_CHECKING:
    from node.mailbox.client import MailboxClient


@runtime_checkable
class MailboxServing(Protocol):
    """A mailbox this node serves for offline peers (an anchor's service, registered by its plugin)."""

    def serving_counters(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class MailboxWaitParams:
    deposited: int = param(0, doc="Wait until at least this many envelopes were deposited at anchors (new ones).")
    acked: int = param(0, doc="Wait until at least this many fetched envelopes were acknowledged to anchors.")
    timeout_s: float = param(30.0, doc="Give up after this many seconds.")


def mailbox_status(client: MailboxClient | None, serving: MailboxServing | None) -> dict[str, Any]:
    out: dict[str, Any] = {"anchors": [], "client": None, "serving": None}
    if client is not None:
        out["anchors"] = [{"addr": t.addr, "pending_deposits": len(t.pending)} for t in client.anchors]
        out["client"] = dataclasses.asdict(client.counters)
    if serving is not None:
        out["serving"] = serving.serving_counters()
    return out


def register(
    reg: Registry,
    get_client: Callable[[], MailboxClient | None],
    get_serving: Callable[[], MailboxServing | None],
) -> None:
    async def status(_: NoParams, notify: Notify) -> Any:
        return mailbox_status(get_client(), get_serving())

    async def wait(p: MailboxWaitParams, notify: Notify) -> Any:
        client = get_client()
        if client is None:
            raise RpcError(APP_ERROR, "this node uses no mailbox anchors (mailbox.anchors is empty)")
        with trio.move_on_after(p.timeout_s):
            await client.wait_counters(lambda c: c.deposited >= p.deposited and c.acked >= p.acked)
            return mailbox_status(client, get_serving())
        raise RpcError(
            APP_ERROR,
            f"within {p.timeout_s:g} s: {client.counters.deposited} deposited (waited for {p.deposited}), "
            f"{client.counters.acked} acknowledged (waited for {p.acked})",
        )

    reg.add(
        "mailbox.status",
        NoParams,
        "The offline-peer mailbox: anchors used (with envelopes waiting to be deposited), this node's client "
        "counters (deposited, fetched, delivered, acked, failures) and, on an anchor, what it serves.",
        status,
    )
    reg.add(
        "mailbox.wait",
        MailboxWaitParams,
        "Wait until this node's mailbox client has deposited and/or acknowledged at least the given numbers of "
        "envelopes; returns mailbox.status.",
        wait,
    )
