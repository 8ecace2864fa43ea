"""bench/twin.py still runs (a tiny synthetic sender), and the chitchat split keeps evaluated senders out of the
prior."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import twin
import twin_data

from node.twin.prior import GlobalPrior


def test_run_sender_measures_a_tiny_user() -> None:
    prior = GlobalPrior.load_packaged()
    msgs = tuple(f"ping the zebulon server number {i % 5} please" for i in range(30))
    sender = twin_data.Sender("c0ffee", msgs)
    nn = twin._packaged_neural()
    r = twin.run_sender(
        prior,
        nn,
        sender,
        twin.Config("twin", neural=True, gate_fraction=0.3, extras=True),
        ks_words=20,
        latency_samples=5,
    )
    base = twin.run_sender(prior, nn, sender, twin.Config("prior", fixed_lambda=0.0, recency=False))
    assert r.tokens == base.tokens > 0
    assert r.top1 > base.top1 and r.bits < base.bits  # the user's repeated phrase is learned
    assert r.ks_full > r.ks_typed > 0 and len(r.latencies) == 5 and r.size_bytes > 0


def test_split_keeps_evaluated_senders_out_of_the_prior() -> None:
    pytest.importorskip("chitchat_dataset")
    senders = twin_data.load_senders()
    prior = {s.uuid for s in twin_data.prior_senders(senders)}
    dev = {s.uuid for s in twin_data.dev_senders(senders)}
    report = {s.uuid for s in twin_data.report_senders(senders)}
    assert not prior & dev and not prior & report and not dev & report
    assert all(u[0] in "cdef" for u in report) and all(u[0] in "0123456789ab" for u in prior | dev)
    assert len(report) >= 30 and len(dev) >= 20
    assert all(senders[u].words >= twin_data.MIN_WORDS for u in report | dev)
