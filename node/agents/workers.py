"""Five agents with jobs on this node's own data: Oracle (forecasts), Banker (the resource ledger), Merchant
(signed exchange offers), Strategist (plans checked against the tools) and Ensemble (several agents, one rule).

Each acts only through its roster tools (the MCP registry, as ``agents:<name>``), each with its own policy:

* **Oracle** forecasts a metric of the node's own time series (``metrics.series``): least squares over the last
  samples, the forecast given as value ± 2 residual standard errors, the time until a level (empty queue, empty
  battery) solved from the line; delivery odds as the outbox's success rate with its Wilson 95 % interval.
* **Banker** reads the per-peer ledger (``ledger.read``): storage held for each peer, bytes it accepted from us,
  our messages queued for it, against the ``[agents]`` budgets; names who is over budget.
* **Merchant** makes, lists, explains and accepts signed resource-exchange offers (``market.*``), checking an
  offer of storage to a peer against the Banker's ledger and budget first.
* **Strategist** turns a goal into steps (its clauses; for a one-clause goal, the specialists it touches), routes
  each step (``agents.route``), checks the chosen agent's tools are available on this node (``tools.available``)
  and returns a plan the King can run (``... then ...``), flagging steps that cannot run here.
* **Ensemble** asks the three best-routed agents (``agents.dispatch``) and combines them by a stated rule:
  a majority vote over the first source each cites (ties broken by the router's confidence); without sources,
  the majority of agents that could answer.
"""

from __future__ import annotations

import re
from typing import Any

from node.agents.errors import AgentError
from node.agents.forecast import Trend, forecast, median, time_to, trend, wilson
from node.agents.roles import HANDLERS as BASE_HANDLERS
from node.agents.roles import AgentContext, Answer, Handler

_HOUR_S = 3600.0


def _dur(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _method(tr: Trend) -> str:
    return f"least-squares line over the last {tr.n} samples, error ± 2 residual standard errors"


# ----------------------------------------------------------------------------------------------------- Oracle

_METRIC_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("battery_percent", re.compile(r"\b(battery|charge|power)\b")),
    ("delivery", re.compile(r"\b(odds|chance|probability|likely|reach(es)?|deliver(ed|y)?|latency|arrive)\b")),
    ("outbox_pending", re.compile(r"\b(outbox|queue[ds]?|drain|empty|pending|backlog|load)\b")),
    ("peers", re.compile(r"\b(peers?|churn|online|neighbou?rs?|nodes?)\b")),
)


def _oracle_metric(name: str, samples: list[list[float]], level: float | None) -> tuple[str, dict[str, Any]]:
    tr = trend((t, v) for t, v in samples)
    label = name.replace("_", " ")
    if tr is None:
        return f"No samples of {label} yet.", {"metric": name, "samples": 0}
    value, err = forecast(tr, _HOUR_S)
    out: dict[str, Any] = {
        "metric": name,
        "samples": tr.n,
        "now": tr.value_last,
        "slope_per_h": tr.slope_per_s * _HOUR_S,
        "in_1h": value,
        "error": err,
    }
    text = f"{label}: now {tr.value_last:g}"
    if tr.n < 3:
        return text + f" (only {tr.n} sample(s): too few for a trend, no forecast).", out
    text += f", trend {tr.slope_per_s * _HOUR_S:+.3g}/h, in 1 h {value:.3g} ± {err:.2g} ({_method(tr)})"
    if level is not None:
        eta = time_to(tr, level)
        out["eta_s"] = eta
        if eta is None:
            text += f"; on this trend it does not reach {level:g}"
        elif eta == 0:
            text += f"; it is at {level:g} already"
        else:
            text += f"; reaches {level:g} in about {_dur(eta)}"
    return text + ".", out


