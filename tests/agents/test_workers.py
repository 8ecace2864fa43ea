"""Oracle, Banker, Merchant, Strategist and Ensemble: their methods (pure) and their jobs on real in-process nodes
(memory links, a real knowledge base, MiniLM routing; every tool call through the node's MCP registry)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import nacl.signing
import pytest
import trio

from node.agents.errors import AgentError
from node.agents.forecast import Series, forecast, time_to, trend, wilson
from node.agents.ledger import Budgets, build_ledger
from node.agents.market import OfferBook, accept, make_offer, offer_from_json, verify
from node.agents.service import AgentsService
from node.agents.settings import AgentsSettings, LlmSettings
from node.agents.worktools import OfferFile
from node.rag.plugin import rag_service
from node.transports.memory import MemoryNetwork
from tools.inprocess import start_node


def test_trend_forecast_and_time_to_a_level() -> None:
    s = Series(max_samples=50)
    for i in range(100):  # a queue draining 2 messages a minute, with +-1 noise; only the last 50 kept
        s.add(60.0 * i, 300 - 2 * i + (1 if i % 2 else -1))
    assert len(s.samples) == 50
    tr = trend(s.samples)
    assert tr is not None and tr.n == 50
    assert tr.slope_per_s * 60 == pytest.approx(-2.0, abs=0.01)
    value, err = forecast(tr, 600)
    assert value == pytest.approx(300 - 2 * 109, abs=1.0) and 1.5 < err < 2.5  # +-2 s.e. of a +-1 residual
    eta = time_to(tr, 0)
    assert eta is not None and eta / 60 == pytest.approx(300 / 2 - 99, abs=1.0)
    flat = trend([(0, 5), (1, 5), (2, 5)])
    assert flat is not None and time_to(flat, 0) is None
    assert trend([(0, 1)]) is not None and trend([]) is None


def test_wilson_interval() -> None:
    p, lo, hi = wilson(9, 10)
    assert p == 0.9 and lo == pytest.approx(0.596, abs=0.002) and hi == pytest.approx(0.982, abs=0.002)
    assert wilson(0, 0) == (0.0, 0.0, 1.0)


def test_ledger_counts_per_peer_and_flags_budgets() -> None:
    inbox = [
        {"sender": "b0b", "text": "x" * 600, "private": True},
        {"sender": "b0b", "text": "y" * 600, "private": True},
        {"sender": "ca7", "text": "hi", "private": True},
        {"sender": "ca7", "text": "public news is the village's", "private": False},
    ]
    outbox = [
        {"to": "b0b", "text": "abc", "state": "delivered"},
        {"to": "ca7", "text": "q1", "state": "pending"},
        {"to": "ca7", "text": "q2", "state": "pending"},
        {"to": "ca7", "text": "q3", "state": "failed"},
    ]
    accounts = build_ledger(inbox, outbox, Budgets(stored_bytes_per_peer=1000, queued_per_peer=1), {"b0b": "bob"})
    bob, cat = accounts
    assert (bob.nickname, bob.stored_messages, bob.stored_bytes, bob.sent_bytes, bob.balance_bytes) == (
        "bob",
        2,
        1200,
        3,
        1197,
    )
    assert bob.over and "1200 bytes" in bob.over[0]
    assert (cat.stored_bytes, cat.queued, cat.failed) == (2, 2, 1) and "2 of our messages" in cat.over[0]


def test_offers_are_signed_verified_accepted_and_bounded() -> None:
    maker = nacl.signing.SigningKey(b"m" * 32)
    taker = nacl.signing.SigningKey(b"t" * 32)
    o = make_offer(
        maker,
        give="storage_bytes",
        give_amount=10_000_000,
        want="relay_frames",
        want_amount=500,
        now_ms=1000,
        ttl_s=60,
        to=b"\x01" * 8,
    )
    assert verify(o) and offer_from_json(o.to_json()) == o
    forged = dataclasses.replace(o, want_amount=5)
    assert not verify(forged)
    with pytest.raises(AgentError, match="another node"):
        accept(o, taker, b"\x02" * 8, 2000)
    with pytest.raises(AgentError, match="expired"):
        accept(o, taker, b"\x01" * 8, 61_000)
    done = accept(o, taker, b"\x01" * 8, 2000)
    assert verify(done) and done.taker == bytes(taker.verify_key)
    assert not verify(dataclasses.replace(done, taker=bytes(maker.verify_key)))
    with pytest.raises(AgentError, match="unknown resource"):
        make_offer(maker, give="gold", give_amount=1, want="relay_frames", want_amount=1, now_ms=0, ttl_s=1)
    book = OfferBook(max_offers=3)
    assert not book.add(forged, 0) and book.refused == 1
    for i in range(5):
        book.add(
            make_offer(
                maker, give="storage_bytes", give_amount=i + 1, want="relay_frames", want_amount=1, now_ms=0, ttl_s=9
            ),
            0,
        )
    assert len(book.offers) == 3 and [x.give_amount for x in book.all()] == [3, 4, 5]


def test_the_offers_file_is_read_and_written_privately(tmp_path: Path) -> None:
    maker = nacl.signing.SigningKey(b"m" * 32)
    o = make_offer(maker, give="storage_bytes", give_amount=10, want="relay_frames", want_amount=5, now_ms=0, ttl_s=9)
    book = OfferBook()
    book.add(o, 0)
    d = tmp_path / "agents"
    d.mkdir()
    path, victim = d / "offers.json", tmp_path / "victim"
    victim.write_text("important\n")
    (d / "offers.tmp").symlink_to(victim)  # planted: the old fixed temp name was opened through the link
    OfferFile(path).save(book)
    assert victim.read_text() == "important\n" and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    # A row whose time is Infinity (int() raises OverflowError) is skipped, not fatal to the start.
    path.write_text(json.dumps([o.to_json() | {"created_ms": math.inf}, o.to_json()]))
    again, f = OfferBook(), OfferFile(path)
    f.load(again, 1)
    assert f.skipped == 1 and list(again.offers) == [o.id]
    # A symlinked offers.json is not followed: moved aside, the target untouched, the node starts with no offers.
    path.unlink()
    path.symlink_to(victim)
    empty, f2 = OfferBook(), OfferFile(path)
    f2.load(empty, 1)
    assert f2.skipped == 1 and not empty.offers and (d / "offers.json.bad").is_symlink()
    assert victim.read_text() == "important\n"


def test_an_accepted_offer_is_final_and_a_bad_offers_file_does_not_stop_the_node(tmp_path: Path) -> None:
    maker = nacl.signing.SigningKey(b"m" * 32)
    taker = nacl.signing.SigningKey(b"t" * 32)
    o = make_offer(maker, give="storage_bytes", give_amount=10, want="relay_frames", want_amount=5, now_ms=0, ttl_s=9)
    book = OfferBook()
    book.add(o, 0)
    done = accept(o, taker, b"\x01" * 8, 1)
    book.offers[o.id] = done
    assert not book.add(o, 2)  # the open offer again (a reload, a replay): the accepted record stays
    assert book.get(o.id).taker == bytes(taker.verify_key)
    with pytest.raises(AgentError, match="already accepted"):
        accept(book.get(o.id), taker, b"\x01" * 8, 3)
    # Rows out of range are refused on load (a negative amount or time would not even pack into sign-bytes).
    for bad in ({"give_amount": -1}, {"want_amount": 10**13}, {"created_ms": -5}, {"give": "gold"}, {"maker": "00"}):
        with pytest.raises(AgentError):
            offer_from_json(o.to_json() | bad)
    # A file with bad rows: they are skipped and counted, the good ones load; the accepted record survives saving.
    path = tmp_path / "agents" / "offers.json"
    f = OfferFile(path)
    f.save(book)
    assert oct(path.stat().st_mode & 0o777) == "0o600" and not path.with_suffix(".tmp").exists()
    rows = json.loads(path.read_text())
    rows += [o.to_json() | {"give_amount": -1}, "junk", o.to_json()]
    path.write_text(json.dumps(rows))
    again, f2 = OfferBook(), OfferFile(path)
    f2.load(again, 4)
    assert f2.skipped == 3 and again.get(o.id) == done
    path.write_text("[" * 5000)  # unreadable: moved aside, the node starts with no offers
    empty, f3 = OfferBook(), OfferFile(path)
    f3.load(empty, 4)
    assert (
        f3.skipped == 1
        and not empty.offers
        and not path.exists()
        and (tmp_path / "agents" / "offers.json.bad").exists()
    )


@pytest.mark.timeout(300)
async def test_the_five_agents_work_on_real_nodes(tmp_path: Path) -> None:
    with trio.fail_after(280):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork(seed=5, queue_frames=4096)
            await nursery.start(net.run)
            settings = AgentsSettings(budget_stored_bytes_per_peer=50)
            svc = AgentsService(settings, LlmSettings(backend="off"), tmp_path / "alice")
            bob_svc = AgentsService(AgentsSettings(), LlmSettings(backend="off"), tmp_path / "bob")
            alice = await start_node(nursery, net, tmp_path, "alice", 1, services=[svc])
            bob = await start_node(nursery, net, tmp_path, "bob", 2, services=[bob_svc])
            net.connect(alice.transports[0], bob.transports[0])  # type: ignore[arg-type]
            await alice.wait_until(lambda: any(p["nickname"] == "bob" and p["reachable"] for p in alice.peers_view()))
            await bob.wait_until(lambda: any(p["nickname"] == "alice" and p["reachable"] for p in bob.peers_view()))

            # Banker: bob's messages take storage on alice's node; over the (small) budget, and said so.
            inbox = alice.subscribe_inbox()
            text = "the harvest festival is on saturday, bring baskets and the big pot for the stew please"
            bob.send_private(alice.identity.peer_id_hex, text)
            await inbox.receive()
            r = await svc.ask("how much storage does bob use on my node")
            assert r["steps"][0]["agent"] == "Banker"
            (acct,) = r["steps"][0]["data"]["shown"]
            assert acct["nickname"] == "bob" and acct["stored_bytes"] == len(text.encode())
            assert "OVER BUDGET" in r["answer"]

            # Oracle: delivery odds from the outbox's outcomes, with the method and interval stated.
            for i in range(3):
                mid = alice.send_private(bob.identity.peer_id_hex, f"note {i}")
                await alice.wait_until(functools.partial(lambda m: alice.outgoing[m].state == "delivered", mid))
            for _ in range(3):
                svc.metrics.sample(alice, None)
            r = await svc.ask("what are the odds my message reaches bob today")
            step = r["steps"][0]
            assert step["agent"] == "Oracle" and step["ok"]
            d = step["data"]["forecasts"][0]
            assert d["metric"] == "delivery" and d["delivered"] == 3 and d["p"] == 1.0 and 0.4 < d["low"] < 0.5
            assert "Wilson 95 % interval" in r["answer"]
            r = await svc.ask("estimate when the outbox will be empty")
            f = r["steps"][0]["data"]["forecasts"][0]
            assert f["metric"] == "outbox_pending" and f["samples"] >= 4 and f["now"] == 0
            assert "least-squares line" in r["answer"] and "at 0 already" in r["answer"]

            # Merchant: a signed offer to bob, refused over the budget, accepted by bob's Merchant.
            r = await svc.ask("offer 2 MB of storage to bob for 500 relay frames")
            assert r["steps"][0]["agent"] == "Merchant"
            assert not r["steps"][0]["ok"] and "budget" in r["answer"]
            r = await svc.ask("offer 50 relay frames to bob for 20 mailbox messages", agent="Merchant")
            offer = r["steps"][0]["data"]
            assert offer["to"] == bob.identity.peer_id_hex and offer["give"] == "relay_frames"
            assert (tmp_path / "alice" / "agents" / "offers.json").stat().st_mode & 0o777 == 0o600
            bob_svc.offers.add(offer_from_json(offer), bob.clock.wall_ms())  # carried to bob (out of band here)
            r = await bob_svc.ask(f"accept offer {offer['id'][:8]}", agent="Merchant")
            taken = r["steps"][0]["data"]
            assert r["steps"][0]["ok"] and taken["taker"] == bytes(bob.identity.signing_key.verify_key).hex()
            assert verify(offer_from_json(taken))
            r = await bob_svc.ask("which exchange offers do we have", agent="Merchant")
            assert "accepted, signature valid" in r["answer"]

            # Strategist: a goal becomes routed, tool-checked steps the King can run; the King runs them.
            goal = "make a plan to check how much battery is left and then tell bob the pump is fixed"
            r = await svc.ask(goal, agent="Strategist")
            step = r["steps"][0]
            assert step["agent"] == "Strategist"
            assert [s["agent"] for s in step["data"]["steps"]] == ["Sustainer", "Coordinator"]
            assert all(s["runnable"] for s in step["data"]["steps"])
            inbox_b = bob.subscribe_inbox()
            r = await svc.ask(step["data"]["king_request"])
            assert [s["agent"] for s in r["steps"]] == ["Sustainer", "Coordinator"]
            assert (await inbox_b.receive()).text == "the pump is fixed"

            # Ensemble: several agents, one stated rule, agreement on the cited document.
            rag = rag_service(alice)
            assert rag is not None
            await rag.add_text(
                "file:///docs/water.txt",
                "Water report: nitrate in the north well was 38 mg/l, under the 50 mg/l limit.",
                title="Water report",
            )
            r = await svc.ask("what does the water report say about nitrate", agent="Ensemble")
            step = r["steps"][0]
            assert step["agent"] == "Ensemble" and step["ok"]
            data = step["data"]
            assert len(data["answers"]) == 3 and data["source"] == "file:///docs/water.txt"
            assert len(data["agreeing"]) >= 2 and "majority" in data["rule"]
            nursery.cancel_scope.cancel()


def test_series_ignores_time_going_backwards() -> None:
    s = Series()
    s.add(10, 1)
    s.add(5, 2)
    assert list(s.samples) == [(10, 1.0)] and not math.isnan(s.samples[0][1])
