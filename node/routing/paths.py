"""The path table (sans-IO): where to send a packet for a peer that may be several hops away.

Three sources feed it, all from verified announces:

* **direct links** — an announce with TTL 7 binds the link it came in on to its sender; a peer may be direct on
  several links at once (BLE and BetaNet), each with its own cost;
* **topology** — every announce carries up to 10 of its sender's direct neighbours (BitChat TLV 0x04), so the
  node holds a graph of who hears whom; a shortest path (Dijkstra, our first hop weighted by the link's cost,
  every further hop 1) gives a v2 **source route** (the intermediate hops). An edge counts only when **both**
  ends name each other, each in its own signed announce: a node naming peers it has no link to (a liar, or a
  stale list) adds no edge, and one announce names at most ``MAX_NEIGHBOURS`` (more are ignored). A claim counts
  for ``CLAIM_GRACE`` path TTLs after the last announce making it, even if a later one of the same origin leaves
  the neighbour out (at high loss lists flap; ``MAX_CLAIMS`` remembered per origin). A peer whose
  announce never reached us (it cannot confirm or contradict) is reached as a last hop from the cheapest origin
  naming it, never through it. A peer whose announces name nobody (a phone that leaves TLV 0x04 out) is still
  reached as our direct neighbour, or farther away by its reverse path. What a liar keeps: naming a peer the
  node never heard (a last hop through the liar, if it is the cheapest namer), two colluding liars naming each
  other (an edge that exists only if they tunnel), its own identities naming each other (routes to them only),
  and dropping what it relays on a real path, as any relay can (see bench/README.md, "Two-way neighbour claims");
* **reverse paths** — the first copy of each new announce from a peer arrives over the fastest path, so the
  link it came in on is a good next hop back towards that peer, even when the peer is beyond the topology we
  know (neighbour lists are truncated to 10).

Entries expire ``path_ttl_s`` after the announce that made them. The shortest paths are recomputed lazily:
at once after a link or binding change, at most once per ``MIN_RECOMPUTE_S`` after topology news (announces
arrive constantly in a large mesh; one recompute at 1,000 nodes costs milliseconds). Reverse paths are looked
up directly and never force a recompute.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from node.wire.payloads import MAX_NEIGHBOURS

RTT_UNIT_S = 0.1  # a link's cost grows by one unit per 100 ms of round-trip time
MIN_DELIVERY = 0.05  # floor of the delivery estimate, so a very lossy link has a large but finite cost
MIN_RECOMPUTE_S = 1.0  # topology news waits at most this long before the shortest paths are recomputed
UNHEARD_HOP_COST = 2.5  # the last hop to a peer we never heard from, on its neighbours' word (see _compute)
# A neighbour claim stays valid this many path_ttl_s after the last announce that made it, even when a later announce
# of the same origin leaves the neighbour out: at high loss a node's list flaps (a neighbour whose announces were
# lost drops out of it for a while), and loss, not lying, is the usual reason. Still needs both ends.
CLAIM_GRACE = 2.0
MAX_CLAIMS = 2 * MAX_NEIGHBOURS  # claims remembered per origin (the latest announce's always kept)


@dataclass(frozen=True, slots=True)
class Route:
    destination: bytes
    next_hop: bytes | None  # peer ID of the first hop; None when only the link is known (reverse path)
    link_id: str
    hops: int
    cost: float
    expires_at: float
    via: tuple[bytes, ...]  # intermediate hops for a v2 source route; () for a neighbour or a reverse path
    source: str  # "direct", "topology" or "reverse"


@dataclass(slots=True)
class LinkStats:
    """What a node measures of one of its links; feeds the link's cost."""

    weight: float = 1.0  # transport preference (BetaNet cheaper than BLE)
    rtt_s: float | None = None
    loss: float = 0.0  # exponentially weighted fraction of pings that got no pong

    def cost(self) -> float:
        rtt = self.rtt_s if self.rtt_s is not None else 0.0
        return self.weight * (1.0 + rtt / RTT_UNIT_S) / max(MIN_DELIVERY, 1.0 - self.loss)


@dataclass(slots=True)
class _Adjacency:
    neighbours: frozenset[bytes]  # named in the origin's latest announce
    expires_at: float
    claims: dict[bytes, float]  # neighbour -> until when a claim (latest or recent announce) counts for an edge


@dataclass(slots=True)
class _Reverse:
    link_id: str
    hops: int
    timestamp_ms: int
    expires_at: float


