"""One registry of the node's tools, used by the MCP server, the twin and the agents alike.

Each tool is declared once (:class:`Tool`): a name, a description, a pydantic input model (its JSON Schema is
what MCP clients see, and arguments are validated against it), an output model (its JSON Schema is the tool's
``outputSchema``; every tool of the node declares one, node.mcp.outputs, and answers are validated against it), the
scope a caller needs and whether it changes state. :meth:`Registry.call` is the only way in::

    outcome = await registry.call("peers_list", {}, caller=Caller("local", "twin"))

It checks the caller's scopes, the ``[mcp] allow``/``deny`` policy and the rate limit of state-changing tools,
validates the arguments, runs the handler, checks its answer against the output model (a state-changing tool's
mismatched answer is logged, counted and returned: its side effect has happened), and writes one audit
record per call (allowed or not). Every failure reaches the caller as a :class:`~node.mcp.errors.ToolError` whose
message it can act on; never a traceback.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from node.errors import NodeError
from node.mcp.audit import AuditLog, args_digest
from node.mcp.errors import AuditUnavailable, InvalidArguments, NotAllowed, ToolError, ToolRateLimited, UnknownTool
from node.mcp.settings import McpSettings

log = logging.getLogger("village.mcp")

MAX_RATE_BUCKETS = 4096  # clients whose rate-limit state is kept (the idlest is dropped first)
ALL_SCOPES = frozenset({"*"})
MAX_SESSION_ID_CHARS = 128  # of a transport's session id kept in a namespace

Handler = Callable[[Any, "Caller"], Awaitable[Any]]
# Writes a caller's own audit record of a state-changing call before it runs: (tool, args SHA-256, args bytes).
# Raising a NodeError (e.g. the anchor's StoreUnavailable) refuses the call.
PreAudit = Callable[[str, str, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls a tool: the transport (stdio, http, local, gateway), a client id (working memory and rate limits
    are per client) and the scopes granted (``*`` everything, ``rag:*`` every rag scope, ``rag:read`` one).
    ``pre_audit``, when set, records each state-changing call in the caller's own audit log (the anchor gateway's
    PostgreSQL) before it runs; if it fails the call is not run. ``session`` (a transport's session, e.g. HTTP's
    ``Mcp-Session-Id``) narrows per-client state such as working memory within the authenticated client: see
    :attr:`namespace`; rate limits stay per client."""

    transport: str
    client_id: str
    scopes: frozenset[str] = ALL_SCOPES
    # When set, the only tools this caller may call or see (least privilege: an agent holds its roster's tools).
    tools: frozenset[str] | None = None
    pre_audit: PreAudit | None = field(default=None, compare=False, repr=False)
    session: str | None = None

    @property
    def namespace(self) -> str:
        """Whose per-client state this is: the authenticated client id, plus the session when there is one (a
        session id alone never names it, so one client cannot reach another's state by presenting its session)."""
        if self.session is None:
            return self.client_id
        return f"{self.client_id}/session:{self.session[:MAX_SESSION_ID_CHARS]}"

    def has_scope(self, scope: str) -> bool:
        area = scope.partition(":")[0]
        return "*" in self.scopes or scope in self.scopes or f"{area}:*" in self.scopes


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as MCP clients expect it: references inlined, no generated titles."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = defs[node["$ref"].rsplit("/", 1)[-1]]
                merged = {**clean(target), **{k: clean(v) for k, v in node.items() if k != "$ref"}}
                return merged
            return {k: clean(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    out = clean(raw)
    assert isinstance(out, dict)
    return out


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_model: type[BaseModel]
    scope: str
    changes_state: bool
    handler: Handler
    output_model: type[BaseModel] | None = None
    title: str | None = None
    destructive: bool = False
    idempotent: bool = False
    # When set, the only transports that may see or call this tool (the agents' internal tools: {"agents"}).
    transports: frozenset[str] | None = None
    input_schema: dict[str, Any] = field(init=False, repr=False, compare=False)
    output_schema: dict[str, Any] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_schema", json_schema(self.input_model))
        out = json_schema(self.output_model) if self.output_model is not None else None
        object.__setattr__(self, "output_schema", out)

    def annotations(self) -> dict[str, bool]:
        return {
            "readOnlyHint": not self.changes_state,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent or not self.changes_state,
            "openWorldHint": False,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": self.input_schema,
            "outputSchema": self.output_schema,
            "annotations": self.annotations(),
            "scope": self.scope,
            "changesState": self.changes_state,
        }


@dataclass(frozen=True)
class Resource:
    """A readable resource: ``read(caller)`` returns its text (JSON unless ``mime_type`` says otherwise)."""

    uri: str
    name: str
    title: str
    description: str
    scope: str
    read: Callable[[Caller], Awaitable[str]]
    mime_type: str = "application/json"

    def describe(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "mimeType": self.mime_type,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """A tool's result: ``structured`` (a JSON object, MCP structuredContent) and ``text`` (its JSON text)."""

    structured: dict[str, Any]
    text: str


class _Buckets:
    """Token buckets per client for state-changing calls (rate per second, burst), bounded in clients."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s, self.burst = per_s, float(burst)
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str, now: float) -> float:
        """Take one token; returns 0.0, or the seconds until one is available (nothing taken)."""
        tokens, at = self._state.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.per_s
        self._state[client] = (tokens, now)
        while len(self._state) > MAX_RATE_BUCKETS:
            self._state.popitem(last=False)
        return wait


class Registry:
    """The tools of one node. Instances, not module state: ten nodes can share a process."""

    def __init__(self, settings: McpSettings, *, now: Callable[[], float], audit: AuditLog | None = None) -> None:
        self.settings = settings
        self._now = now
        self.audit = audit
        self.tools: dict[str, Tool] = {}
        self.resources: dict[str, Resource] = {}
        self._buckets = _Buckets(settings.state_calls_per_min / 60.0, settings.state_calls_burst)
        self.calls = 0
        self.failures: dict[str, int] = {}  # by error class name
        self.output_mismatches: dict[str, int] = {}  # answers outside the output model, by (registered) tool

    def add(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ValueError(f"tool {tool.name} registered twice")
        if not tool.description.strip():
            raise ValueError(f"tool {tool.name} has no description")
        self.tools[tool.name] = tool

    def extend(self, tools: Iterable[Tool]) -> None:
        for t in tools:
            self.add(t)

    def add_resource(self, resource: Resource) -> None:
        if resource.uri in self.resources:
            raise ValueError(f"resource {resource.uri} registered twice")
        self.resources[resource.uri] = resource

    def listed_resources(self, caller: Caller) -> list[Resource]:
        return [r for r in self.resources.values() if caller.has_scope(r.scope)]

    async def read(self, uri: str, *, caller: Caller) -> str:
        """Read a resource (scope-checked and audited like a tool call, as ``resources/read <uri>``)."""
        started = self._now()
        error: ToolError | None = None
        try:
            res = self.resources.get(uri)
            if res is None:
                raise UnknownTool(f"unknown resource {uri!r}; resources/list names them")
            if not caller.has_scope(res.scope):
                raise NotAllowed(f"{uri} needs the {res.scope!r} scope, which this client was not granted")
            try:
                return await res.read(caller)
            except ToolError:
                raise
            except NodeError as exc:
                raise ToolError(str(exc) or type(exc).__name__) from None
        except ToolError as exc:
            error = exc
            raise
        finally:
            if self.audit is not None:
                self.audit.record(
                    tool=f"resources/read {uri}",
                    caller=caller,
                    changes_state=False,
                    args=None,
                    error=error,
                    duration_s=self._now() - started,
                )

    def listed(self, caller: Caller) -> list[Tool]:
        """The tools this caller may call (scope and transport policy)."""
        return [
            t
            for t in self.tools.values()
            if caller.has_scope(t.scope) and self.permitted(t, caller.transport) and _reachable(t, caller)
        ]

    def permitted(self, tool: Tool, transport: str) -> bool:
        if tool.transports is not None and transport not in tool.transports:
            return False
        if not tool.changes_state:
            return True
        return _matches(self.settings.allow, transport, tool.name) and not _matches(
            self.settings.deny, transport, tool.name
        )

    async def call(self, name: str, args: dict[str, Any] | None, *, caller: Caller) -> Outcome:
        started = self._now()
        tool = self.tools.get(name)
        error: ToolError | None = None
        try:
            return await self._call(tool, name, args or {}, caller)
        except ToolError as exc:
            error = exc
            raise
        finally:
            self.calls += 1
            if error is not None:
                key = type(error).__name__
                self.failures[key] = self.failures.get(key, 0) + 1
            if self.audit is not None:
                self.audit.record(
                    tool=name,
                    caller=caller,
                    changes_state=tool.changes_state if tool is not None else None,
                    args=args,
                    error=error,
                    duration_s=self._now() - started,
                )

    async def _call(self, tool: Tool | None, name: str, args: dict[str, Any], caller: Caller) -> Outcome:
        if caller.tools is not None and name not in caller.tools:
            raise NotAllowed(f"{caller.client_id} may not call {name}: it is not among the tools granted to it")
        if tool is None or (tool.transports is not None and caller.transport not in tool.transports):
            raise UnknownTool(f"unknown tool {name!r}; tools/list names the tools this node offers")
        if not caller.has_scope(tool.scope):
            raise NotAllowed(f"{name} needs the {tool.scope!r} scope, which this client was not granted")
        if not isinstance(args, dict):
            raise InvalidArguments(f"{name}: arguments must be an object")
        if tool.changes_state:
            if not self.permitted(tool, caller.transport):
                raise NotAllowed(f"{name} changes state and is not allowed over {caller.transport} ([mcp] allow/deny)")
            wait = self._buckets.take(f"{caller.transport}:{caller.client_id}", self._now())
            if wait > 0:
                raise ToolRateLimited(f"too many state-changing calls; retry in {wait:.1f} s")
        try:
            params = tool.input_model.model_validate(args)
        except ValidationError as exc:
            raise InvalidArguments(f"invalid arguments for {name}: {_describe_validation(exc)}") from None
        if tool.changes_state and caller.pre_audit is not None:
            digest, size = args_digest(args)
            try:
                await caller.pre_audit(name, digest, size)
            except NodeError as exc:
                log.warning("%s refused for %s: audit write failed: %s", name, caller.client_id, exc)
                raise AuditUnavailable(
                    f"{name} was not run: its audit record could not be written (the audit log is unavailable); "
                    "retry later"
                ) from None
        try:
            value = await tool.handler(params, caller)
            if isinstance(value, Outcome):
                return self._checked(tool, value, caller, text_is_json=False)
        except ToolError:
            raise
        except NodeError as exc:  # the node's own errors (RpcError, RagError, MeshError...) carry a usable message
            raise ToolError(str(exc) or type(exc).__name__) from None
        except Exception:  # supervised boundary: a tool's bug becomes a generic ToolError for the caller (logged)
            log.exception("tool %s failed unexpectedly (caller %s:%s)", name, caller.transport, caller.client_id)
            raise ToolError(f"internal error in {name}; the node's log has the details") from None
        if isinstance(value, BaseModel):
            structured = value.model_dump(mode="json", by_alias=True)
        elif isinstance(value, dict):
            structured = value
        else:
            structured = {"result": value}
        try:  # strict JSON: NaN/Infinity are not JSON; a structure nested beyond any reader is refused here
            text = json.dumps(structured, indent=2, ensure_ascii=False, allow_nan=False)
        except (ValueError, TypeError, RecursionError) as exc:
            self.output_mismatches[name] = self.output_mismatches.get(name, 0) + 1
            log.error(
                "tool %s answered something that is not JSON (caller %s:%s): %s",
                name,
                caller.transport,
                caller.client_id,
                type(exc).__name__,
            )
            if tool.changes_state:  # done: say so without the answer rather than invite a retry
                text = json.dumps({"result": "done; its answer could not be encoded (the node's log says why)"})
                return Outcome({"result": "done; its answer could not be encoded (the node's log says why)"}, text)
            raise ToolError(f"internal error in {name}: its answer could not be encoded as JSON") from None
        outcome = Outcome(structured, text)
        return self._checked(tool, outcome, caller, text_is_json=True)

    def _checked(self, tool: Tool, outcome: Outcome, caller: Caller, *, text_is_json: bool) -> Outcome:
        """The answer, if it matches the tool's output model. If not, the node's log has the details and it is
        counted (:attr:`output_mismatches`); a read-only tool's caller gets a ToolError, but a state-changing tool's
        answer is returned anyway: its side effect has happened, and an error would make clients and agents retry it
        (a second message, broadcast or vote)."""
        why = _output_mismatch(tool, outcome, text_is_json=text_is_json)
        if why is None:
            return outcome
        self.output_mismatches[tool.name] = self.output_mismatches.get(tool.name, 0) + 1
        log.error(
            "tool %s answered outside its output schema (caller %s:%s)%s: %s",
            tool.name,
            caller.transport,
            caller.client_id,
            "; answered anyway, its side effect has happened" if tool.changes_state else "",
            why,
        )
        if tool.changes_state:
            return outcome
        raise ToolError(f"internal error in {tool.name}: its answer did not match its output schema")


def _output_mismatch(tool: Tool, outcome: Outcome, *, text_is_json: bool) -> str | None:
    """Why the answer does not match the tool's declared output model (checked strictly: what passes here passes a
    client's JSON Schema check of ``outputSchema``), or None if it does. The Python structure is validated, not its
    JSON text (pydantic-core's JSON parser refuses nesting deeper than ~200 levels); when ``outcome.text`` is the JSON
    of ``structured``, the structure it parses back to is checked: that is what the client receives (a tuple in a
    handler's answer is a JSON array there, as on the wire)."""
    if tool.output_model is None:
        return None
    validator = tool.output_model.__pydantic_validator__
    try:
        value = json.loads(outcome.text) if text_is_json else outcome.structured
        validator.validate_python(value, strict=True)
    except ValidationError as exc:
        return _describe_validation(exc)
    except (ValueError, RecursionError) as exc:  # text that is not JSON; a structure nested beyond any reader
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def _reachable(tool: Tool, caller: Caller) -> bool:
    return (caller.tools is None or tool.name in caller.tools) and (
        tool.transports is None or caller.transport in tool.transports
    )


def _matches(patterns: Iterable[str], transport: str, tool: str) -> bool:
    for pattern in patterns:
        t_pat, sep, n_pat = pattern.partition(":")
        if not sep:
            t_pat, n_pat = "*", pattern
        if fnmatch.fnmatchcase(transport, t_pat) and fnmatch.fnmatchcase(tool, n_pat):
            return True
    return False


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
