"""Rewrite the int8 MiniLM so an embedding lookup dequantizes the rows it reads, not the whole table.

The shipped model stores each embedding table as int8 with a per-row scale and dequantizes it in the graph::

    table = Mul(Cast(table_q, to=float), table_scale)      # 30,522 x 384 floats: 47 MB, twice, on EVERY run
    embedding = Gather(table, input_ids)

so every model call allocates and fills ~94 MB (the cast and the product) before reading a few hundred rows. That
is most of the embedder's transient memory and most of a short input's time. :func:`rewrite` turns each such chain
into the same arithmetic on the gathered rows only::

    embedding = Mul(Cast(Gather(table_q, input_ids), to=float), Gather(table_scale, input_ids))

Each output element is the same float32 product as before (``float(q) * scale``), so the vectors are unchanged.
Anything else in the graph is left alone; a chain that does not match exactly is not touched.

Needs the ``onnx`` package; the embedder runs :func:`prepare` once in a child process (``python -P
node/rag/modelprep.py SRC DST``: this file imports only the standard library and onnx), so the node never imports
onnx, keeps the result in its data dir (``rag/model/``) and falls back to the shipped model if it fails.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

REWRITE_VERSION = 1  # part of the cached file's name: bump when :func:`rewrite` changes


def cached_name(src: Path) -> str:
    """The rewritten model's file name: the source's sha256 (first 16 hex) and the rewrite version."""
    h = hashlib.sha256()
    with src.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"minilm-rowgather-v{REWRITE_VERSION}-{h.hexdigest()[:16]}.onnx"


def rewrite(model: Any) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; returns the number of lookups rewritten."""
    from onnx import TensorProto, helper

    g = model.graph
    producers = {out: n for n in g.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    rewritten = 0
    for gather in [n for n in g.node if n.op_type == "Gather"]:
        table, indices = gather.input[0], gather.input[1]
        mul = producers.get(table)
        if mul is None or mul.op_type != "Mul" or len(consumers.get(table, [])) != 1 or table in outputs:
            continue
        if any(a.name == "axis" and a.i != 0 for a in gather.attribute):
            continue
        cast = producers.get(mul.input[0])
        scale = mul.input[1]
        if cast is None or cast.op_type != "Cast" or len(consumers.get(mul.input[0], [])) != 1:
            continue
        if any(a.name == "to" and a.i != TensorProto.FLOAT for a in cast.attribute):
            continue
        table_q = cast.input[0]
        base = gather.name or table
        rows_q, rows_f, rows_s = f"{base}_rows_q", f"{base}_rows_f", f"{base}_rows_scale"
        new = [
            helper.make_node("Gather", [table_q, indices], [rows_q], name=f"{base}_gather_q", axis=0),
            helper.make_node("Cast", [rows_q], [rows_f], name=f"{base}_cast_rows", to=TensorProto.FLOAT),
            helper.make_node("Gather", [scale, indices], [rows_s], name=f"{base}_gather_scale", axis=0),
            helper.make_node("Mul", [rows_f, rows_s], [gather.output[0]], name=f"{base}_dequant_rows"),
        ]
        at = list(g.node).index(gather)
        g.node.remove(gather)
        for k, node in enumerate(new):
            g.node.insert(at + k, node)
        g.node.remove(mul)
        g.node.remove(cast)
        rewritten += 1
    return rewritten


def prepare(src: Path, dst: Path) -> int:
    """Write the rewritten model to ``dst`` (temporary file, fsync, rename; 0600). Returns lookups rewritten."""
    import onnx

    model = onnx.load(str(src))
    n = rewrite(model)
    if n == 0:
        raise ValueError(f"{src}: no dequantized embedding lookup to rewrite")
    onnx.checker.check_model(model)
    tmp = dst.with_name(dst.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -P node/rag/modelprep.py SRC.onnx DST.onnx", file=sys.stderr)
        return 2
    n = prepare(Path(argv[0]), Path(argv[1]))
    print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