class PathTable:
    def __init__(
        self,
        local_id: bytes,
        *,
        path_ttl_s: float,
        max_hops: int,
        max_entries: int,
        neighbour_set: Callable[[tuple[bytes, ...]], frozenset[bytes]] = frozenset,
    ) -> None:
        self.local_id = local_id
        # Builds the set of an announce's neighbour list; a simulator of many nodes may pass a memo, so that the nodes
        # hearing one announce share one (equal) set.
        self._neighbour_set = neighbour_set
        self.path_ttl_s = path_ttl_s
        self.max_hops = max_hops
        self.max_entries = max_entries
        self.links: dict[str, LinkStats] = {}
        self._direct: dict[bytes, dict[str, float]] = {}  # peer -> {link id: expires_at}
        self._link_peer: dict[str, bytes] = {}  # link id -> the peer bound to it
        # origin -> its announced neighbours; least recently refreshed first (the first to expire while path_ttl_s
        # holds still), so evicting at a full table is O(1), not a scan of max_entries per hostile announce.
        self._adjacency: OrderedDict[bytes, _Adjacency] = OrderedDict()
        self._reverse: dict[bytes, _Reverse] = {}
        self._routes: dict[bytes, Route] | None = None  # None: must recompute before the next lookup
        self._stale = False  # topology news: recompute when MIN_RECOMPUTE_S has passed
        self._computed_at = 0.0
        self._next_expiry = float("inf")
        # peer -> its confirmed neighbours (both announces name each other); dropped when either side changes
        self._mutual: dict[bytes, frozenset[bytes]] = {}

    # ------------------------------------------------------------ inputs
    def link_up(self, link_id: str, weight: float) -> None:
        self.links[link_id] = LinkStats(weight=weight)
        self._routes = None

    def link_cost_changed(self) -> None:
        """A link's measured cost changed (e.g. its loss estimate rose): recompute the shortest paths soon."""
        self._stale = True

    def link_down(self, link_id: str) -> None:
        self.links.pop(link_id, None)
        peer = self._link_peer.pop(link_id, None)
        if peer is not None:
            links = self._direct.get(peer, {})
            links.pop(link_id, None)
            if not links:
                self._direct.pop(peer, None)
        for dest, rev in list(self._reverse.items()):
            if rev.link_id == link_id:
                del self._reverse[dest]
        self._routes = None

    def bind(self, peer: bytes, link_id: str, now: float) -> bool:
        """A direct announce from ``peer`` arrived on ``link_id``. False (and nothing changes) while the link is
        bound to another peer: TTL is not signed, so a neighbour replaying someone else's announce with TTL 7
        must not take over the link."""
        if link_id not in self.links:
            return False
        old = self._link_peer.get(link_id)
        if old is not None and old != peer:
            if self._direct.get(old, {}).get(link_id, 0.0) > now:
                return False
            self._direct.get(old, {}).pop(link_id, None)
        new = link_id not in self._direct.get(peer, {})
        self._link_peer[link_id] = peer
        self._direct.setdefault(peer, {})[link_id] = now + self.path_ttl_s
        if new:
            self._routes = None
        return True

    def forget_peer(self, peer: bytes) -> None:
        """The peer left: drop everything learned from it (its links stay up and may be rebound)."""
        for link_id in self._direct.pop(peer, {}):
            self._link_peer.pop(link_id, None)
        gone = self._adjacency.pop(peer, None)
        if gone is not None:
            self._neighbours_changed(peer, gone.neighbours, frozenset())
        self._reverse.pop(peer, None)
        self._routes = None

    def origins(self) -> int:
        """Origins whose announced neighbours are known (bounded by ``max_entries``)."""
        return len(self._adjacency)

    def peer_on_link(self, link_id: str) -> bytes | None:
        return self._link_peer.get(link_id)

    @property
    def link_peers(self) -> Mapping[str, bytes]:
        """Link ID -> the peer bound to it (read-only view, for hot loops)."""
        return self._link_peer

    def neighbours_of(self, peer: bytes) -> frozenset[bytes]:
        """The direct neighbours ``peer`` named in its last announce (empty if unknown)."""
        adj = self._adjacency.get(peer)
        return adj.neighbours if adj is not None else frozenset()

    def mutual_neighbours(self, peer: bytes) -> frozenset[bytes]:
        """The neighbours of ``peer`` whose own announces name ``peer`` too: a neighbourship both ends confirm
        (one lying announce cannot fake it). Cached until either side's neighbour list changes."""
        found = self._mutual.get(peer)
        if found is None:
            adjacency = self._adjacency
            mine = adjacency.get(peer)
            found = frozenset(
                y
                for y in (mine.neighbours if mine else ())
                if (a := adjacency.get(y)) is not None and peer in a.neighbours
            )
            if len(self._mutual) >= self.max_entries:
                self._mutual.clear()
            self._mutual[peer] = found
        return found

    def _neighbours_changed(self, origin: bytes, old: frozenset[bytes], new: frozenset[bytes]) -> None:
        mutual = self._mutual
        mutual.pop(origin, None)
        for y in old | new:
            mutual.pop(y, None)

    def on_announce(
        self, origin: bytes, neighbours: tuple[bytes, ...], link_id: str, hops: int, timestamp_ms: int, now: float
    ) -> None:
        """The first copy of a verified announce from ``origin`` arrived on ``link_id`` after ``hops`` hops."""
        expires = now + self.path_ttl_s
        adj = self._adjacency.get(origin)
        nset = self._neighbour_set(neighbours[:MAX_NEIGHBOURS])  # BitChat names at most ten; a longer list buys nothing
        if adj is None or adj.neighbours != nset:
            self._stale = True
            self._neighbours_changed(origin, adj.neighbours if adj is not None else frozenset(), nset)
        if adj is None and len(self._adjacency) >= self.max_entries:
            self._evict()
        claim_until = now + CLAIM_GRACE * self.path_ttl_s
        claims = {n: t for n, t in adj.claims.items() if t > now} if adj is not None else {}
        for n in nset:
            claims[n] = claim_until
        if len(claims) > MAX_CLAIMS:  # keep the latest announce's and the most recently made of the rest
            kept = sorted(claims.items(), key=lambda item: item[1], reverse=True)[:MAX_CLAIMS]
            claims = dict(kept)
        if adj is not None and not self._stale and claims.keys() != adj.claims.keys():
            self._stale = True
        self._adjacency[origin] = _Adjacency(nset, max(expires, claim_until), claims)
        self._adjacency.move_to_end(origin)
        rev = self._reverse.get(origin)
        if link_id in self.links and (rev is None or timestamp_ms > rev.timestamp_ms or rev.expires_at <= now):
            self._reverse[origin] = _Reverse(link_id, hops, timestamp_ms, expires)
        self._next_expiry = min(self._next_expiry, expires)

    def _evict(self) -> None:
        oldest = next(iter(self._adjacency))  # the least recently refreshed
        self._neighbours_changed(oldest, self._adjacency.pop(oldest).neighbours, frozenset())
        self._reverse.pop(oldest, None)

    # ------------------------------------------------------------ lookups
    def direct_links(self, peer: bytes, now: float) -> list[str]:
        """Links ``peer`` is bound to, cheapest first."""
        links = [lid for lid, exp in self._direct.get(peer, {}).items() if exp > now and lid in self.links]
        return sorted(links, key=lambda lid: self.links[lid].cost())

    def route(self, dest: bytes, now: float) -> Route | None:
        """The best way to ``dest``: a shortest path (direct or source-routed), else its reverse path."""
        found = self.routes(now).get(dest)
        return found if found is not None else self._reverse_route(dest, now)

    def all_routes(self, now: float) -> dict[bytes, Route]:
        """Every destination with a way to it (for display)."""
        out = dict(self.routes(now))
        for dest in list(self._reverse):
            if dest not in out and (r := self._reverse_route(dest, now)) is not None:
                out[dest] = r
        return out

    def routes(self, now: float) -> dict[bytes, Route]:
        """Shortest paths (recomputed lazily; reverse paths are not included)."""
        due = self._stale and now - self._computed_at >= MIN_RECOMPUTE_S
        if self._routes is None or due or now >= self._next_expiry or now < self._computed_at:
            self._routes = self._compute(now)
            self._computed_at = now
            self._stale = False
        return self._routes

    def _reverse_route(self, dest: bytes, now: float) -> Route | None:
        rev = self._reverse.get(dest)
        if rev is None or dest == self.local_id or rev.hops > self.max_hops:
            return None
        if rev.expires_at <= now or rev.link_id not in self.links:
            del self._reverse[dest]
            return None
        return Route(
            destination=dest,
            next_hop=self._link_peer.get(rev.link_id),
            link_id=rev.link_id,
            hops=rev.hops,
            cost=self.links[rev.link_id].cost() + rev.hops - 1,
            expires_at=rev.expires_at,
            via=(),
            source="reverse",
        )

    def _compute(self, now: float) -> dict[bytes, Route]:
        # Drop what expired, and note when the next entry will.
        for peer, links in list(self._direct.items()):
            for lid in [lid for lid, exp in links.items() if exp <= now]:
                del links[lid]
                if self._link_peer.get(lid) == peer:
                    del self._link_peer[lid]
            if not links:
                del self._direct[peer]
        for origin in [o for o, a in self._adjacency.items() if a.expires_at <= now]:
            self._neighbours_changed(origin, self._adjacency.pop(origin).neighbours, frozenset())
        for origin in [o for o, r in self._reverse.items() if r.expires_at <= now or r.link_id not in self.links]:
            del self._reverse[origin]
        expiries = [a.expires_at for a in self._adjacency.values()]
        for adj in self._adjacency.values():
            for n in [n for n, t in adj.claims.items() if t <= now]:
                del adj.claims[n]
            expiries.extend(adj.claims.values())
        expiries += [exp for links in self._direct.values() for exp in links.values()]
        self._next_expiry = min(expiries, default=float("inf"))

        # Edges both ends confirm: A-B only when A's announce names B and B's own signed announce names A. One
        # node's claim is never an edge (a liar naming honest nodes it has no link to would pull routes into
        # links that do not exist). Each direction is added while visiting its own origin; an edge lasts as long
        # as both claims, and a claim as long as CLAIM_GRACE path TTLs after the last announce making it (a list
        # that flaps at high loss does not break the edge).
        adjacency = self._adjacency
        graph: dict[bytes, list[tuple[bytes, float]]] = {}
        for origin, adj in adjacency.items():
            edges = [
                (n, min(until, back))
                for n, until in adj.claims.items()
                if n != origin
                and (other := adjacency.get(n)) is not None
                and (back := other.claims.get(origin)) is not None
            ]
            if edges:
                graph[origin] = edges
        # A peer whose announce never reached us (many at high loss, at the edge of what we hear) can neither
        # confirm nor contradict a claim (nor can a full list, below): it is reached as a last hop from the
        # cheapest origin naming it, never through it, and a claim never displaces a route to a peer we heard.
        unheard: dict[bytes, list[tuple[bytes, float]]] = {}
        for origin, adj in adjacency.items():
            for n, until in adj.claims.items():
                if n == origin or n == self.local_id:
                    continue
                other = adjacency.get(n)
                if other is None:
                    unheard.setdefault(n, []).append((origin, until))
                elif origin not in other.claims and len(other.neighbours) >= MAX_NEIGHBOURS:
                    # A full list (ten names, maybe more neighbours) is silent, not a contradiction: either end of
                    # a one-sided claim where the other end's list is full is a last hop from the other, never a
                    # way through (a liar naming a busy node gains a route to itself, or a last hop to it when
                    # nothing confirmed reaches it).
                    unheard.setdefault(n, []).append((origin, until))
                    unheard.setdefault(origin, []).append((n, min(until, other.expires_at)))

        routes: dict[bytes, Route] = {}
        # Dijkstra from us. Entry: (cost, hops, tiebreak, peer, first link, path of peers after us).
        heap: list[tuple[float, int, bytes, str, tuple[bytes, ...], float]] = []
        for peer, links in self._direct.items():
            best = self.direct_links(peer, now)
            if best:
                lid = best[0]
                heapq.heappush(heap, (self.links[lid].cost(), 1, peer, lid, (peer,), links[lid]))
        done: set[bytes] = {self.local_id}
        while heap:
            cost, hops, peer, lid, path, expires = heapq.heappop(heap)
            if peer in done:
                continue
            done.add(peer)
            routes[peer] = Route(
                destination=peer,
                next_hop=path[0],
                link_id=lid,
                hops=hops,
                cost=cost,
                expires_at=expires,
                via=path[:-1],
                source="direct" if hops == 1 else "topology",
            )
            if hops >= self.max_hops:
                continue
            for n, edge_expiry in graph.get(peer, ()):
                if n not in done:
                    heapq.heappush(heap, (cost + 1.0, hops + 1, n, lid, (*path, n), min(expires, edge_expiry)))
        for dest, namers in unheard.items():
            if dest in routes:
                continue
            pick: tuple[Route, float, bytes] | None = None
            for origin, until in namers:
                r = routes.get(origin)
                if r is not None and r.hops < self.max_hops and (pick is None or r.cost < pick[0].cost):
                    pick = (r, until, origin)
            if pick is not None:
                via_route, until, origin = pick
                routes[dest] = Route(
                    destination=dest,
                    next_hop=via_route.next_hop,
                    link_id=via_route.link_id,
                    hops=via_route.hops + 1,
                    cost=via_route.cost + UNHEARD_HOP_COST,
                    expires_at=min(via_route.expires_at, until),
                    via=(*via_route.via, origin),
                    source="topology",
                )
        return routes
