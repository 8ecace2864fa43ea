"""Errors of the tool layer (node.mcp)::

    NodeError (node.errors)
    └── ToolError               a tool call failed; the message is shown to the caller as an MCP tool error
        ├── UnknownTool         no tool of that name
        ├── InvalidArguments    the arguments do not match the tool's input schema
        ├── NotAllowed          the caller lacks the tool's scope, or [mcp] allow/deny refuses it
        ├── ToolRateLimited     too many state-changing calls; retry later
        ├── MemoryFull          a memory bound (entries or bytes) would be exceeded
        ├── AuditUnavailable    the caller's audit record (e.g. the anchor's PostgreSQL) could not be written
        │                       before a state-changing call, so the call was not run
        ├── ToolNodeUnavailable the stdio front end cannot reach the daemon's control socket
        └── McpLoadFailed       the MCP layer (loaded on first use) could not be loaded on this node

A ToolError's message is written for the caller (often a language model): it says what was wrong and, where it
can, what to do. Nothing else reaches a caller: unexpected exceptions become a generic "internal error" and are
logged with context.
"""

from __future__ import annotations

from node.errors import NodeError


class ToolError(NodeError):
    """A tool call failed; ``str(exc)`` is the message for the caller."""


class UnknownTool(ToolError):
    pass


class InvalidArguments(ToolError):
    pass


class NotAllowed(ToolError):
    pass


class ToolRateLimited(ToolError):
    pass


class MemoryFull(ToolError):
    pass


class AuditUnavailable(ToolError):
    pass


class ToolNodeUnavailable(ToolError):
    pass


class McpLoadFailed(ToolError):
    """The MCP layer could not be loaded on this node (the message says why; the daemon log has the traceback)."""
