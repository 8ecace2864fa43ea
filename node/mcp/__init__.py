"""The node's tools over MCP: one tool registry (typed, scoped, rate-limited, audited) used by the MCP server, the
twin and the agents; persistent (knowledge-graph) and working memory; stdio and Streamable HTTP transports."""
