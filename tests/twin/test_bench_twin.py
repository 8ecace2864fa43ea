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


def test_oracle_counts_candidate_misses() -> None:
    import twin_oracle

    msgs = tuple(f"ping the zebulon server number {i % 5} please" for i in range(30))
    st = twin_oracle.run(twin_data.Sender("0c0ffee", msgs))
    n = st["all.n"]
    assert n == st["eos.n"] + st["word.n"] + st["punct.n"] > 0 and st["first.n"] == st["eos.n"] == 6
    assert st["all.top3"] <= st["all.oracle3"] <= n and st["all.top3"] <= st["all.in_cand"]
    assert st["all.oracle3"] - st["all.top3"] <= n - st["all.in_cand"]  # only a missing candidate can differ
    assert st["eos.top3"] == 6  # the repeated message's end is learned


def test_oracle_refuses_report_senders() -> None:
    pytest.importorskip("chitchat_dataset")
    import twin_oracle

    with pytest.raises(SystemExit):
        twin_oracle.main(["--senders", "c,d,e,f"])
