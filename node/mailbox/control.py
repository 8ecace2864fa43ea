"""Control methods of the mailbox: ``mailbox.status`` and ``mailbox.wait`` (registered by
:func:`node.control.methods.build_registry`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from node.control.rpc import APP_ERROR, NoParams, Notify, Registry, RpcError, param

if TYPE_CHECKING:
    from node.node import Node


@dataclass(frozen=True, slots=True)
class MailboxWaitParams:
    deposited: int = param(0, doc="Wait until at least this many envelopes were deposited at anchors (new ones).")
    acked: int = param(0, doc="Wait until at least this many fetched envelopes were acknowledged to anchors.")
    timeout_s: float = param(30.0, doc="Give up after this many seconds.")


def mailbox_status(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"anchors": [], "client": None, "serving": None}
    client = node.mailbox
    if client is not None:
        out["anchors"] = [{"addr": t.addr, "pending_deposits": len(t.pending)} for t in client.anchors]
        out["client"] = dataclasses.asdict(client.counters)
    service = node.mailbox_service
    if service is not None:
        out["serving"] = dataclasses.asdict(service.core.counters)
    return out


def register(reg: Registry, node: Node) -> None:
    async def status(_: NoParams, notify: Notify) -> Any:
        return mailbox_status(node)

    async def wait(p: MailboxWaitParams, notify: Notify) -> Any:
        client = node.mailbox
        if client is None:
            raise RpcError(APP_ERROR, "this node uses no mailbox anchors (mailbox.anchors is empty)")
        with trio.move_on_after(p.timeout_s):
            await client.wait_counters(lambda c: c.deposited >= p.deposited and c.acked >= p.acked)
            return mailbox_status(node)
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
