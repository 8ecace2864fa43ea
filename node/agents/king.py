"""The King: routes a request to agents by capability, splits multi-step requests into a plan, runs
independent steps concurrently, and traces every step, tool call and result.

Plan: a request is split into steps at "then" (sequential: each step waits for the one before) and at
"; " / " and also " (independent: run together in one nursery). Each step goes to the router's best agent
(or the agent named explicitly), which acts through :class:`ScopedTools` holding only its roster tools.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import trio

from node.agents.errors import AgentError, LlmError
from node.agents.llm import LanguageModel
from node.agents.roles import AgentContext, Answer
from node.agents.roster import Roster
from node.agents.router import Choice, Router
from node.agents.tools import ScopedTools, ToolLlm, ToolRunner
from node.agents.trace import Trace, TraceStore
from node.agents.workers import ALL_HANDLERS

# The tool runner of the request being run (per trio task context, so per request, never shared between nodes):
# ``agents.dispatch`` runs sub-agents with it, so a narrowed caller's sub-agents stay narrowed.
_ACTIVE_RUNNER: ContextVar[ToolRunner | None] = ContextVar("aivillage_agents_runner", default=None)


def active_runner() -> ToolRunner | None:
    """The runner of the request whose step is calling (None outside a King's request)."""
    return _ACTIVE_RUNNER.get()


MAX_REQUEST_CHARS = 4000
MAX_STEPS = 8  # per request
# Request text is untrusted: a whitespace run is matched only from its start ((?<!\s)), never from each of its
# positions, and no pattern puts \s* next to \s+ (that pair backtracks cubically on a long run of spaces).
_SEQ = re.compile(r"(?:,?(?<!\s)\s+and then\s+|,?(?<!\s)\s+then\s+|\.\s+then\s+)", re.IGNORECASE)
_PAR = re.compile(r"(?:;\s*|(?<!\s)\s+and also\s+)", re.IGNORECASE)


def plan(request: str) -> list[list[str]]:
    """Sequential stages, each a list of independent steps."""
    stages = [s for s in _SEQ.split(request.strip()) if s.strip()]
    out = [[p.strip() for p in _PAR.split(stage) if p.strip()] for stage in stages]
    flat = sum(len(s) for s in out)
    if flat > MAX_STEPS:
        raise AgentError(f"a request may have at most {MAX_STEPS} steps, this one has {flat}")
    return out


@dataclass(frozen=True, slots=True)
class StepResult:
    step: str
    routed: list[Choice]
    answer: Answer


class King:
    def __init__(
        self,
        roster: Roster,
        router: Router,
        tools: ToolRunner,
        *,
        llm: LanguageModel | None,
        traces: TraceStore,
        embed_limiter: trio.CapacityLimiter | None = None,
        db_limiter: trio.CapacityLimiter | None = None,
        wall_ms: Any = None,
    ) -> None:
        self.roster = roster
        self.router = router
        self.tools = tools
        self.llm = llm
        self.traces = traces
        self.embed_limiter = embed_limiter or trio.CapacityLimiter(1)
        self.db_limiter = db_limiter or trio.CapacityLimiter(1)
        self.wall_ms = wall_ms or (lambda: 0)
        self._last: dict[str, tuple[str, Any]] = {}  # request id -> (text, vector) for feedback (bounded)

    async def ask(
        self,
        request: str,
        *,
        agent: str | None = None,
        confirm: bool = False,
        runner: ToolRunner | None = None,
        remote_caller: str | None = None,
    ) -> dict[str, Any]:
        """``runner`` replaces the node's tool runner (a remote caller's agents get :class:`RemoteTools`);
        ``remote_caller`` (a peer ID) is traced."""
        request = request.strip()
        if not request or len(request) > MAX_REQUEST_CHARS:
            raise AgentError(f"a request is 1 to {MAX_REQUEST_CHARS} characters")
        rid = secrets.token_hex(8)
        trace = Trace(rid, request, int(self.wall_ms()), caller=remote_caller or "")
        if remote_caller is not None:
            trace.step("King", "remote", detail=f"asked by peer {remote_caller} for {agent}")
        stages = [[request]] if agent else plan(request)
        trace.step("King", "plan", detail=repr(stages))
        results: list[StepResult] = []
        token = _ACTIVE_RUNNER.set(runner or self.tools)
        try:
            await self._run_stages(trace, stages, agent, confirm, runner, results)
        finally:
            _ACTIVE_RUNNER.reset(token)
        answer = "\n\n".join(f"[{r.answer.agent}] {r.answer.text}" for r in results)
        trace.step("King", "answer", detail=answer)
        await trio.to_thread.run_sync(self.traces.save, trace, limiter=self.db_limiter)
        return {
            "id": rid,
            "answer": answer,
            "steps": [
                {
                    "step": r.step,
                    "agent": r.answer.agent,
                    "routed": [[c.agent, round(c.score, 3)] for c in r.routed],
                    **r.answer.to_json(),
                }
                for r in results
            ],
        }

    async def _run_stages(
        self,
        trace: Trace,
        stages: list[list[str]],
        agent: str | None,
        confirm: bool,
        runner: ToolRunner | None,
        results: list[StepResult],
    ) -> None:
        for stage in stages:
            out: list[StepResult | None] = [None] * len(stage)

            async def run(i: int, step: str, out: list[StepResult | None] = out) -> None:
                out[i] = await self._step(trace, step, agent, confirm, runner)

            async with trio.open_nursery() as nursery:
                for i, step in enumerate(stage):
                    nursery.start_soon(run, i, step)
            results += [r for r in out if r is not None]

    async def _step(
        self, trace: Trace, step: str, agent: str | None, confirm: bool = False, runner: ToolRunner | None = None
    ) -> StepResult:
        if agent is not None:
            spec = self.roster.get(agent)
            routed = [Choice(spec.name, 1.0)]
        else:
            vec = (await trio.to_thread.run_sync(self.router.embed, [step], limiter=self.embed_limiter))[0]
            routed = await trio.to_thread.run_sync(self.router.scores, step, vec, limiter=self.embed_limiter)
            routed = routed[:3]
            if len(self._last) >= 1000:
                self._last.pop(next(iter(self._last)))
            self._last[trace.request_id] = (step, vec)
            spec = self.roster.get(routed[0].agent)
        trace.step("King", "route", detail=", ".join(f"{c.agent} {c.score:.3f}" for c in routed))
        scoped = ScopedTools(runner or self.tools, spec.name, spec.tools, trace)
        ctx = AgentContext(
            spec=spec,
            tools=scoped,
            # Generation goes through the llm.complete tool (allowlisted and audited like any tool).
            llm=ToolLlm(scoped) if spec.needs_llm and self.llm is not None else None,
            trace=trace,
            roster=self.roster,
            confirmed=confirm,
        )
        try:
            answer = await ALL_HANDLERS[spec.name](ctx, step)
        except (AgentError, LlmError) as exc:
            trace.step(spec.name, "error", detail=str(exc))
            answer = Answer(spec.name, f"{spec.name} could not do it: {exc}", ok=False)
        trace.step(spec.name, "answer", detail=answer.text)
        return StepResult(step, routed, answer)

    async def route(self, text: str, k: int = 5) -> list[Choice]:
        """The ``k`` best agents for ``text`` (the router, in a worker thread)."""
        vec = (
            await trio.to_thread.run_sync(self.router.embed, [text[:MAX_REQUEST_CHARS]], limiter=self.embed_limiter)
        )[0]
        got = await trio.to_thread.run_sync(self.router.scores, text, vec, limiter=self.embed_limiter)
        return got[:k]

    async def feedback(self, request_id: str, agent: str) -> dict[str, Any]:
        """The user says which agent was right for a request (confirmation or correction): learned online."""
        got = self._last.get(request_id)
        if got is None:
            raise AgentError(f"no recent routed request {request_id!r}")
        spec = self.roster.get(agent)
        text, vec = got
        await trio.to_thread.run_sync(self.router.feedback, text, vec, spec.name, limiter=self.embed_limiter)
        return {"id": request_id, "agent": spec.name, "feedback": self.router.feedback_count}
