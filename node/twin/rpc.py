"""The twin's control methods, and the observer that feeds it the user's own actions.

Methods: ``twin.status``, ``twin.suggest``, ``twin.actions`` (likely next commands), ``twin.observe`` (a local
client — a keyboard, the UI — hands over text the user typed), ``twin.export``, ``twin.forget``, and ``ask`` (the
node's entry point for a request in plain words, :mod:`node.twin.ask`; registered even when the twin is off).

:func:`observe_socket_calls` makes each successful call on the node's control socket (0600, the user's uid,
checked by SO_PEERCRED: the CLI and the user's own local clients) a twin event: the method name is the action;
``messages.send`` / ``messages.broadcast`` give their text (the user's own messages; messages received from
peers never pass through here), ``rag.query`` and ``ask`` their question, ``rag.add`` the titles of the files
added. The recipient of a sent message is kept as the peer ID it resolved to (frequent contacts; a reference
that named no single peer is not kept).

Calls made in-process are not the user's and are never seen: the MCP tools (used by remote gateway clients,
HTTP and stdio MCP clients and agents) call the control methods' handlers directly, not through the socket.
The ``mcp.*`` methods are how MCP clients (the stdio bridge) reach the node over the socket, so they are not
observed either. Besides socket calls, only ``twin.observe`` hands the twin text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from node.control.rpc import APP_ERROR, NoParams, Notify, Registry, RpcError, param
from node.errors import MeshError, NodeError
from node.twin.errors import TwinError

if TYPE_CHECKING:  # the service (numpy) loads only when the twin runs
    from node.twin.service import TwinService

if TYPE_CHECKING:
    from node.node import Node

MAX_OBSERVE_CHARS = 4000
MAX_STATUS_WAIT_S = 25.0  # below the control client's 30 s timeout
NOT_OBSERVED = ("rpc.methods",)  # introspection is not the user's activity
NOT_OBSERVED_PREFIXES = ("twin.", "mcp.")  # the twin's own; MCP clients' (agents'), not the user's
MAX_TITLES = 20  # file titles taken from one rag.add


@dataclass(frozen=True, slots=True)
class SuggestParams:
    text: str = param(doc="The text being typed; if it ends inside a word, completions of that word.")
    k: int = param(3, doc="How many suggestions (1 to 10).")


@dataclass(frozen=True, slots=True)
class StatusParams:
    wait_s: float = param(
        0.0, doc="Wait up to this many seconds (0 to 25) for events already queued to be learned before answering."
    )


@dataclass(frozen=True, slots=True)
class ActionsParams:
    k: int = param(3, doc="How many likely next actions (1 to 10).")


@dataclass(frozen=True, slots=True)
class ObserveParams:
    text: str = param(doc="Text the user wrote (learned by the personal language model).")
    kind: str = param("message", doc="message or query.")


def _titles(paths: Any) -> str:
    if not isinstance(paths, list):
        return ""
    names = [PurePath(str(p)).stem.replace("_", " ").replace("-", " ") for p in paths[:MAX_TITLES]]
    return "; ".join(n for n in names if n)


def event_of(method: str, params: Any) -> tuple[str, str, str | None]:
    """(kind, text, contact) of a control call made by the user."""
    if method in ("messages.send", "messages.broadcast"):
        return "message", str(getattr(params, "text", "")), getattr(params, "peer", None)
    if method in ("rag.query", "ask"):
        return "query", str(getattr(params, "text", "")), None
    if method == "rag.add":
        return "document", _titles(getattr(params, "paths", None)), None
    return "command", "", None


def observe_socket_calls(registry: Registry, twin: TwinService, node: Node | None = None) -> None:
    """Feed the twin each successful control-socket call (see the module docstring for what is not seen)."""

    def observed(method_name: str, params: Any) -> None:
        if method_name in NOT_OBSERVED or method_name.startswith(NOT_OBSERVED_PREFIXES):
            return
        kind, text, contact = event_of(method_name, params)
        if contact is not None:
            contact = _contact_id(node, contact)
        twin.record(kind, text, action=method_name, contact=contact)

    registry.socket_observers.append(observed)


def _contact_id(node: Node | None, ref: str) -> str | None:
    """The peer ID (hex) a sent message's recipient reference named, or None when it named no single peer."""
    if node is None:
        return ref
    try:
        return node.resolve_peer(ref, allow_unknown=True).hex()
    except MeshError:
        return None


