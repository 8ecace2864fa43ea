"""The root of every error this project raises on purpose, and the whole tree.

Each package has its own ``errors.py`` whose classes derive from the ones here and whose docstring draws its
branch; this drawing covers every package (the module follows a class defined elsewhere than here).
``tests/test_errors.py`` checks that it and every ``errors.py`` drawing equal the real subclasses::

    NodeError
    ├── ConfigError                 bad or unknown config key (the message names it)
    ├── IdentityError               missing/corrupt key files
    │   └── KeyPermissionError      key file readable by group/others
    ├── StartupError                the daemon could not start (port in use, socket busy, ...)
    ├── ProtocolError               wire-format errors
    │   ├── MalformedFrame          (node.wire.errors) remote: untrusted bytes from the network did not parse
    │   └── EncodeError             (node.wire.errors) local: the format cannot carry what we asked to encode
    ├── CryptoError                 cryptographic failures
    │   ├── HandshakeError          (node.crypto.errors) remote: a handshake message is bad or fails to verify
    │   │   └── LowOrderKey         (node.crypto.errors) remote: a DH result was all zeros
    │   ├── DecryptError            (node.crypto.errors) remote: a frame failed authentication
    │   ├── ReplayError             (node.crypto.errors) remote: a frame's nonce was seen already
    │   ├── NonceExhausted          (node.crypto.errors) local: rekey or a new handshake is needed
    │   └── MailboxError            (node.mailbox.protocol) the anchor refused a mailbox request
    ├── TransportError              transport/link failures
    │   ├── LinkClosed              (node.transports.base) the link is gone
    │   ├── FrameSizeError          (node.transports.base) local: a frame empty or over the MTU
    │   ├── StreamClosed            (node.mailbox.stream) the mailbox stream ended or stalled
    │   ├── DialError               (node.transports.betanet.transport) a betanet dial failed
    │   ├── DhtRequestRefused       (node.transports.betanet.dht_store) remote: a DHT request our server refuses
    │   └── RadioError              (node.transports.ble.base) the BLE radio failed
    │       ├── RadioUnavailable    (node.transports.ble.base) no usable controller
    │       └── RadioConnectionLost (node.transports.ble.base) a BLE connection dropped
    ├── MeshError                   messaging/routing failures visible to the user (unknown peer, ...)
    │   └── AppError                (node.routing.app) an app-protocol call failed
    │       ├── AppRemoteError      (node.routing.app) the peer answered with an error
    │       └── AppTimeout          (node.routing.app) no answer in time
    ├── ControlError                control-socket failures
    │   ├── RpcError                (node.control.rpc) an error object to send back to a client
    │   └── ClientError             (node.control.errors) the CLI could not talk to the node
    │       ├── NotRunning          (node.control.errors) nothing listens on the control socket
    │       └── RemoteCallError     (node.control.errors) the node answered with a JSON-RPC error
    ├── InboxError                  (node.inbox) the inbox store is unusable
    ├── OutboxError                 (node.outbox) the outbox store is unusable
    ├── PinFileError                (node.pinfile) the pin table could not be read or written
    ├── SimError                    (node.sim.errors) a scenario the simulator cannot run
    ├── RagError                    (node.rag.errors) the knowledge base refuses or cannot do it
    │   ├── ModelMissing            (node.rag.errors) the embedding model package is not installed
    │   ├── ExtractError            (node.rag.errors) a file could not be read
    │   ├── RagStoreError           (node.rag.errors) the SQLite store is unusable
    │   ├── DocumentNotFound        (node.rag.errors) no document / chunk with that id or source
    │   └── TrustError              (node.rag.trust) a trust value or key is out of range
    ├── TwinError                   (node.twin.errors) the personal model refuses or cannot do it
    │   ├── PriorMissing            (node.twin.errors) the shipped global prior is absent
    │   ├── TwinStoreError          (node.twin.errors) the twin's state file is unusable
    │   ├── LearningPaused          (node.twin.errors) the governor does not allow learning now
    │   └── AskError                (node.twin.errors) ask cannot take the request
    ├── AgentError                  (node.agents.errors) the agent layer refuses or cannot do it
    │   ├── RosterError             (node.agents.errors) roster file invalid
    │   ├── LlmError                (node.agents.errors) language model missing, misconfigured or failed
    │   │   └── LlmUnavailable      (node.agents.errors) the backend is off or not installed
    │   ├── ToolDenied              (node.agents.errors) a tool outside the agent's least-privilege list
    │   ├── ToolUnavailable         (node.agents.errors) this node cannot run that tool
    │   └── GovernanceError         (node.agents.errors) local misuse of the governance core
    │       └── InvalidCertificate  (node.agents.errors) a certificate does not verify
    ├── ToolError                   (node.mcp.errors) an MCP tool call failed
    │   ├── UnknownTool             (node.mcp.errors) no tool of that name
    │   ├── InvalidArguments        (node.mcp.errors) the arguments do not match the schema
    │   ├── NotAllowed              (node.mcp.errors) the caller lacks the scope, or allow/deny refuses
    │   ├── ToolRateLimited         (node.mcp.errors) too many state-changing calls
    │   ├── MemoryFull              (node.mcp.errors) a memory bound would be exceeded
    │   ├── AuditUnavailable        (node.mcp.errors) the caller's audit record could not be written: not run
    │   ├── ToolNodeUnavailable     (node.mcp.errors) the stdio front end cannot reach the daemon
    │   └── McpLoadFailed           (node.mcp.errors) the MCP layer could not be loaded on first use
    ├── StoreError                  (anchor.stores.errors) an anchor store was misused or holds bad data
    │   ├── StoreUnavailable        (anchor.stores.errors) the server is down or too slow (503)
    │   └── MigrationError          (anchor.stores.errors) the SQL migrations are inconsistent
    ├── GatewayError                (anchor.gateway.errors) an HTTP error (400 unless a subclass says)
    │   ├── Unauthenticated         (anchor.gateway.errors) 401
    │   ├── Forbidden               (anchor.gateway.errors) 403
    │   ├── RateLimited             (anchor.gateway.errors) 429 with Retry-After
    │   ├── NotFound                (anchor.gateway.errors) 404
    │   ├── BodyTooLarge            (anchor.gateway.errors) 413
    │   ├── NodeUnavailable         (anchor.gateway.errors) 503: the node is not running
    │   ├── QueueFull               (anchor.gateway.errors) 503: too many messages wait already
    │   ├── AuditBacklogFull        (anchor.gateway.errors) 503: too many audit records wait for PostgreSQL
    │   └── RagUnavailable          (anchor.gateway.errors) 503: no knowledge base on the node
    ├── QuotaFull                   (anchor.mailbox_quota) a mailbox deposit over its quota
    └── ServicesError               (anchor.services_settings) the services settings file is unusable

Every class name is unique in the tree. Remote errors (the peer sent garbage) are separated from local ones
(we misused an API), as h11 does: callers drop and count remote errors; local ones are bugs or user mistakes
and are reported.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base class for every error raised deliberately by the node."""


class ConfigError(NodeError):
    """A configuration value is missing, unknown or of the wrong form. The message names the key."""


class IdentityError(NodeError):
    """The node identity (key files) is missing, corrupt or unusable."""


class KeyPermissionError(IdentityError):
    """A key file can be read by group or others."""


class StartupError(NodeError):
    """The daemon could not start; the message says why and how to fix it."""


class ProtocolError(NodeError):
    """Base for wire-format errors."""


class CryptoError(NodeError):
    """Base for cryptographic failures."""


class TransportError(NodeError):
    """Base for transport/link failures."""


class MeshError(NodeError):
    """Base for messaging/routing failures visible to the user (unknown peer, text too long...)."""


class ControlError(NodeError):
    """Base for control-socket failures."""
