"""Review of ingest4: a prior file (a modified package, ``bench --prior``) was checked only on its n-gram keys. A
2-D weight, a short discount list, a zero context total or a negative count now fail the load as TwinStoreError,
instead of a TypeError / IndexError at load or query time, or infinite and wrong probabilities."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from node.twin import blob, prior
from node.twin.errors import TwinStoreError
from node.twin.prior import GlobalPrior
from node.twin.tokens import message_tokens

from .helpers import CORPUS

Arrays = dict[str, np.ndarray[Any, Any]]
Mutate = Callable[[Arrays, dict[str, Any]], None]


def _build() -> tuple[Arrays, dict[str, Any]]:
    data = prior.build(
        [message_tokens(m) for m in CORPUS], prior.BuildSettings(order=3, min_word_count=1, max_vocab=1000)
    )
    arrays, meta = blob.unpack_untrusted(data, prior.MAGIC, prior.FORMAT_VERSION, max_bytes=1 << 28)
    return {k: np.array(a) for k, a in arrays.items()}, meta


def _set(name: str, make: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]) -> Mutate:
    return lambda arrays, meta: arrays.__setitem__(name, make(arrays[name]))


def _discounts(value: Any) -> Mutate:
    return lambda arrays, meta: meta["discounts"].__setitem__("3", value)


HOSTILE: dict[str, Mutate] = {
    "ctx_gamma3 2-D": _set("ctx_gamma3", lambda a: np.stack([a, a], axis=1)),
    "ctx_gamma3 NaN": _set("ctx_gamma3", lambda a: np.full_like(a, np.nan)),
    "ctx_gamma3 negative": _set("ctx_gamma3", lambda a: -a),
    "discounts of order 3 = [0.5]": _discounts([0.5]),
    "discounts of order 3 infinite": _discounts([0.5, 1.0, float("inf")]),
    "discounts of order 3 text": _discounts("abc"),
    "ctx_tot3 all zero": _set("ctx_tot3", np.zeros_like),
    "counts3 negative": _set("counts3", lambda a: -a.astype(np.int64)),
    "counts3 floats": _set("counts3", lambda a: a.astype(np.float64)),
    "p1 NaN": _set("p1", lambda a: np.full_like(a, np.nan)),
    "p1 2-D": _set("p1", lambda a: a.reshape(1, -1)),
    "no BOS in the vocabulary": _set("vocab", lambda a: np.frombuffer(bytes(a).replace(b"<s>", b"<x>"), np.uint8)),
    # Session 8 (review LOW, packaged file only): finite values the load accepted that are out of range.
    "ctx_gamma3 finite in float64, past float32": _set("ctx_gamma3", lambda a: np.full(a.shape, 1e300)),
    "ctx_gamma3 above 1": _set("ctx_gamma3", lambda a: np.full_like(a, 5.0)),
    "discount D1 of order 3 above 1": _discounts([2.5, 1.0, 1.3]),
    "discount D2 of order 3 above 2": _discounts([0.5, 2.5, 1.3]),
    "ctx_tot3 near 0 (a division by ~0)": _set("ctx_tot3", lambda a: np.full(a.shape, 1e-300)),
    "ctx_tot3 past float32": _set("ctx_tot3", lambda a: np.full(a.shape, 1e300)),
    "ctx_tot3 below its counts": _set("ctx_tot3", lambda a: np.full_like(a, 1.0)),
    "p1 above 1": _set("p1", lambda a: np.full_like(a, 2.0)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_prior_is_refused_at_load(case: str) -> None:
    arrays, meta = _build()
    good = GlobalPrior(blob.pack(prior.MAGIC, prior.FORMAT_VERSION, arrays, meta))
    assert np.isfinite(good.probs([0, 0], np.arange(good.v))).all()
    meta = copy.deepcopy(meta)
    HOSTILE[case](arrays, meta)
    with pytest.raises(TwinStoreError):
        GlobalPrior(blob.pack(prior.MAGIC, prior.FORMAT_VERSION, arrays, meta))