async def oracle(ctx: AgentContext, request: str) -> Answer:
    data = await ctx.tools.call("metrics.series", {})
    series: dict[str, list[list[float]]] = data["series"]
    low = request.lower()
    wanted = [m for m, rx in _METRIC_WORDS if rx.search(low)] or ["outbox_pending", "peers", "delivery"]
    lines: list[str] = []
    found: list[dict[str, Any]] = []
    for m in wanted[:2]:
        if m == "delivery":
            d = data["delivery"]
            done = d["delivered"] + d["failed"]
            p, lo, hi = wilson(d["delivered"], done)
            lat = median(data["latencies_s"])
            if done == 0:
                text = f"delivery: no private message has been settled yet ({d['pending']} pending), no estimate."
            else:
                text = (
                    f"delivery: {d['delivered']} of {done} settled private messages arrived, so the chance a message "
                    f"is delivered is {p:.0%} (Wilson 95 % interval {lo:.0%}-{hi:.0%})"
                )
                text += f"; median delivery time {lat:.1f} s." if lat is not None else "."
            lines.append(text)
            found.append({"metric": "delivery", "p": p, "low": lo, "high": hi, "median_latency_s": lat, **d})
            continue
        if m == "battery_percent" and not series.get(m):
            lines.append("battery: this device reports no battery, so there is nothing to forecast.")
            found.append({"metric": m, "samples": 0})
            continue
        level = 0.0 if m in ("battery_percent", "outbox_pending") else None
        text, out = _oracle_metric(m, series.get(m, []), level)
        lines.append(text)
        found.append(out)
    ok = any(f.get("samples", 0) or f.get("metric") == "delivery" for f in found)
    return Answer("Oracle", "\n".join(lines), data={"forecasts": found, "interval_s": data["interval_s"]}, ok=ok)


# ----------------------------------------------------------------------------------------------------- Banker


