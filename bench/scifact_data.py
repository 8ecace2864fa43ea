"""SciFact loading for bench/scifact.py and tests/rag (corpus, queries, test and training relevance judgments).

Files (see ``../shared/data/README.md``): ``corpus_train.csv`` (doc_id, title, abstract as a printed Python list of
sentence strings), ``queries.jsonl`` (BEIR), ``qrels_test.tsv`` (the 300 test queries) and ``claims_train.csv``
(training claims with evidence or cited doc ids: used to tune fusion weights, never the test qrels).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tokenize
from ast import literal_eval
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "VILLAGE_SHARED_DIR"


def scifact_dir() -> Path:
    """``$VILLAGE_SHARED_DIR/data/scifact``, else ``<repo root>/../shared/data/scifact``."""
    base = Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else REPO_ROOT.parent / "shared"
    return base / "data" / "scifact"


@dataclass(frozen=True, slots=True)
class SciFact:
    docs: dict[str, str]  # doc_id -> title + sentences joined by spaces
    queries: dict[str, str]  # query id -> text (all 1,109)
    test_qrels: dict[str, set[str]]  # query id -> relevant doc ids (300 test queries)
    train_qrels: dict[str, set[str]]  # training claim id -> evidence/cited doc ids (disjoint from the test ids)


def _sentences(printed: str) -> list[str]:
    """The string literals of a printed list (numpy prints them without commas: implicit concatenation)."""
    out: list[str] = []
    for tok in tokenize.generate_tokens(io.StringIO(printed).readline):
        if tok.type == tokenize.STRING:
            out.append(literal_eval(tok.string))
    return out


def load(path: Path | None = None) -> SciFact:
    root = path or scifact_dir()
    csv.field_size_limit(sys.maxsize)
    docs: dict[str, str] = {}
    with (root / "corpus_train.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            docs[row["doc_id"]] = " ".join([row["title"], *_sentences(row["abstract"])]).strip()
    queries: dict[str, str] = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                queries[str(q["_id"])] = q["text"]
    test: dict[str, set[str]] = {}
    with (root / "qrels_test.tsv").open(encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.split("\t")
            if int(score) > 0:
                test.setdefault(qid, set()).add(did)
    train: dict[str, set[str]] = {}
    with (root / "claims_train.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            qid = row["id"]
            if qid in test or qid not in queries:
                continue
            ids = {row["evidence_doc_id"]} if row["evidence_doc_id"] else set(re.findall(r"\d+", row["cited_doc_ids"]))
            ids = {str(i) for i in ids if str(i) in docs}
            if ids:
                train.setdefault(qid, set()).update(ids)
    return SciFact(docs=docs, queries=queries, test_qrels=test, train_qrels=train)
