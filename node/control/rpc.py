"""JSON-RPC 2.0 core: a registry of typed, documented methods and untrusted request parsing.

No I/O here: :func:`parse_request_untrusted` turns one request line into a :class:`Request` or an error
response, :meth:`Registry.bind_params` validates params against the method's params dataclass, and the
server (``node.control.server``) awaits the handler and writes the line back.

Wire format: one JSON object per line (UTF-8, ``\\n`` terminated) in both directions. A method may stream
notifications (``{"jsonrpc": "2.0", "method": ..., "params": ...}``) before its final response, which is how
``inbox.follow`` works.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from node.errors import ControlError

# Standard JSON-RPC 2.0 error codes, and ours (the spec reserves -32000..-32099 for implementations).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APP_ERROR = -32000  # a NodeError the user can act on (unknown peer, text too long, ...)


class RpcError(ControlError):
    """An error to report to the client as a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


@dataclass(frozen=True, slots=True)
class Request:
    id: int | str | None  # None: a notification (no response is sent)
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NoParams:
    pass


P = TypeVar("P")
Notify = Callable[[str, Any], Awaitable[None]]
Handler = Callable[[Any, Notify], Awaitable[Any]]
# (method name, bound params) of a call that succeeded on the control socket (see Registry.socket_observers).
CallObserver = Callable[[str, Any], None]


@dataclass(frozen=True)
class Method(Generic[P]):
    name: str
    params: type[P]
    doc: str
    handler: Callable[[P, Notify], Awaitable[Any]]
    streaming: bool = False

    def describe(self) -> dict[str, Any]:
        hints = typing.get_type_hints(self.params)
        params = []
        for f in dataclasses.fields(self.params):  # type: ignore[arg-type]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            params.append(
                {
                    "name": f.name,
                    "type": _type_name(hints[f.name]),
                    "required": required,
                    "doc": f.metadata.get("doc", ""),
                }
            )
        return {"name": self.name, "doc": self.doc, "params": params, "streaming": self.streaming}


def _type_name(t: Any) -> str:
    if typing.get_origin(t) is list:
        return str(t).replace("typing.", "")
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def param(default: Any = dataclasses.MISSING, *, doc: str) -> Any:
    """A documented params-dataclass field."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def _check_param(method: str, name: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _check_param(method, name, value, non_none[0])
    if origin is list and args == (str,):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RpcError(INVALID_PARAMS, f"{method}: param {name!r} must be a list of strings, got {value!r}")
        return list(value)
    ok = {
        str: isinstance(value, str),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        bool: isinstance(value, bool),
    }.get(typ)
    if ok is None:  # pragma: no cover - teach _check_param the new type
        raise RpcError(INTERNAL_ERROR, f"{method}: unsupported param type for {name!r}")
    if not ok:
        raise RpcError(INVALID_PARAMS, f"{method}: param {name!r} must be {_type_name(typ)}, got {value!r}")
    return float(value) if typ is float else value


class Registry:
    """The control methods of one node. Instances, not module state: ten nodes can share a process."""

    def __init__(self) -> None:
        self.methods: dict[str, Method[Any]] = {}
        # Called by the control server, and only by it, after each call that arrived on the socket (the node's
        # own uid or root, SO_PEERCRED) and succeeded. In-process callers of ``Method.handler`` (MCP tools
        # used by gateway, HTTP and stdio clients, agents) are never seen: that is the point (the twin learns
        # the user's own activity through this, node.twin.rpc).
        self.socket_observers: list[CallObserver] = []

    def add(
        self,
        name: str,
        params: type[P],
        doc: str,
        handler: Callable[[P, Notify], Awaitable[Any]],
        *,
        streaming: bool = False,
    ) -> None:
        if name in self.methods:
            raise ValueError(f"method {name} registered twice")
        if not doc.strip():
            raise ValueError(f"method {name} has no documentation")
        self.methods[name] = Method(name, params, doc.strip(), handler, streaming)

    def bind_params(self, method: Method[P], raw: dict[str, Any]) -> P:
        hints = typing.get_type_hints(method.params)
        fields = {f.name: f for f in dataclasses.fields(method.params)}  # type: ignore[arg-type]
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise RpcError(
                INVALID_PARAMS, f"{method.name}: unknown param {unknown[0]!r} (accepted: {', '.join(fields) or 'none'})"
            )
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            if name in raw:
                kwargs[name] = _check_param(method.name, name, raw[name], hints[name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RpcError(INVALID_PARAMS, f"{method.name}: missing required param {name!r}")
        return method.params(**kwargs)

    def lookup(self, name: str) -> Method[Any]:
        try:
            return self.methods[name]
        except KeyError:
            raise RpcError(METHOD_NOT_FOUND, f"unknown method {name!r}; `rpc.methods` lists them") from None


def parse_request_untrusted(line: bytes) -> Request:
    """Parse one request line; raises :class:`RpcError` (parse error / invalid request)."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RpcError(PARSE_ERROR, f"request is not valid JSON: {exc}") from None
    except RecursionError:  # deep nesting ("[[[[..."): json's recursion, not a ValueError
        raise RpcError(PARSE_ERROR, "request is not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0" or not isinstance(obj.get("method"), str):
        raise RpcError(INVALID_REQUEST, 'expected an object with jsonrpc "2.0" and a string method')
    req_id = obj.get("id")
    if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, int | str)):
        raise RpcError(INVALID_REQUEST, "id must be a string or an integer")
    params = obj.get("params", {})
    if isinstance(params, list):
        raise RpcError(INVALID_PARAMS, "params must be an object (named params); positional lists are not supported")
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params must be an object")
    return Request(req_id, obj["method"], params)


def response_line(req_id: int | str | None, *, result: Any = None, error: RpcError | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id}
    if error is not None:
        msg["error"] = error.to_json()
    else:
        msg["result"] = result
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def notification_line(method: str, params: Any) -> bytes:
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
