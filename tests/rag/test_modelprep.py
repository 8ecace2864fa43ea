"""The MiniLM rewritten by node.rag.modelprep: embedding lookups dequantize only the rows they read, the vectors are
bit-identical to the shipped model's, the rewrite is made once (child process) and kept 0600, and a failure falls
back to the shipped file."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.rag import embed, modelprep
from node.rag.embed import Embedder, EmbedderSettings

TEXTS = [
    "Cats sleep most of the day.",
    "The p53 tumour suppressor regulates apoptosis in T-cells after DNA damage. " * 12,
    "Photosynthesis",
    "Volcanoes erupt molten basalt lava; the plume reaches the stratosphere within minutes.",
    "IL-6 and TNF-alpha levels rose in the cohort.",
]


def _embedder(batch: int, cache: Path | None) -> Embedder:
    return Embedder(EmbedderSettings(intra_op_threads=1, batch_size=batch, cache_dir=cache))


def test_the_rewritten_model_gathers_int8_rows_instead_of_dequantizing_the_table(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    src, _ = embed.model_files()
    dst = tmp_path / "m.onnx"
    assert modelprep.prepare(src, dst) >= 1
    assert dst.stat().st_mode & 0o777 == 0o600

    def tables(model: Any) -> set[str]:  # initializers with at least 10,000 rows (the vocabulary's)
        return {i.name for i in model.graph.initializer if len(i.dims) == 2 and i.dims[0] >= 10_000}

    before, after = onnx.load(str(src)), onnx.load(str(dst))
    assert tables(before) == tables(after) and tables(after)
    # The shipped graph casts the whole int8 vocabulary table on every call; the rewritten one only gathers from it.
    assert any(n.op_type == "Cast" and set(n.input) & tables(before) for n in before.graph.node)
    readers = [n for n in after.graph.node if set(n.input) & tables(after)]
    assert readers and all(n.op_type == "Gather" and n.input[0] in tables(after) for n in readers)


def test_vectors_are_bit_identical_to_the_shipped_model_at_any_batch_size(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    cache = tmp_path / "model"
    shipped = _embedder(8, None).embed(TEXTS)
    for batch in (1, 2, 8):
        assert np.array_equal(_embedder(batch, cache).embed(TEXTS), shipped)
    (made,) = cache.iterdir()
    assert made.name == modelprep.cached_name(embed.model_files()[0])
    assert made.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700


def test_the_rewrite_is_made_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    cache = tmp_path / "model"
    first = _embedder(4, cache)
    first.load()
    (made,) = cache.iterdir()
    stamp = made.stat().st_mtime_ns

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was rewritten again")

    monkeypatch.setattr(subprocess, "run", refuse)
    second = _embedder(4, cache)
    assert np.array_equal(second.embed(TEXTS[:2]), first.embed(TEXTS[:2]))
    assert made.stat().st_mtime_ns == stamp


def test_a_failed_rewrite_falls_back_to_the_shipped_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="village.rag"):
        vecs = _embedder(4, blocker / "model").embed(TEXTS[:3])
    assert "could not prepare the embedding model" in caplog.text
    assert np.array_equal(vecs, _embedder(4, None).embed(TEXTS[:3]))


def test_a_graph_without_a_dequantized_lookup_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["out"])],
        "plain",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor("table", TensorProto.FLOAT, [3, 2], [0.0] * 6)],
    )
    src = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(src))
    with pytest.raises(ValueError, match="no dequantized embedding lookup"):
        modelprep.prepare(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_a_prepared_file_that_does_not_load_is_removed_and_the_shipped_model_used(tmp_path: Path) -> None:
    cache = tmp_path / "model"
    cache.mkdir(mode=0o700)
    bad = cache / modelprep.cached_name(embed.model_files()[0])
    bad.write_bytes(b"not an onnx model")
    vecs = _embedder(4, cache).embed(TEXTS[:2])
    assert not bad.exists()
    assert np.array_equal(vecs, _embedder(4, None).embed(TEXTS[:2]))
