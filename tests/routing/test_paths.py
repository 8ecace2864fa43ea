"""The path table (node.routing.paths): an edge of the topology needs both ends' announces, so a node that names
peers it has no link to cannot pull routes into links that do not exist."""

from __future__ import annotations

from node.routing.paths import CLAIM_GRACE, MAX_CLAIMS, PathTable

ME, A, B, C, D, LIAR = (bytes([i]) * 8 for i in range(1, 7))
TS = 1_700_000_000_000


def _table() -> PathTable:
    table = PathTable(ME, path_ttl_s=60.0, max_hops=7, max_entries=100)
    table.link_up("la", 1.0)
    assert table.bind(A, "la", 0.0)
    return table


def test_a_one_sided_neighbour_claim_makes_no_route() -> None:
    table = _table()
    table.on_announce(A, (ME, B), "la", 1, TS, 0.0)  # A names B ...
    table.on_announce(B, (C,), "la", 2, TS, 0.0)  # ... and B's own announce does not name A
    assert B not in table.routes(1.0)  # (B's reverse path is all there is)
    table.on_announce(B, (A,), "la", 2, TS + 1, 1.0)  # now B's own announce names A: the edge A-B is confirmed
    route = table.route(B, 2.0)
    assert route is not None and route.via == (A,) and route.source == "topology" and route.hops == 2


def test_a_liar_naming_honest_nodes_gets_no_edge_to_them() -> None:
    table = _table()
    table.on_announce(A, (ME, LIAR, C), "la", 1, TS, 0.0)
    table.on_announce(LIAR, (A, C, D), "la", 2, TS, 0.0)  # only A names the liar back
    table.on_announce(C, (A,), "la", 2, TS, 0.0)  # C hears A, not the liar
    table.on_announce(D, (C,), "la", 3, TS + 1, 0.0)  # D names C, C does not name D: no edge C-D either
    routes = table.routes(1.0)
    assert routes[LIAR].via == (A,)
    assert routes[C].via == (A,)  # not through the liar
    # D is beyond the confirmed topology: only its reverse path (the link its announce came in on) is left
    route_d = table.route(D, 1.0)
    assert route_d is not None and route_d.source == "reverse" and route_d.via == ()
    # and the liar claiming the destination does not make it a hop towards D
    assert D not in routes


def test_an_edge_lasts_only_as_long_as_both_claims() -> None:
    table = _table()
    end = 60.0 * CLAIM_GRACE  # a claim counts this long after the announce making it
    table.on_announce(A, (ME, B), "la", 1, TS, 0.0)
    table.on_announce(B, (A,), "la", 2, TS, 30.0)
    route = table.route(B, 31.0)
    assert route is not None and route.expires_at == min(60.0, end)  # A's claim (and binding) expire first
    table.on_announce(B, (), "la", 2, TS + 1, 32.0)  # B's next announce leaves A out (its list flapped) ...
    table.link_cost_changed()
    route = table.route(B, 40.0)
    assert route is not None and route.source == "topology" and route.via == (A,)  # ... its recent claim still counts
    assert table.bind(A, "la", end - 10.0)
    table.on_announce(A, (ME,), "la", 1, TS + 1, end - 10.0)  # A leaves B out too; its claim ends at `end`
    table.on_announce(B, (), "la", 2, TS + 2, end - 10.0)
    route = table.route(B, end + 1.0)
    assert route is not None and route.source == "reverse"  # no claim of A's left: no edge


def test_claims_remembered_per_origin_are_bounded_and_still_need_both_ends() -> None:
    table = _table()
    for i in range(40):  # a liar naming new peers in every announce
        table.on_announce(LIAR, tuple(bytes([0x90, i, j]) + bytes(5) for j in range(10)), "la", 2, TS + i, float(i))
    adj = table._adjacency[LIAR]
    assert len(adj.claims) == MAX_CLAIMS and adj.neighbours <= adj.claims.keys()
    table.on_announce(A, (ME, LIAR, C), "la", 1, TS, 40.0)
    table.on_announce(C, (A,), "la", 2, TS, 40.0)
    routes = table.routes(41.0)
    assert routes[C].via == (A,) and not any(LIAR in r.via for r in routes.values())


def test_a_phone_naming_nobody_is_still_reached_directly_and_by_its_reverse_path() -> None:
    table = _table()
    table.on_announce(A, (), "la", 1, TS, 0.0)  # a BitChat phone without TLV 0x04
    route = table.route(A, 1.0)
    assert route is not None and route.source == "direct" and route.link_id == "la"
    table.on_announce(C, (), "la", 3, TS, 0.0)  # a phone two hops away, its announce relayed by A
    far = table.route(C, 1.0)
    assert far is not None and far.source == "reverse" and far.next_hop == A and far.hops == 3


def test_an_announce_names_at_most_ten_neighbours() -> None:
    table = _table()
    many = tuple(bytes([0x80, i]) * 4 for i in range(31))  # the TLV's length byte allows 31 IDs
    table.on_announce(LIAR, many, "la", 2, TS, 0.0)
    assert len(table.neighbours_of(LIAR)) == 10


def test_a_peer_never_heard_is_a_last_hop_on_its_neighbours_word_never_a_way_through() -> None:
    """At high loss many announces never arrive: a peer we never heard from cannot confirm or contradict a claim,
    so it is reached through the cheapest origin naming it — and nothing is reached through it."""
    table = _table()
    table.on_announce(A, (ME, B), "la", 1, TS, 0.0)  # B never heard
    route = table.route(B, 1.0)
    assert route is not None and route.source == "topology" and route.via == (A,) and route.hops == 2
    table.on_announce(D, (B,), "la", 4, TS, 1.0)  # D heard, naming only the unheard B
    table.link_cost_changed()
    assert D not in table.routes(2.0)
    table.on_announce(B, (C,), "la", 3, TS, 2.0)  # B heard at last, not naming A: the claim is contradicted
    assert B not in table.routes(3.0)


def test_a_full_list_is_silence_not_contradiction_so_a_last_hop_never_a_way_through() -> None:
    """A node with more than ten neighbours names only ten: its silence about a peer naming it does not contradict
    the claim, so that peer is reached as a last hop from it — and nothing is reached through that peer."""
    table = _table()
    busy = (ME, *(bytes([0xA0, i]) * 4 for i in range(9)))  # A names ten, B is not among them
    table.on_announce(A, busy, "la", 1, TS, 0.0)
    table.on_announce(B, (A, C), "la", 2, TS, 0.0)  # B names A
    table.on_announce(C, (B,), "la", 3, TS, 0.0)  # C and B confirm each other
    route = table.route(B, 1.0)
    assert route is not None and route.source == "topology" and route.via == (A,) and route.hops == 2
    assert C not in table.routes(1.0)  # not through B
    table.on_announce(A, (ME,), "la", 1, TS + 1, 2.0)  # A's list no longer full: its silence now contradicts
    table.link_cost_changed()
    assert B not in table.routes(3.0)
