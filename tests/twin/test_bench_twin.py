"""bench/twin.py still runs (a tiny synthetic sender), and the chitchat split keeps evaluated senders out of the
prior."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import twin
import twin_data

from node.twin.prior import GlobalPrior
from node.twin.rnn import RecurrentLM


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
    # Nor the other side of their conversations: no prior message comes from a conversation a report sender is in.
    leak = {c for u in report for c in senders[u].conversations}
    assert leak and not any(c in leak for s in twin_data.prior_senders(senders) for c in s.conversations)
    kept = sum(len(s.messages) for s in twin_data.prior_senders(senders))
    assert kept < sum(len(senders[u].messages) for u in prior)  # (messages were dropped, not whole senders only)


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


def _sender() -> twin_data.Sender:
    return twin_data.Sender("c0ffee", tuple(f"ping the zebulon server number {i % 5} please" for i in range(30)))


def test_a_replay_buffer_left_at_the_end_is_learned_timed_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of session 5: with replay > 1 what waited in the buffer at the sender's end was neither learned nor
    timed, and neural_updates counted tokens queued, not learned."""
    learned: list[int] = []
    adapt_batch = RecurrentLM.adapt_batch

    def spy(self: RecurrentLM, batch: Any, *args: Any, **kwargs: Any) -> int:
        learned.append(len(batch))
        return adapt_batch(self, batch, *args, **kwargs)

    monkeypatch.setattr(RecurrentLM, "adapt_batch", spy)
    prior = GlobalPrior.load_packaged()
    cfg = twin.Config("batch_always_r50", neural=True, gate_fraction=1.0, topk=False, replay=50)
    r = twin.run_sender(prior, twin._packaged_neural(), _sender(), cfg)
    assert r.neural_updates == sum(learned) > 0 and r.neural_updates % 50  # the last, partial batch too
    assert r.neural_s > 0 and r.update_s >= r.neural_s


def test_the_random_control_draws_by_its_seed() -> None:
    prior = GlobalPrior.load_packaged()
    nn = twin._packaged_neural()
    runs = [
        twin.run_sender(
            prior,
            nn,
            _sender(),
            twin.Config("msg_random", neural=True, gate_fraction=0.5, topk=False, message_gate="random", gate_seed=s),
        )
        for s in (0, 1, 0)
    ]
    assert runs[0].neural_updates == runs[2].neural_updates != runs[1].neural_updates


@pytest.mark.parametrize("extra", [[], ["--msg-gate", "edge:0.5:1", "--gate-score", ""]])
def test_gate_neural_with_a_message_gate_is_refused(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--gate-neural puts the neural tier's bits in place of the mixture's: a message gate's edge is then 0."""
    with pytest.raises(SystemExit) as exc:
        twin.main(["--gate-neural", "--senders", "no-such-sender", *extra])
    assert exc.value.code == 2 and "--gate-neural" in capsys.readouterr().err


def test_a_warm_up_config_passes_the_first_messages_and_the_adapter_gain_lines_split_by_sender(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--msg-gate SCORE:F:REPLAY:WEIGHT::WARMUP`` learns every message of the warm-up; the per-sender
    adapter-gain lines attribute the always-update's gain over bias only to each sender (shares summing to 100)."""
    prior = GlobalPrior.load_packaged()
    nn = twin._packaged_neural()
    cfg = twin.Config("warm", neural=True, gate_fraction=0.01, topk=False, message_gate="edgec", gate_warmup=10**6)
    warm = twin.run_sender(prior, nn, _sender(), cfg)
    cold = twin.run_sender(prior, nn, _sender(), dataclasses.replace(cfg, gate_warmup=0))
    always = twin.run_sender(prior, nn, _sender(), twin.Config("batch_always", neural=True, gate_fraction=1.0))
    assert warm.neural_updates == always.neural_updates > cold.neural_updates
    per_user = {
        twin.BIAS_ONLY: [
            ("aaaa0000", twin.Result(tokens=10, bits=50.0)),
            ("bbbb0000", twin.Result(tokens=10, bits=40.0)),
        ],
        "batch_always": [
            ("aaaa0000", twin.Result(tokens=10, bits=47.0)),
            ("bbbb0000", twin.Result(tokens=10, bits=39.0)),
        ],
    }
    twin._adapter_gain_lines(per_user, "batch_always")
    out = capsys.readouterr().out
    assert "aaaa0000: +0.3000 bits/token over bias only (75.0 % of the pooled adapter gain)" in out
    assert "bbbb0000: +0.1000 bits/token over bias only (25.0 % of the pooled adapter gain)" in out
