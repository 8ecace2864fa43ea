"""Agent and governance errors::

NodeError (node.errors)
└── AgentError                  anything the agent layer refuses or cannot do
    ├── RosterError             roster file invalid (the message names the agent and key)
    ├── LlmError                language model missing, misconfigured or failed
    │   └── LlmUnavailable      the backend is ``off`` or its package/model is not installed
    ├── ToolDenied              an agent asked for a tool outside its least-privilege list
    ├── ToolUnavailable         the tool is known but this node cannot run it (no RAG, not built yet)
    └── GovernanceError         local misuse of the governance core (bad electorate, unknown proposal, ...)
        └── InvalidCertificate  a certificate does not verify against its epoch's electorate

Untrusted vote/certificate/evidence/proposal bytes that do not parse raise ``MalformedFrame`` (node.wire.errors).
"""

from __future__ import annotations

from node.errors import NodeError


class AgentError(NodeError):
    """Base for agent-layer failures visible to the user."""


class RosterError(AgentError):
    """The roster file is invalid; the message names the agent and the key."""


class LlmError(AgentError):
    """The language model failed or is misconfigured."""


class LlmUnavailable(LlmError):
    """No language model: backend ``off``, or llama-cpp-python / the GGUF file is missing (says how to install)."""


class ToolDenied(AgentError):
    """An agent called a tool that is not in its roster entry."""


class GovernanceError(AgentError):
    """Local misuse of the governance core."""


class InvalidCertificate(GovernanceError):
    """A certificate's signatures or power do not verify against the electorate of its epoch."""


class ToolUnavailable(AgentError):
    """The tool exists in the roster's vocabulary but this node cannot run it (no RAG, no radio, not built yet)."""
