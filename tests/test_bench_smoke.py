"""The routing benchmarks still run (tiny sizes): a change to the core must not leave them broken."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import mesh_sim
import relay


def test_relay_bench_runs() -> None:
    [line] = relay.run(50, 1)
    assert line.startswith("relay.packets_per_s:") and "2 frames out per packet" in line


def test_mesh_sim_bench_runs_both_modes() -> None:
    common = {"seed": 1, "messages": 4, "broadcasts": 1, "budget_s": 120.0, "drain_s": 30.0}
    path = mesh_sim.run_one(30, 0.1, "path", **common)  # type: ignore[arg-type]
    flood = mesh_sim.run_one(30, 0.1, "flood", **common)  # type: ignore[arg-type]
    line = mesh_sim.unicast_line(path, flood)
    assert line.startswith("mesh_sim.unicast.n30.loss10:") and path.finished and flood.finished
    assert path.report.unicast_sent == 4


def test_hostile_bench_runs() -> None:
    import hostile

    attacked = hostile.run(300, 50, 2, 3, 1)
    quiet = hostile.run(0, 50, 2, 3, 1)
    lines = hostile.report(attacked, quiet, 50)
    assert [line.split(":")[0] for line in lines] == [
        "hostile.rss_mib",
        "hostile.frames_per_s",
        "hostile.amplification",
        "hostile.honest_ratio",
        "hostile.bounds",
        "hostile.escaped",
    ]
    assert attacked.frames == 300 and attacked.honest_acked == attacked.honest_sent == 6
    assert "hostile.escaped: 0" in lines[-1]


def test_mesh_sim_scale_runs(capsys: object) -> None:
    runs = mesh_sim.run_scale(
        [20, 40],
        seed=1,
        messages=2,
        budget_s=120.0,
        clock="cpu",
        warmup_s=20.0,
        drain_s=10.0,
        join_per_s=10.0,
        progress_every_s=10.0,
    )
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    out = captured.out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "mesh_sim.scale.n20.loss10.startup",
        "mesh_sim.scale.n20.loss10.steady",
        "mesh_sim.scale.n40.loss10.startup",
        "mesh_sim.scale.n40.loss10.steady",
        "mesh_sim.scale.flatness",
    ]
    for s, line in zip(runs, out[1:4:2], strict=True):
        assert s.run.finished and s.clock == "cpu" and "cpu cost per node per sim s" in line
    # Nodes join at 10 per simulated s (20 nodes over 2 s, 40 over 4 s); the warm-up runs 20 s past the join window,
    # then 2 sends 0.5 s apart, then the 10 s drain.
    assert [s.join_window_s for s in runs] == [2.0, 4.0]
    assert "nodes joining over 4 s" in out[2] and "0-24 sim s" in out[2] and "24-34 sim s" in out[3]
    assert runs[0].run.warmup_end_s == 22.0 and runs[0].run.report.sim_time_s == 32.5
    assert runs[1].run.verify_per_s is not None and runs[1].run.verify_per_s > 0
    progress = [line for line in captured.err.splitlines() if line.startswith("  progress n40:")]
    assert len(progress) == 3 and "RSS" in progress[0]  # at 10, 20 and 30 simulated s
