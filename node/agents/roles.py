"""What each agent does with a request, using only the tools its roster entry lists (through ScopedTools).

Every handler is its own policy over its own tools; none is "the LLM with another name". Agents marked
``needs_llm`` use it where generation is the job (Polyglot translates, Tutor writes quiz questions from a
retrieved passage); knowledge answers (Sage, Medic, Horticulturist) come from the knowledge base with the
sources cited, never from the model's memory. Oracle, Banker, Merchant, Strategist and Ensemble are in
``workers.py``; :data:`node.agents.workers.ALL_HANDLERS` is the full table the King uses.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.agents.errors import AgentError, LlmError, ToolUnavailable
from node.agents.llm import LanguageModel, Message
from node.agents.roster import AgentSpec, Roster
from node.agents.tools import ToolCaller
from node.agents.trace import Trace
from node.routing.names import PEER_ID_HEX, hex_like, resolve_peer_view

_LONG_WORD = re.compile(r"\w{6,}")
MAX_THOUGHT_CHARS = 2000  # hidden scratchpad kept in the trace (never sent to a peer)


@dataclass
class Answer:
    agent: str
    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    data: Any = None
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "text": self.text, "sources": self.sources, "data": self.data, "ok": self.ok}


@dataclass
class AgentContext:
    spec: AgentSpec
    tools: ToolCaller
    llm: LanguageModel | None
    trace: Trace
    roster: Roster
    confirmed: bool = False  # the user confirmed a public or flagged action (``village ask --confirm``)

    async def think(self, prompt: str, shot: tuple[str, str] | None = None) -> str:
        """A hidden scratchpad: the model's notes stay in this node's trace and never reach a peer. ``shot``: one
        worked (prompt, notes) exchange first."""
        if self.llm is None:
            return ""
        first = [Message("user", shot[0]), Message("assistant", shot[1])] if shot else []
        try:
            c = await self.llm.complete([*first, Message("user", prompt)], max_tokens=96, stop=["\n\n"])
        except LlmError:
            return ""
        self.trace.step(self.spec.name, "thought", detail=c.text[:MAX_THOUGHT_CHARS])
        return c.text


Handler = Callable[[AgentContext, str], Awaitable[Answer]]


def _cite(hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"source": h["source"], "title": h.get("title", ""), "chunk_id": h.get("id")} for h in hits]


async def _rag_answer(ctx: AgentContext, request: str, *, k: int = 3) -> Answer:
    hits = await ctx.tools.call("rag.query", {"query": request, "k": k})
    name = ctx.spec.name
    if not hits:
        return Answer(name, "I found nothing about this in the knowledge base, so I will not guess.", ok=False)
    lines = [f"[{i + 1}] {h['snippet']} ({h['source']})" for i, h in enumerate(hits)]
    return Answer(name, "From the knowledge base:\n" + "\n".join(lines), sources=_cite(hits), data=hits)


# ------------------------------------------------------------------------------------------------ handlers


async def king(ctx: AgentContext, request: str) -> Answer:
    rows = [f"{a.name}: {a.mission}" for a in ctx.roster]
    return Answer("King", "\n".join(rows), data=[a.to_json() for a in ctx.roster])


async def navigator(ctx: AgentContext, request: str) -> Answer:
    peers = await ctx.tools.call("mesh.peers", {})
    routes = await ctx.tools.call("mesh.routes", {})
    by_dest = {r["destination"]: r for r in routes}
    words = set(re.findall(r"[a-z0-9]+", request.lower()))
    named = [
        p
        for p in peers
        if (p["nickname"] or "").lower() in words or any(p["peer_id"].startswith(w) for w in words if len(w) >= 4)
    ]
    lines = []
    for p in named or peers:
        r = by_dest.get(p["peer_id"])
        who = p["nickname"] or p["peer_id"][:8]
        if not p["reachable"]:
            lines.append(f"{who} is not reachable: last heard {p['last_seen_s_ago']:.0f} s ago, no live route")
        elif r is None:
            lines.append(f"{who} is reachable directly over {p['transport'] or 'a link'}")
        else:
            hop = "directly" if r["hops"] <= 1 else f"in {r['hops']} hops via next hop {str(r['next_hop'])[:8]}"
            lines.append(f"{who} is reachable {hop} over {r['transport'] or 'a link'} (cost {r['cost']})")
    if not lines:
        lines = ["No peers are known yet: no link is up and no announce has arrived."]
    return Answer("Navigator", "\n".join(lines), data={"peers": named or peers, "routes": routes})


HOSTILE_COUNTERS = ("malformed", "bad_signature", "rejected", "dropped", "rate_limited", "unverified", "invalid")


async def shield(ctx: AgentContext, request: str) -> Answer:
    status = await ctx.tools.call("mesh.status", {})
    peers = await ctx.tools.call("mesh.peers", {})
    groups = {"mesh": status.get("counters", {}), "app": status.get("app_counters", {})}
    for name, c in status.get("transport_counters", {}).items():
        groups[name] = c
    hostile = {
        f"{g}.{k}": v for g, c in groups.items() for k, v in c.items() if v and any(h in k for h in HOSTILE_COUNTERS)
    }
    unpinned = [p["nickname"] or p["peer_id"][:8] for p in peers if not p.get("session")]
    if hostile:
        worst = sorted(hostile.items(), key=lambda kv: -kv[1])[:5]
        text = "Hostile or rejected traffic seen: " + ", ".join(f"{k} = {v}" for k, v in worst)
    else:
        text = "No hostile traffic counted: no malformed, forged or rejected frames."
    text += f" {len(peers)} known peer(s), {len(peers) - len(unpinned)} with an authenticated session (pinned key)."
    return Answer("Shield", text, data={"hostile": hostile, "without_session": unpinned})


async def auditor(ctx: AgentContext, request: str) -> Answer:
    kind = "denied" if re.search(r"\b(denied|refused|blocked|rejected)\b", request.lower()) else None
    rows = await ctx.tools.call("audit.read", {"kind": kind, "limit": 50})
    if not rows:
        return Answer("Auditor", "The audit log has no matching entries.", data=[])
    lines = [f"{r['agent']} {r['kind']} {r['tool']} (request {r['request']})" for r in rows[:20]]
    return Answer("Auditor", f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}:\n" + "\n".join(lines), data=rows)


async def sustainer(ctx: AgentContext, request: str) -> Answer:
    battery = await ctx.tools.call("power.battery", {})
    plan = await ctx.tools.call("power.plan", {})
    if not battery.get("known"):
        state = "The battery state is unknown (no power supply information on this device)"
    else:
        pct = battery.get("percent")
        src = "on external power" if battery.get("external_power") else "on battery"
        state = f"Battery {pct if pct is not None else '?'} %, {src}"
    advice = ""
    if battery.get("known") and not battery.get("external_power") and (battery.get("percent") or 100) < 30:
        advice = ' To save energy set ble.power_mode = "saver" (or keep "auto", which switches below 20 %).'
    return Answer("Sustainer", f"{state}. Radio: {plan['plan']}.{advice}", data={"battery": battery, "plan": plan})


async def gardener(ctx: AgentContext, request: str) -> Answer:
    out: dict[str, Any] = {}
    try:
        out["rag"] = await ctx.tools.call("rag.rebuild_index", {})
    except ToolUnavailable as exc:
        out["rag"] = {"skipped": str(exc)}
    out["agents"] = await ctx.tools.call("store.compact", {})
    r = out["rag"]
    text = "Compacted the agent stores."
    if "db_bytes_before" in r:
        text += (
            f" Knowledge base: {r['db_bytes_before']} -> {r['db_bytes_after']} bytes, "
            f"{r['vectors_reindexed']} vectors re-indexed."
        )
    return Answer("Gardener", text, data=out)


PRIVATE_HINTS = re.compile(r"\b(diary|health|medical|password|address|location|contacts?|bank|salary|private)\b")


async def legal(ctx: AgentContext, request: str) -> Answer:
    verdict = await ctx.tools.call("policy.check", {"text": request})
    docs = await ctx.tools.call("rag.documents", {})
    words = set(re.findall(r"[a-z0-9]+", request.lower()))
    named = [
        d
        for d in docs
        if words
        & set(re.findall(r"[a-z0-9]+", (d.get("title") or d["source"]).lower())) - {"the", "a", "txt", "md", "pdf"}
    ]
    unshared = [d for d in named if not d.get("shared")]
    if unshared:
        names = ", ".join(d.get("title") or d["source"] for d in unshared)
        return Answer(
            "Legal",
            f"Not allowed: {names} is not shared, so it must not leave this device.",
            data={"unshared": unshared},
            ok=False,
        )
    if not verdict["allowed"]:
        return Answer("Legal", f"Not allowed: {verdict['reason']}", data=verdict, ok=False)
    return Answer(
        "Legal",
        "Allowed: nothing unshared or personal is involved." + (" " + verdict["reason"] if verdict["reason"] else ""),
        data=verdict,
    )


def policy_check(text: str) -> dict[str, Any]:
    """The privacy rule Legal applies to free text: personal categories are refused unless the user shares them."""
    m = PRIVATE_HINTS.search(text.lower())
    if m:
        return {
            "allowed": False,
            "reason": f"it involves personal data ({m.group(1)}), which never leaves the device unless you share it",
        }
    return {"allowed": True, "reason": ""}


async def sage(ctx: AgentContext, request: str) -> Answer:
    return await _rag_answer(ctx, request)


async def medic(ctx: AgentContext, request: str) -> Answer:
    a = await _rag_answer(ctx, request, k=2)
    if not a.ok:
        a.text = (
            "I have no first-aid source about this in the knowledge base, so I will not advise. "
            "If someone is in danger, get a trained person or emergency help now."
        )
    else:
        a.text = "Only from the first-aid sources in the knowledge base (not a diagnosis):\n" + a.text.split("\n", 1)[1]
    return a


async def horticulturist(ctx: AgentContext, request: str) -> Answer:
    a = await _rag_answer(ctx, request)
    if a.ok:
        a.text = "From the growing guides in the knowledge base:\n" + a.text.split("\n", 1)[1]
    return a


async def curator(ctx: AgentContext, request: str) -> Answer:
    docs = await ctx.tools.call("rag.documents", {})
    seen: dict[str, list[str]] = {}
    for d in docs:
        seen.setdefault(str(d.get("content_hash") or d.get("hash") or d["source"]), []).append(d["source"])
    dupes = [v for v in seen.values() if len(v) > 1]
    text = f"{len(docs)} document(s) in the knowledge base"
    text += f"; {len(dupes)} set(s) of duplicates." if dupes else "; no duplicates."
    return Answer("Curator", text, data={"documents": docs, "duplicates": dupes})


# "propose setting mesh.max_hops to 5" / "propose the policy share_health = false": one typed action, the
# key and value exactly as written (the governance core and the vote decide; Shaman never edits them).
_PROPOSE = re.compile(
    r"\bpropose\b(?:\s+(?:setting|changing|that|to\s+set|to\s+change))?\s+(?:the\s+)?(?:(?P<kind>config|policy)\s+)?"
    r"(?P<key>[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+|[a-z][a-z0-9]*_[a-z0-9_]+)\s*(?:to|=|be)\s*(?P<value>[^\s]+)\s*$",
    re.IGNORECASE,
)


def _value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


async def shaman(ctx: AgentContext, request: str) -> Answer:
    m = _PROPOSE.search(request.strip())
    if m:
        kind = (m.group("kind") or ("config" if "." in m.group("key") else "policy")).lower()
        r = await ctx.tools.call(
            "gov.propose", {"kind": kind, "key": m.group("key"), "value": _value(m.group("value"))}
        )
        cert = r.get("certificate")
        what = f"{kind} {m.group('key')} = {m.group('value')}"
        text = f"Proposed {what} (proposal {r['proposal'][:16]}, round {r['round']}): "
        text += (
            f"certified by {cert['signers']} signer(s) with more than 2/3 of the power."
            if cert
            else "waiting for votes from the electorate."
        )
        return Answer("Shaman", text, data=r)
    st = await ctx.tools.call("gov.status", {})
    ev = await ctx.tools.call("gov.evidence", {})
    text = (
        f"Epoch {st['epoch']}, {len(st['electorate'])} voter(s), {len(st['proposals'])} proposal(s), "
        f"{len(st['certificates'])} certificate(s); {len(ev)} piece(s) of equivocation evidence."
    )
    return Answer("Shaman", text, data={"status": st, "evidence": ev})


_VILLAGE = r"(?:everyone|everybody|all|the\s+(?:whole\s+)?village|the\s+whole\s+mesh)"
_SEP = r"(?:\s*:\s*|\s+(?:that|saying)\s+|\s+)"
# Broadcast only on an explicit leading form, decided before the body: words inside the body never count.
_BROADCAST = re.compile(
    rf"^(?:please\s+)?(?:broadcast|announce|(?:tell|message|notify)\s+{_VILLAGE}|let\s+{_VILLAGE}\s+know)"
    r"(?:\s*:\s*|\s+(?:that|saying)\s+|\s+)(?P<body>\S.*)$",
    re.IGNORECASE | re.DOTALL,
)
_NOTE = r"(?:a\s+)?(?:message|note|text|word)"
_TO = r"(?P<to>[^\s:,]+)"
# A private send: "<verb> <recipient> [that|saying|:] <body>"; the recipient is one token in addressee position.
_PRIVATE = (
    re.compile(rf"^(?:please\s+)?(?:tell|message|notify|inform|text)\s+{_TO}{_SEP}(?P<body>\S.*)$", re.I | re.S),
    re.compile(
        rf"^(?:please\s+)?send\s+{_NOTE}\s+to\s+{_TO}(?:\s*:\s*|\s+(?:that|saying)\s+)(?P<body>\S.*)$", re.I | re.S
    ),
    re.compile(
        rf"^(?:please\s+)?send\s+{_TO}(?:\s+{_NOTE})?(?:\s*:\s*|\s+(?:that|saying)\s+)(?P<body>\S.*)$", re.I | re.S
    ),
    re.compile(rf"^(?:please\s+)?let\s+{_TO}\s+know{_SEP}(?P<body>\S.*)$", re.I | re.S),
)
_VILLAGE_WORDS = frozenset({"everyone", "everybody", "all", "the", "village"})


def parse_delivery(request: str) -> tuple[str, str | None, str] | None:
    """``("broadcast", None, body)``, ``("send", recipient, body)`` or None when the request has neither form."""
    text = request.strip()
    m = _BROADCAST.match(text)
    if m:
        return ("broadcast", None, m.group("body").strip())
    for pattern in _PRIVATE:
        m = pattern.match(text)
        if m and m.group("to").lower() not in _VILLAGE_WORDS:
            return ("send", m.group("to"), m.group("body").strip())
    return None


async def coordinator(ctx: AgentContext, request: str) -> Answer:
    parsed = parse_delivery(request)
    if parsed is None:
        return Answer(
            "Coordinator",
            "Say 'tell <peer> that <message>' for a private message, or 'broadcast <message>' (with confirmation) "
            "for the whole village.",
            ok=False,
        )
    kind, ref, body = parsed
    verdict = await ctx.tools.call("policy.check", {"text": body})
    if kind == "broadcast":
        if not verdict["allowed"]:
            return Answer("Coordinator", f"Not broadcast: {verdict['reason']}.", data=verdict, ok=False)
        if not ctx.confirmed:
            return Answer(
                "Coordinator",
                f"A broadcast is public and signed, for the whole village: {body!r}. Ask again with confirmation "
                "(village ask --confirm) to send it.",
                data={"needs_confirmation": True, "text": body},
                ok=False,
            )
        r = await ctx.tools.call("mesh.broadcast", {"text": body})
        return Answer("Coordinator", f"Broadcast to the village: {body!r}.", data=r)
    if ref is None:  # parse_delivery gives a recipient for every send
        raise AgentError("no recipient")
    peers = await ctx.tools.call("mesh.peers", {})
    named = resolve_peer_view(ref, peers)
    if len(named) > 1:
        text = f"{ref!r} matches several peers: {describe_views(named)}; use a peer ID."
        return Answer("Coordinator", text, ok=False)
    if named:
        peer_id, label = str(named[0]["peer_id"]), str(named[0]["nickname"] or named[0]["peer_id"])
    elif hex_like(ref) and len(ref) == PEER_ID_HEX:
        peer_id, label = ref.lower(), ref.lower()  # a full peer ID not heard from yet: delivered when it appears
    else:
        known = ", ".join(sorted(str(p["nickname"] or p["peer_id"][:8]) for p in peers)) or "none"
        return Answer("Coordinator", f"No known peer is {ref!r}. Known peers: {known}.", ok=False)
    if not verdict["allowed"] and not ctx.confirmed:
        return Answer(
            "Coordinator",
            f"Not sent to {label}: {verdict['reason']}. Ask again with confirmation to send it anyway.",
            data={"needs_confirmation": True, **verdict},
            ok=False,
        )
    r = await ctx.tools.call("mesh.send", {"peer": peer_id, "text": body})
    return Answer("Coordinator", f"Sent to {label}: {body!r} (message {r['id']}).", data=r)


def describe_views(peers: Sequence[Any]) -> str:
    return ", ".join(f"{p['peer_id']} ({p['nickname']!r})" for p in peers)


LANGUAGES = frozenset(
    {
        "afrikaans",
        "amharic",
        "arabic",
        "chinese",
        "dutch",
        "english",
        "french",
        "german",
        "hausa",
        "hindi",
        "igbo",
        "italian",
        "japanese",
        "kinyarwanda",
        "kiswahili",
        "portuguese",
        "russian",
        "shona",
        "somali",
        "spanish",
        "swahili",
        "turkish",
        "xhosa",
        "yoruba",
        "zulu",
    }
)
# Matched case-insensitively on the request itself, never on request.lower(): lowering can change a string's length
# ("İ" becomes two code points), so positions found in the lowered text would cut the original in the wrong place.
_TO_LANGUAGE = re.compile(r"\b(?:in|into|to)\s+([a-z]+)\b", re.IGNORECASE)
_ASKING = re.compile(
    r"^\s*(?:please\s+)?(?:translate|how\s+do\s+(?:you|i)\s+say|what\s+is|what's|say)\s+", re.IGNORECASE
)
# Worked exchanges before the request (the phrase quoted, both languages named). Each answer is a two-line parallel
# text ("English: house" / "German: Haus"; only the translation reaches the user): the model copies the phrase and
# the language's name, and the translation then follows the name, as in a bilingual text. A small model so answers in
# the asked language and stops instead of rambling, and a pretrained one (no chat template) continues the pattern.
# Chosen on the tuned-on tasks of tests/data/agent_tasks.toml only (4 of 6 with Gemma 3 270M; the first shot was
# "good morning" in Spanish: 3 of 6), never on agent_tasks_heldout.toml.
_SHOTS = (
    ("the dog is black", "Spanish", "El perro es negro"),
    ("thank you very much", "German", "Vielen Dank"),
    ("where is the market?", "French", "Où est le marché ?"),
)


def _translate_prompt(phrase: str, language: str) -> str:
    return f'Translate "{phrase}" from English into {language}.'


def _translation(answer: str, language: str) -> str:
    """The translation out of a parallel-text answer: the line labelled with the language, else the answer."""
    lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    for ln in lines:
        head, colon, tail = ln.partition(":")
        if colon and head.strip().lower() == language.lower() and tail.strip():
            return tail.strip()
    rest = [ln for ln in lines if not ln.lower().startswith("english:")]
    return rest[0] if rest else answer.strip()


def translation_request(request: str) -> tuple[str, str] | None:
    """(phrase, target language) of "translate X into L", "how do you say X in L", "translate to L: X"."""
    target = None
    for m in _TO_LANGUAGE.finditer(request):
        if m.group(1).lower() in LANGUAGES:
            target = m
    if target is None:
        return None
    head, colon, tail = request.partition(":")
    if colon and tail.strip() and len(head) >= target.end():
        phrase = tail
    else:
        phrase = request[: target.start()] + request[target.end() :]
        phrase = phrase[_m.end() :] if (_m := _ASKING.match(phrase)) else phrase
    phrase = phrase.strip().strip("?!.:").strip().strip("\"'").strip()
    return (phrase, target.group(1).lower().capitalize()) if phrase else None


async def polyglot(ctx: AgentContext, request: str) -> Answer:
    if ctx.llm is None:
        return Answer("Polyglot", "Translation needs the language model, which is off on this node.", ok=False)
    parsed = translation_request(request)
    if parsed is None:
        c = await ctx.llm.complete(
            [Message("system", "You are a translator. Reply with the translation only."), Message("user", request)],
            max_tokens=96,
        )
        return Answer("Polyglot", c.text, data={"tokens": c.tokens})
    phrase, language = parsed
    chat = [Message("system", "You translate short English phrases. Reply with the translation only.")]
    for text, lang, answer in _SHOTS:
        chat += [
            Message("user", _translate_prompt(text, lang)),
            Message("assistant", f"English: {text}\n{lang}: {answer}"),
        ]
    chat.append(Message("user", _translate_prompt(phrase, language)))
    c = await ctx.llm.complete(chat, max_tokens=48, stop=["\n\n"])
    text = _translation(c.text, language)
    return Answer("Polyglot", text, data={"tokens": c.tokens, "phrase": phrase, "language": language})


# One worked quiz question on a passage that is not in any task's knowledge base.
_QUIZ_SHOT = (
    "The well pump must be primed with a bucket of water before it is started.",
    "What must you do before starting the well pump?",
)


def _quiz_prompt(passage: str) -> str:
    return f'Text: "{passage}"\nWrite one short quiz question about this text.'


async def tutor(ctx: AgentContext, request: str) -> Answer:
    hits = await ctx.tools.call("rag.query", {"query": request, "k": 1})
    if not hits:
        return Answer("Tutor", "I need a document in the knowledge base to quiz you from.", ok=False)
    passage = hits[0]["snippet"]
    if ctx.llm is None:
        question = "Fill in the gap: " + _LONG_WORD.sub("____", passage, count=1)
    else:
        c = await ctx.llm.complete(
            [
                Message("system", "You are a teacher. Reply with one quiz question only."),
                Message("user", _quiz_prompt(_QUIZ_SHOT[0])),
                Message("assistant", _QUIZ_SHOT[1]),
                Message("user", _quiz_prompt(passage)),
            ],
            max_tokens=48,
            stop=["\n"],
        )
        question = c.text
    return Answer("Tutor", question, sources=_cite(hits), data={"passage": passage})


async def sword(ctx: AgentContext, request: str) -> Answer:
    results = await ctx.tools.call("sim.adversarial", {})
    failed = [r["attack"] for r in results if not r["held"]]
    text = f"{len(results) - len(failed)} of {len(results)} defences held"
    text += f"; FAILED: {', '.join(failed)}" if failed else "."
    return Answer("Sword", text, data=results, ok=not failed)


# One worked exchange: the answer's shape (a fenced function, one line of explanation).
_CODE_SHOT = (
    "write a python function that doubles a number",
    "```python\ndef double(x):\n    return 2 * x\n```\nIt returns twice the number.",
)


_PLAN_SHOT = "1. Take the number x. 2. Return 2 * x."


def _plan_prompt(task: str) -> str:
    return f"List the steps to solve this programming task, briefly: {task}"


async def magi(ctx: AgentContext, request: str) -> Answer:
    if ctx.llm is None:
        return Answer("Magi", "Writing code needs the language model, which is off on this node.", ok=False)
    # Think first (hidden: the notes go to this node's trace only, never into the answer or to a peer).
    # The notes stay in the trace and are NOT fed back into the answer's prompt: measured on the tuned-on tasks, the
    # small models copy the worked plan into the code ("def even(x): return 2 * x"); without them 3 of 4 were right.
    await ctx.think(_plan_prompt(request), shot=(_plan_prompt(_CODE_SHOT[0]), _PLAN_SHOT))
    c = await ctx.llm.complete(
        [
            Message("system", "You are a careful programmer. Answer with short Python code and one line about it."),
            Message("user", _CODE_SHOT[0]),
            Message("assistant", _CODE_SHOT[1]),
            Message("user", request),
        ],
        max_tokens=160,
    )
    return Answer("Magi", c.text, data={"tokens": c.tokens})


async def maker(ctx: AgentContext, request: str) -> Answer:
    a = await _rag_answer(ctx, request, k=2)
    if a.ok:
        a.text = "Repair notes from the knowledge base (check power is off first):\n" + a.text.split("\n", 1)[1]
    return a


HANDLERS: dict[str, Handler] = {
    "King": king,
    "Navigator": navigator,
    "Shield": shield,
    "Auditor": auditor,
    "Sustainer": sustainer,
    "Gardener": gardener,
    "Legal": legal,
    "Sage": sage,
    "Medic": medic,
    "Horticulturist": horticulturist,
    "Curator": curator,
    "Shaman": shaman,
    "Coordinator": coordinator,
    "Polyglot": polyglot,
    "Tutor": tutor,
    "Magi": magi,
    "Maker": maker,
    "Sword": sword,
}
