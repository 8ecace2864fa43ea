"""The mesh core's timer tasks (sans-IO): what :meth:`~node.routing.mesh.MeshCore.handle_timer` runs once the
earliest of the components' deadlines (:meth:`~node.routing.mesh.MeshCore.get_timer`) is due.

Each task is run on its own under :class:`~node.routing.containment.Containment`, so a failure ends that task only
(counted, logged once); what a failed task popped is not due again, so the timer advances. A task that fails before
it pops its due item leaves that deadline in the past: :meth:`TimerTasks.run` then returns False and the adapter
waits :data:`TIMER_FAILURE_PAUSE_S` before it runs the tasks again (node.node; node.sim in simulated time), never a
busy loop. The tasks:

* unanswered pings raise their link's loss estimate (:class:`~node.routing.pinging.PingTracker`);
* our periodic announce and deferred answers go out (:class:`~node.routing.announcing.AnnounceSchedule`);
* Noise handshakes expire and stale fragment sets are dropped;
* the relay queue's due jobs are emitted on their links (:class:`~node.routing.relay.RelayQueue`);
* hop-ARQ entries without an ack are resent, or given up (:mod:`node.routing.hoparq`);
* pending private messages are retried (:class:`~node.routing.delivery.PrivateDelivery`).

The components are those of one core, shared with it (never copies); no clock is read here: ``now`` is given.
"""

from __future__ import annotations

from node.routing.announcing import AnnounceSchedule
from node.routing.containment import Containment
from node.routing.delivery import PrivateDelivery
from node.routing.events import MeshCounters
from node.routing.hoparq import HopEntry
from node.routing.meshbase import RTT_SMOOTHING
from node.routing.output import LinkOutput
from node.routing.paths import PathTable
from node.routing.pinging import PingTracker
from node.routing.presence import Presence
from node.routing.relay import RelayQueue
from node.routing.settings import MeshSection
from node.wire import Reassembler

# After a timer task failed (a bug, contained), the timer runs again no sooner than this: a task that failed before it
# popped its due item leaves the same past deadline, which must not become a busy loop (the daemon's adapter, node.node,
# and the simulator's, node.sim.engine, both wait it).
TIMER_FAILURE_PAUSE_S = 0.1


class TimerTasks:
    """The timer work of one core (see the module docstring); :meth:`run` is its ``handle_timer``."""

    def __init__(
        self,
        *,
        settings: MeshSection,
        output: LinkOutput,
        paths: PathTable,
        pings: PingTracker,
        schedule: AnnounceSchedule,
        presence: Presence,
        delivery: PrivateDelivery,
        reassembler: Reassembler,
        relays: RelayQueue,
        counters: MeshCounters,
        containment: Containment,
    ) -> None:
        self.settings = settings
        self.output = output
        self.paths = paths
        self.pings = pings
        self.schedule = schedule
        self.presence = presence
        self.delivery = delivery
        self.reassembler = reassembler
        self.relays = relays
        self.counters = counters
        self.containment = containment

    def run(self, now: float) -> bool:
        """Run what is due. Never raises: each task's failure ends that task only (counted, logged once). False if a
        task failed: what it had not popped yet may still be due (the caller must not run again at once)."""
        ok = True
        for task in (
            self._expire_pings,
            self._timer_announces,
            self.delivery.expire_handshakes,
            self.reassembler.expire,
            self._timer_relays,
            self._timer_hop_arq,
            self.delivery.retry_due,
        ):
            try:
                task(now)
            except Exception as exc:  # noqa: BLE001 - broad: a timer task's failure must end that task only (counted, logged)
                self.containment.contain(exc, f"timer task {getattr(task, '__name__', task)}", None)
                ok = False
        return ok

    def _expire_pings(self, now: float) -> None:
        for link_id in self.pings.on_timer(now):  # a ping went unanswered: the link's loss estimate rises
            stats = self.paths.links.get(link_id)
            if stats is not None:
                stats.loss = (1 - RTT_SMOOTHING) * stats.loss + RTT_SMOOTHING

    def _timer_announces(self, now: float) -> None:
        periodic, answers = self.schedule.on_timer(now)
        if periodic:
            try:
                self.presence.announce_all(now)
            finally:
                if self.schedule.next_announce is not None and self.schedule.next_announce <= now:
                    self.schedule.schedule(now, len(self.output.links))  # it failed: the next one is still scheduled
        for link_id in answers:
            self.presence.send_announce([link_id], now)

    def _timer_relays(self, now: float) -> None:
        due = self.relays.pop_due(now)
        if not due:
            return
        self.counters.relayed += len(due)  # (each one counts, whether or not it fails below)
        output = self.output
        failed: Exception | None = None
        for job in due:
            try:
                if job.track and len(job.link_ids) == 1:
                    output.emit_tracked(job.link_ids[0], job.frame, None, job.key, now)
                    continue
                output.emit_copies(job.link_ids, job.frame)
            except Exception as exc:  # noqa: BLE001 - broad: this relay is dropped, the others still go (re-raised: counted)
                failed = failed or exc
        if failed is not None:
            raise failed

    def _timer_hop_arq(self, now: float) -> None:
        failed: Exception | None = None
        for entry in self.output.on_timer(now):
            try:
                self._hop_timeout(entry, now)
            except Exception as exc:  # noqa: BLE001 - broad: this entry is given up, the others still go (re-raised: counted)
                self.output.hoparq.give_up(entry)
                failed = failed or exc
        if failed is not None:
            raise failed

    def _hop_timeout(self, entry: HopEntry, now: float) -> None:
        """No hop ack for ``entry`` in time: resend it on its link, or give it up after mesh.hop_retries resends."""
        output = self.output
        hoparq = output.hoparq
        links = output.links
        if entry.link_id not in links:
            hoparq.give_up(entry)
            return
        stats = self.paths.links.get(entry.link_id)
        if entry.tries <= self.settings.hop_retries:
            output.out.append((entry.link_id, entry.frame))
            self.counters.hop_retransmits += 1
            rto = hoparq.rto(entry.link_id, stats.rtt_s if stats is not None else None, entry.tries + 1)
            hoparq.retry(entry, now + rto)
            return
        hoparq.give_up(entry)
        self.counters.hop_give_ups += 1
        if stats is not None:  # as a lost pong: the link's cost rises, the next path computation may avoid it
            stats.loss = (1 - RTT_SMOOTHING) * stats.loss + RTT_SMOOTHING
            self.paths.link_cost_changed()
        # Our private message never left the first hop: resend it at once on every path. (Not with this link as
        # our only one: the flood would be the same single tracked send again, resent and given up in a loop that
        # never counts an attempt.)
        if (
            entry.tag is not None
            and any(lid != entry.link_id for lid in links)
            and self.delivery.first_hop_gave_up(entry.tag, now)
        ):
            self.counters.hop_failovers += 1