def _named(request: str, accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    words = set(re.findall(r"[a-z0-9]+", request.lower()))
    return [
        a
        for a in accounts
        if (a["nickname"] or "").lower() in words or any(a["peer"].startswith(w) for w in words if len(w) >= 4)
    ]


def _account_line(a: dict[str, Any]) -> str:
    who = a["nickname"] or a["peer"][:8]
    line = (
        f"{who}: we store {a['stored_messages']} message(s), {a['stored_bytes']} B for it; it accepted "
        f"{a['sent_delivered']} of ours ({a['sent_bytes']} B); {a['queued']} queued for it; "
        f"balance {a['balance_bytes']:+d} B"
    )
    return line + (f" — OVER BUDGET: {'; '.join(a['over_budget'])}" if a["over_budget"] else "")


async def banker(ctx: AgentContext, request: str) -> Answer:
    led = await ctx.tools.call("ledger.read", {})
    accounts: list[dict[str, Any]] = led["accounts"]
    named = _named(request, accounts)
    over = [a for a in accounts if a["over_budget"]]
    b = led["budgets"]
    head = (
        f"Budgets per peer: {b['stored_bytes_per_peer']} B stored here, {b['queued_per_peer']} messages queued. "
        f"Relay work is counted for the node as a whole: {led['relayed_total']} relay jobs."
    )
    if named:
        rows = named
    elif re.search(r"\b(over|exceed|too much|budget)\b", request.lower()):
        rows = over
        head += f" {len(over)} peer(s) over budget." if over else " No peer is over budget."
    else:
        rows = accounts[:10]
    if not accounts:
        return Answer("Banker", head + " No peer has used this node's resources yet.", data=led)
    return Answer("Banker", head + "\n" + "\n".join(_account_line(a) for a in rows), data={**led, "shown": rows})


# --------------------------------------------------------------------------------------------------- Merchant

_UNITS = {"gb": 10**9, "mb": 10**6, "kb": 10**3, "b": 1, "byte": 1, "bytes": 1}
# (?<![\d.]): a number is tried only from its first digit (else a digit run costs quadratic time).
_AMOUNT = re.compile(
    r"(?<![\d.])(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>gb|mb|kb|bytes?|b\b|relay\s+(?:frames?|credits?)|frames?|credits?|"
    r"mailbox\s+(?:slots?|messages?)|messages?|slots?)",
    re.IGNORECASE,
)
_ACCEPT = re.compile(r"\baccept\b", re.IGNORECASE)
_OFFER_ID = re.compile(r"\b([0-9a-f]{4,16})\b", re.IGNORECASE)
_TO = re.compile(r"\b(?:to|with|for)\s+(?!\d)(?P<who>[a-z0-9_-]{2,32})\b(?!\s*(?:gb|mb|kb|bytes?|frames?))", re.I)


def _resource(n: str, unit: str) -> tuple[str, int]:
    u = unit.lower()
    if u.startswith(("relay", "frame", "credit")):
        return "relay_frames", int(float(n))
    if u.startswith(("mailbox", "message", "slot")):
        return "mailbox_messages", int(float(n))
    return "storage_bytes", int(float(n) * _UNITS.get(u, 1))


def _describe_offer(o: dict[str, Any], me: str, names: dict[str, str]) -> str:
    maker = "we" if o["maker"] == me else names.get(o["maker"], o["maker"][:8])
    to = " to anyone" if not o["to"] else f" to {'us' if o['to'] == me else names.get(o['to'], o['to'][:8])}"
    state = "accepted" if o["taker"] else "open"
    return (
        f"offer {o['id']}: {maker} give {o['give_amount']} {o['give']} for {o['want_amount']} {o['want']}{to} "
        f"({state}, signature {'valid' if o['valid'] else 'INVALID'})"
    )


async def merchant(ctx: AgentContext, request: str) -> Answer:
    low = request.lower()
    # The first "accept", then the first id after it (one ".*?" per "accept" would be quadratic).
    a = _ACCEPT.search(low)
    m = _OFFER_ID.search(low, a.end()) if a else None
    if m:
        o = await ctx.tools.call("market.accept", {"id": m.group(1)})
        return Answer("Merchant", f"Accepted and counter-signed offer {o['id']}.", data=o)
    amounts = _AMOUNT.findall(request)
    if len(amounts) >= 2 and re.search(r"\b(offer|trade|swap|exchange|sell|give|propose)\b", low):
        give, give_n = _resource(*amounts[0])
        want, want_n = _resource(*amounts[1])
        args: dict[str, Any] = {"give": give, "give_amount": give_n, "want": want, "want_amount": want_n}
        peer: dict[str, Any] | None = None
        t = _TO.search(request)
        if t:
            peers = await ctx.tools.call("mesh.peers", {})
            hits = [p for p in peers if (p["nickname"] or "").lower() == t.group("who").lower()]
            if len(hits) == 1:
                peer = hits[0]
                args["peer"] = peer["peer_id"]
        if give == "storage_bytes" and peer is not None:
            led = await ctx.tools.call("ledger.read", {})
            held = next((a["stored_bytes"] for a in led["accounts"] if a["peer"] == peer["peer_id"]), 0)
            budget = led["budgets"]["stored_bytes_per_peer"]
            if held + give_n > budget:
                return Answer(
                    "Merchant",
                    f"Not offered: {peer['nickname']} already has {held} B stored here; {give_n} B more would pass "
                    f"the per-peer storage budget of {budget} B.",
                    data={"held": held, "budget": budget},
                    ok=False,
                )
        o = await ctx.tools.call("market.offer", args)
        who = peer["nickname"] if peer else "anyone"
        return Answer(
            "Merchant",
            f"Signed offer {o['id']} to {who}: we give {give_n} {give} for {want_n} {want}, "
            f"valid until {o['expires_at_ms']} ms; kept on this node.",
            data=o,
        )
    book = await ctx.tools.call("market.offers", {})
    offers = book["offers"]
    if not offers:
        return Answer(
            "Merchant",
            "No offers yet. Say e.g. 'offer 10 MB storage to bob for 500 relay frames' to make a signed one.",
            data=book,
        )
    lines = [_describe_offer(o, book["me"], book.get("names", {})) for o in offers[:20]]
    return Answer("Merchant", f"{len(offers)} offer(s):\n" + "\n".join(lines), data=book)


# ------------------------------------------------------------------------------------------------- Strategist

# Split on whitespace-collapsed text (a single space between words): no \s* beside \s+, so linear time.
_CLAUSES = re.compile(r"(?:,? and then |,? then |; ?|, ?and | and |, |\. )", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
MAX_GOAL_CHARS = 1000  # the Strategist plans from at most this much of the request
_LEAD = re.compile(r"^(?:please\s+)?(?:make|draw up|give me|help me (?:make|draw up))\s+a\s+(?:plan|roadmap)\s+to\s+")
MIN_TOUCH_SCORE = 0.6  # a one-clause goal involves the specialists scoring at least this (router score scale)


async def strategist(ctx: AgentContext, request: str) -> Answer:
    goal = _LEAD.sub("", _SPACES.sub(" ", request).strip()[:MAX_GOAL_CHARS], count=1)
    clauses = [c.strip() for c in _CLAUSES.split(goal) if len(c.strip()) > 2][:8]
    roster = {a["name"]: a for a in await ctx.tools.call("agents.list", {})}
    available = set(await ctx.tools.call("tools.available", {}))
    steps: list[dict[str, Any]] = []
    if len(clauses) > 1:
        for c in clauses:
            r = await ctx.tools.call("agents.route", {"text": c})
            steps.append({"step": c, "agent": r[0][0], "score": r[0][1]})
    else:
        r = await ctx.tools.call("agents.route", {"text": goal})
        touched = [(a, s) for a, s in r if a not in ("Strategist", "King", "Ensemble")]
        chosen = [x for x in touched if x[1] >= MIN_TOUCH_SCORE][:4] or touched[:2]
        for a, s in chosen:
            mission = roster[a]["mission"].split(":")[0].split(".")[0].lower()
            steps.append({"step": f"{goal} ({mission})", "agent": a, "score": s})
    for s in steps:
        s["missing_tools"] = [t for t in roster[s["agent"]]["tools"] if t not in available]
        s["runnable"] = not s["missing_tools"] and s["agent"] != "Strategist"
    lines = [
        f"{i + 1}. {s['agent']}: {s['step']}"
        + ("" if s["runnable"] else f" — cannot run here (missing {', '.join(s['missing_tools']) or 'a handler'})")
        for i, s in enumerate(steps)
    ]
    runnable = [s for s in steps if s["runnable"]]
    plan_text = " then ".join(s["step"] for s in runnable) if len(clauses) > 1 else ""
    text = f"Plan ({len(steps)} step(s), {len(runnable)} runnable on this node):\n" + "\n".join(lines)
    if plan_text:
        text += f"\nFor the King: {plan_text}"
    return Answer("Strategist", text, data={"steps": steps, "king_request": plan_text}, ok=bool(runnable))


# --------------------------------------------------------------------------------------------------- Ensemble

PANEL = 3


async def ensemble(ctx: AgentContext, request: str) -> Answer:
    routed = await ctx.tools.call("agents.route", {"text": request})
    panel = [(a, s) for a, s in routed if a not in ("Ensemble", "King", "Strategist")][:PANEL]
    answers: list[dict[str, Any]] = []
    for agent, score in panel:
        try:
            a = await ctx.tools.call("agents.dispatch", {"agent": agent, "request": request})
        except AgentError as exc:
            a = {"agent": agent, "text": str(exc), "ok": False, "sources": []}
        answers.append({**a, "score": score})
    ok = [a for a in answers if a["ok"]]
    votes: dict[str, list[dict[str, Any]]] = {}
    for a in ok:
        if a["sources"]:
            votes.setdefault(a["sources"][0]["source"], []).append(a)
    rule = "majority over the first source each agent cites, ties to the higher routing confidence"
    if votes:
        best = max(votes, key=lambda k: (len(votes[k]), max(x["score"] for x in votes[k])))
        backers = votes[best]
        text = (
            f"Asked {', '.join(a['agent'] for a in answers)}. Rule: {rule}. {len(backers)} of {len(answers)} "
            f"agree on {best} ({', '.join(a['agent'] for a in backers)})."
        )
        winner = max(backers, key=lambda x: x["score"])
        verdict: dict[str, Any] = {"source": best, "agreeing": [a["agent"] for a in backers]}
    elif ok:
        rule = "majority of the agents that could answer, the most confident one's answer"
        winner = max(ok, key=lambda x: x["score"])
        text = (
            f"Asked {', '.join(a['agent'] for a in answers)}. Rule: {rule}. {len(ok)} of {len(answers)} could answer; "
            f"{winner['agent']} (most confident) says:"
        )
        verdict = {"agreeing": [a["agent"] for a in ok]}
    else:
        return Answer("Ensemble", f"None of {', '.join(a['agent'] for a in answers)} could answer.", ok=False)
    disagree = [a["agent"] for a in answers if a["agent"] not in verdict["agreeing"]]
    if disagree:
        text += f" Disagreeing or unable: {', '.join(disagree)}."
    text += f"\n{winner['text']}"
    return Answer(
        "Ensemble", text, sources=winner.get("sources", []), data={"rule": rule, "answers": answers, **verdict}
    )


ALL_HANDLERS: dict[str, Handler] = {
    **BASE_HANDLERS,
    "Oracle": oracle,
    "Banker": banker,
    "Merchant": merchant,
    "Strategist": strategist,
    "Ensemble": ensemble,
}
