"""The JSON-RPC methods a node serves on its control socket. Each is documented; ``rpc.methods`` lists them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from node.control.rpc import APP_ERROR, NoParams, Notify, Registry, RpcError, param
from node.identity import fingerprint_from_noise_key
from node.outbox import STATES

if TYPE_CHECKING:
    from node.node import Node
    from node.routing.mesh import MeshCore

INBOX_LIST_MAX = 10_000  # messages one inbox.list call may return


@dataclass(frozen=True, slots=True)
class SendParams:
    peer: str = param(doc="Recipient: peer ID (16 hex), fingerprint or unique prefix, or nickname.")
    text: str = param(doc="Message text, 1 to 255 UTF-8 bytes (BitChat's private-message limit).")


@dataclass(frozen=True, slots=True)
class ForgetPinParams:
    peer: str = param(doc="Full peer ID (16 hex) whose identity pin to forget.")


@dataclass(frozen=True, slots=True)
class BroadcastParams:
    text: str = param(doc="Message text, 1 to mesh.max_public_text_chars characters.")


@dataclass(frozen=True, slots=True)
class InboxListParams:
    limit: int = param(50, doc="Most messages to return (newest; listed oldest first).")
    after_seq: int = param(0, doc="Only messages with a sequence number above this.")


@dataclass(frozen=True, slots=True)
class InboxFollowParams:
    after_seq: int | None = param(None, doc="Also replay stored messages with a sequence number above this.")


@dataclass(frozen=True, slots=True)
class WaitPeerParams:
    peer: str = param(doc="Peer ID, fingerprint or unique prefix, or nickname.")
    timeout_s: float = param(30.0, doc="Give up after this many seconds.")
    direct: bool = param(False, doc="Wait until the peer is a direct neighbour (a link of ours is bound to it).")


@dataclass(frozen=True, slots=True)
class WaitMessageParams:
    id: str = param(doc="A message ID returned by messages.send.")
    timeout_s: float = param(30.0, doc="Give up after this many seconds.")


@dataclass(frozen=True, slots=True)
class ConnectParams:
    addr: str = param(doc="Multiaddr of the peer, ending in /p2p/<libp2p peer id>.")


@dataclass(frozen=True, slots=True)
class OutboxListParams:
    state: str | None = param(None, doc="Only messages in this state: pending, delivered or failed.")
    limit: int = param(50, doc="Most messages to return (newest; listed oldest first).")


@dataclass(frozen=True, slots=True)
class MessageStatusParams:
    id: str = param(doc="A message ID returned by messages.send or messages.broadcast.")


def build_registry(node: Node) -> Registry:
    reg = Registry()

    async def methods(_: NoParams, notify: Notify) -> Any:
        return [m.describe() for m in reg.methods.values()]

    async def status(_: NoParams, notify: Notify) -> Any:
        return node.status()

    async def ident(_: NoParams, notify: Notify) -> Any:
        return {
            "peer_id": node.identity.peer_id_hex,
            "fingerprint": node.identity.fingerprint,
            "nickname": node.nickname,
            "signing_public_key": node.identity.signing_public.hex(),
            "noise_public_key": node.identity.noise_public.hex(),
        }

    async def peers(_: NoParams, notify: Notify) -> Any:
        return node.peers_view()

    def _core() -> MeshCore:
        if node.core is None:
            raise RpcError(APP_ERROR, "the node is not running")
        return node.core

    async def pins(_: NoParams, notify: Notify) -> Any:
        core = _core()
        out = []
        for pin in core.pins:
            info = core.peers.get(pin.peer_id)
            out.append(
                {
                    "peer_id": pin.peer_id.hex(),
                    "nickname": info.nickname if info else None,
                    "fingerprint": fingerprint_from_noise_key(pin.noise_public_key),
                    "noise_public_key": pin.noise_public_key.hex(),
                    "signing_public_key": pin.signing_public_key.hex(),
                }
            )
        return out

    async def forget_pin(p: ForgetPinParams, notify: Notify) -> Any:
        try:
            peer = bytes.fromhex(p.peer)
        except ValueError:
            peer = b""
        if len(peer) != 8:
            raise RpcError(APP_ERROR, f"{p.peer!r} is not a full peer ID (16 hex digits)")
        core = _core()
        forgotten = core.forget_pin(peer)
        await node.persist_pins()  # on disk before we answer
        return {"peer_id": peer.hex(), "forgotten": forgotten}

    async def send(p: SendParams, notify: Notify) -> Any:
        message_id = node.send_private(p.peer, p.text)
        return {"id": message_id, "to": node.outgoing[message_id].to, "state": "pending"}

    async def broadcast(p: BroadcastParams, notify: Notify) -> Any:
        message_id = node.broadcast(p.text)
        return {"id": message_id, "links": len(node.links)}

    async def message_status(p: MessageStatusParams, notify: Notify) -> Any:
        msg = node.outgoing.get(p.id)
        if msg is not None:
            return msg.to_json()
        stored = node.outbox.get(p.id) if node.outbox is not None else None
        if stored is None:
            raise RpcError(APP_ERROR, f"no outgoing message {p.id!r} is known (the last 1000 are kept)")
        return {**stored.to_json(), "private": True}

    async def outbox_list(p: OutboxListParams, notify: Notify) -> Any:
        if p.state is not None and p.state not in STATES:
            raise RpcError(APP_ERROR, f"state must be one of {', '.join(STATES)}, not {p.state!r}")
        if not 1 <= p.limit <= INBOX_LIST_MAX:
            raise RpcError(APP_ERROR, f"limit must be from 1 to {INBOX_LIST_MAX}")
        assert node.outbox is not None
        return [m.to_json() for m in node.outbox.list(state=p.state, limit=p.limit)]

    async def routes(_: NoParams, notify: Notify) -> Any:
        return node.routes_view()

    async def inbox_list(p: InboxListParams, notify: Notify) -> Any:
        if not 1 <= p.limit <= INBOX_LIST_MAX:
            raise RpcError(APP_ERROR, f"limit must be from 1 to {INBOX_LIST_MAX}")
        assert node.inbox is not None
        return [m.to_json() for m in node.inbox.list(limit=p.limit, after_seq=p.after_seq)]

    async def inbox_follow(p: InboxFollowParams, notify: Notify) -> Any:
        assert node.inbox is not None
        recv = node.subscribe_inbox()  # subscribe first: nothing arriving during the replay is missed
        try:
            last = 0
            if p.after_seq is not None:
                for m in node.inbox.list(limit=INBOX_LIST_MAX, after_seq=p.after_seq):
                    await notify("inbox.message", m.to_json())
                    last = m.seq
            await notify("inbox.following", {"after_seq": last})
            async for m in recv:
                if m.seq > last:
                    await notify("inbox.message", m.to_json())
            return {"ended": "the node closed the subscription (stopping, or this client was too slow)"}
        finally:
            node.unsubscribe_inbox(recv)

    async def wait_peer(p: WaitPeerParams, notify: Notify) -> Any:
        def reachable() -> dict[str, Any] | None:
            for info in node.peers_view():
                if info["reachable"] and p.peer in (info["peer_id"], info["nickname"], info["fingerprint"]):
                    if p.direct and info["address"] is None:
                        continue
                    return info
            return None

        with trio.move_on_after(p.timeout_s):
            await node.wait_until(lambda: reachable() is not None)
            return reachable()
        what = "a direct neighbour" if p.direct else "reachable"
        raise RpcError(APP_ERROR, f"peer {p.peer!r} did not become {what} within {p.timeout_s:g} s")

    async def wait_message(p: WaitMessageParams, notify: Notify) -> Any:
        msg = node.outgoing.get(p.id)
        if msg is None:
            raise RpcError(APP_ERROR, f"no outgoing message {p.id!r} is known (the last 1000 are kept)")
        with trio.move_on_after(p.timeout_s):
            await node.wait_until(lambda: msg.state != "pending")
        return msg.to_json()

    async def connect(p: ConnectParams, notify: Notify) -> Any:
        link = await node.connect(p.addr)
        return {"link_id": link.link_id, "remote": link.remote_address, "transport": link.transport_name}

    async def stop(_: NoParams, notify: Notify) -> Any:
        node.request_stop()
        await trio.lowlevel.checkpoint()
        return {"stopping": True, "deadline_s": node.config.node.shutdown_deadline_s}

    reg.add("rpc.methods", NoParams, "List every method with its documentation and parameters.", methods)
    reg.add(
        "node.status",
        NoParams,
        "Identity, uptime, transports, listen addresses, peer count and counters of this node.",
        status,
    )
    reg.add("node.id", NoParams, "This node's peer ID, fingerprint, nickname and public keys.", ident)
    reg.add("node.stop", NoParams, "Stop the node gracefully (leave sent, queues drained).", stop)
    reg.add(
        "peers.wait",
        WaitPeerParams,
        "Wait until a peer (full peer ID, fingerprint or nickname) is known and reachable; returns its entry.",
        wait_peer,
    )
    reg.add(
        "messages.wait",
        WaitMessageParams,
        "Wait until an outgoing private message is delivered or failed (or the timeout passes); returns its state.",
        wait_message,
    )
    reg.add(
        "peers.connect",
        ConnectParams,
        "Dial a peer over BetaNet and keep the link; it appears in peers.list once its announce arrives.",
        connect,
    )
    reg.add(
        "peers.list",
        NoParams,
        "Peers this node knows: ID, nickname, fingerprint, reachability, "
        "transport, address, whether a Noise session is up.",
        peers,
    )
    reg.add(
        "peers.pins",
        NoParams,
        "Identity pins: peer ID -> Noise and signing keys proven by a completed Noise handshake. An announce that "
        "conflicts with a pin is refused (counter pin_conflict).",
        pins,
    )
    reg.add(
        "peers.forget",
        ForgetPinParams,
        "Forget a peer's identity pin (after it really changed keys); the next proven binding is pinned anew.",
        forget_pin,
    )
    reg.add(
        "messages.send",
        SendParams,
        "Send an end-to-end encrypted private message; returns its ID. "
        "Delivery is confirmed by an ack (see messages.status).",
        send,
    )
    reg.add(
        "messages.broadcast", BroadcastParams, "Send a signed public message to the mesh; returns its ID.", broadcast
    )
    reg.add(
        "messages.status",
        MessageStatusParams,
        "State of an outgoing message: sent, pending, delivered or failed.",
        message_status,
    )
    reg.add(
        "outbox.list",
        OutboxListParams,
        "Private messages this node accepted for sending (kept on disk until settled): id, to, text, state "
        "(pending, delivered, failed), created_at_ms, updated_at_ms, detail.",
        outbox_list,
    )
    reg.add(
        "routes.list",
        NoParams,
        "The path table: destination, next hop, link, transport, hops, cost, source route (via), how it was "
        "learned (direct, topology, reverse) and seconds until it expires.",
        routes,
    )
    reg.add(
        "inbox.list",
        InboxListParams,
        "Received messages: id, from, nickname, text, private, received_at_ms, hops.",
        inbox_list,
    )
    reg.add(
        "inbox.follow",
        InboxFollowParams,
        "Stream received messages as `inbox.message` notifications until the client disconnects.",
        inbox_follow,
        streaming=True,
    )
    for plugin in node.plugins:
        if plugin.rpc is not None:
            plugin.rpc(node, reg)
    return reg
