"""RAG errors::

NodeError (node.errors)
└── RagError                 anything the knowledge base refuses or cannot do
    ├── ModelMissing         the embedding model or tokenizer package is not installed (says how to install)
    ├── ExtractError         a file could not be read or its format is not supported
    ├── StoreError           the SQLite store is unusable (wrong schema version, disk error)
    └── NotFound             no document / chunk with that id or source
"""

from __future__ import annotations

from node.errors import NodeError


class RagError(NodeError):
    """Base for knowledge-base failures visible to the user."""


class ModelMissing(RagError):
    """The embedding model or its tokenizer is not installed; the message gives the pip command."""


class ExtractError(RagError):
    """A file could not be read, or its format is not supported."""


class StoreError(RagError):
    """The SQLite store cannot be used."""


class NotFound(RagError):
    """No document or chunk matches."""
