"""A handful of the scripted end-to-end tasks (tests/data/agent_tasks.toml; all of them: bench/agent_tasks.py) on
a real three-node in-process village: each checks what really happened (inbox, citation, certificate, signature)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import agent_tasks

FAST = (
    "coord-send-bob",
    "sage-nitrate",
    "shaman-propose-policy",
    "garden-compact",
    "merchant-offer",
    "plan-then-send",
    "banker-over",
    "coord-private-data-held",
)


def test_task_file_has_fifty_checkable_tasks() -> None:
    documents, tasks = agent_tasks.load_tasks()
    ids = [t["id"] for t in tasks]
    assert len(ids) == len(set(ids)) and len(documents) >= 5
    plain = [t for t in tasks if not t.get("llm")]
    assert len(plain) >= 50
    checks = {"delivered", "public", "cites", "certified", "signed_offer", "compacted", "nothing_sent", "contains"}
    checks |= {"python_def", "question"}
    assert all(checks & set(t) or "ok" in t or "steps" in t for t in tasks)
    assert set(FAST) <= set(ids)


@pytest.mark.timeout(300)
async def test_a_handful_of_tasks_succeed_end_to_end(tmp_path: Path) -> None:
    _, tasks = agent_tasks.load_tasks()
    chosen = [t for t in tasks if t["id"] in FAST]
    results = await agent_tasks.run_tasks(tmp_path, chosen)
    failed = {r.id: r.failures for r in results if not r.ok}
    assert not failed
    assert len(results) == len(FAST)


def test_llm_task_set_has_twenty_checkable_tasks() -> None:
    _, tasks = agent_tasks.load_tasks()
    llm = [t for t in tasks if t.get("llm")]
    assert len(llm) >= 20
    assert {t["agent"] for t in llm} == {"Magi", "Tutor", "Polyglot"}
    assert all({"python_def", "question", "contains", "cites"} & set(t) for t in llm)


def test_python_function_check_judges_the_function_not_the_usage() -> None:
    good = "```python\ndef rev(xs):\n    return xs[::-1]\n\n# Example usage:\nprint(rev([1, 2, 3]))  # Out"
    assert agent_tasks.python_function(good)
    assert agent_tasks.python_function("Here:\ndef f(a):\n    return a\nThis returns a.")
    assert not agent_tasks.python_function("def f(:\n    pass")
    assert not agent_tasks.python_function("x = 1  # no function")
    assert not agent_tasks.python_function("```python\nprint('hi')\n```")
    # an empty fence before the code (SmolLM2 does this) does not hide the function
    assert agent_tasks.python_function("```\n\n```python\ndef largest(xs):\n    return max(xs)\n\n# Example u")


def test_heldout_tasks_are_scored_only_when_asked_for() -> None:
    """Review llm16 finding 6: the held-out report set was scored on every LLM run unless --no-heldout (and its
    file's header named a --heldout that did not exist): it is now opt-in, as that header says."""
    assert agent_tasks.chosen_heldout(agent_tasks.parser().parse_args([])) == []
    held = agent_tasks.chosen_heldout(agent_tasks.parser().parse_args(["--heldout"]))
    assert len(held) == 20 and all(t["id"].startswith("ho-") for t in held)
    assert "bench/agent_tasks.py --heldout" in agent_tasks.HELDOUT_TASKS.read_text()