@dataclass(frozen=True, slots=True)
class AskParams:
    text: str = param(doc="The request in plain words; the twin adds your personal context and hands it on.")
    agent: str | None = param(None, doc="Send it to this agent instead of letting the King route it.")
    confirm: bool = param(False, doc="Confirm a public broadcast (or a message the privacy check flags).")


def register_ask(registry: Registry, node: Node) -> None:
    """``ask``: the node's entry point (the caller of the control socket is the device's owner)."""

    async def handler(p: AskParams, notify: Notify) -> Any:
        from node.twin.ask import OWNER, Access, ask  # here: it loads the MCP registry (pydantic) and the agents' roles

        try:
            return await ask(node, p.text, access=Access(OWNER), agent=p.agent, confirm=p.confirm)
        except NodeError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc

    registry.add(
        "ask",
        AskParams,
        "Ask the node: the twin adds your personal context (frequent contacts; all local) and hands the request to "
        "the agents (the King), or with the agents off to the matching tool.",
        handler,
    )


def register(registry: Registry, twin: TwinService) -> None:
    async def status(p: StatusParams, notify: Notify) -> Any:
        if not 0.0 <= p.wait_s <= MAX_STATUS_WAIT_S:
            raise RpcError(APP_ERROR, f"wait_s must be from 0 to {MAX_STATUS_WAIT_S:g}")
        return await _call(twin.status(wait_s=p.wait_s))

    async def suggest(p: SuggestParams, notify: Notify) -> Any:
        if not 1 <= p.k <= 10:
            raise RpcError(APP_ERROR, "k must be from 1 to 10")
        return await _call(twin.suggest(p.text[:MAX_OBSERVE_CHARS], p.k))

    async def actions(p: ActionsParams, notify: Notify) -> Any:
        if not 1 <= p.k <= 10:
            raise RpcError(APP_ERROR, "k must be from 1 to 10")
        return await _call(twin.next_actions(p.k))

    async def observe(p: ObserveParams, notify: Notify) -> Any:
        if p.kind not in ("message", "query"):
            raise RpcError(APP_ERROR, "kind must be message or query")
        if len(p.text) > MAX_OBSERVE_CHARS:
            raise RpcError(APP_ERROR, f"text longer than {MAX_OBSERVE_CHARS} characters")
        return {"queued": twin.record(p.kind, p.text, action=None)}

    async def export(_: NoParams, notify: Notify) -> Any:
        return await _call(twin.export())

    async def forget(_: NoParams, notify: Notify) -> Any:
        return await _call(twin.forget())

    registry.add(
        "twin.status",
        StatusParams,
        "The twin: what it learned, its sizes, and whether learning is paused "
        "(and why: battery, temperature, CPU budget).",
        status,
    )
    registry.add(
        "twin.suggest",
        SuggestParams,
        "Next-word suggestions / completions for the text being typed, from the personal model.",
        suggest,
    )
    registry.add("twin.actions", ActionsParams, "The user's likely next commands (next-action head).", actions)
    registry.add("twin.observe", ObserveParams, "Hand the twin text the user wrote (a local keyboard or UI).", observe)
    registry.add(
        "twin.export",
        NoParams,
        "Everything the twin learned, as JSON, its neural adaptation's numbers included (stays on this device).",
        export,
    )
    registry.add("twin.forget", NoParams, "Delete every byte the twin learned (files and memory).", forget)


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except TwinError as exc:
        raise RpcError(APP_ERROR, str(exc), {"type": type(exc).__name__}) from exc
