"""HyperRAG: a private local knowledge base (ingest → chunks → embeddings → hnswlib + FTS5 BM25 → fusion).

Modules: ``store`` (SQLite schema, the source of truth), ``extract`` (text from files), ``chunking``,
``embed`` (onnxruntime MiniLM), ``index`` (hnswlib, rebuilt from SQLite), ``fusion``, ``ingest``, ``service``
(the trio-facing RagService the Node owns), ``rpc`` (control methods) and ``cli``. The knowledge graph
(``graph``), trust (``trust``) and the federated query (``federated``) plug into the service.
"""
