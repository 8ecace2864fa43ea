"""RAG errors::

NodeError (node.errors)
└── RagError                 anything the knowledge base refuses or cannot do
    ├── ModelMissing         the embedding model or tokenizer package is not installed (says how to install)
    ├── ExtractError         a file could not be read or its format is not supported
    ├── RagStoreError        the SQLite store is unusable (wrong schema version, disk error)
    ├── DocumentNotFound     no document / chunk with that id or source
    └── TrustError           (node.rag.trust) a trust value or key is out of range
"""

from __future__ import annotations

from node.errors import NodeError


class RagError(NodeError):
    """Base for knowledge-base failures visible to the user."""


class ModelMissing(RagError):
    """The embedding model or its tokenizer is not installed; the message gives the pip command."""


class ExtractError(RagError):
    """A file could not be read, or its format is not supported."""


class RagStoreError(RagError):
    """The SQLite store cannot be used."""


class DocumentNotFound(RagError):
    """No document or chunk matches."""
