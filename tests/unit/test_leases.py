"""The lease that lets one process at a time do a piece of work: taken, renewed, lost when not
renewed in time, handed over at once when released."""

from __future__ import annotations

from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.application.projections.analytics import AnalyticsProjection
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.followers.leases import Lease
from tests.unit.given import musician_registered


class Time:
    """A clock the test moves: the store's wall clock and the lease's monotonic clock."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(InMemoryDocumentStore):
    """Counts the store's lease writes."""

    def __init__(self, time: Time) -> None:
        super().__init__(wall_clock=time)
        self.asked = 0

    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        self.asked += 1
        return await super().try_lease(name, owner, seconds)


def leases(store: InMemoryDocumentStore, time: Time) -> tuple[Lease, Lease]:
    return (Lease(store, "work", seconds=9, owner="a", monotonic=time),
            Lease(store, "work", seconds=9, owner="b", monotonic=time))


async def test_one_holder_at_a_time() -> None:
    time = Time()
    a, b = leases(InMemoryDocumentStore(wall_clock=time), time)
    assert await a.hold() and a.held
    assert not await b.hold() and not b.held


async def test_holding_renews_the_lease_once_a_third_of_its_term_has_passed() -> None:
    time = Time()
    store = CountingStore(time)
    a, b = leases(store, time)
    assert await a.hold()
    time.now += 2  # less than a third of the term: still held, the store is not asked
    assert await a.hold()
    assert store.asked == 1
    time.now += 2  # past a third: renewed for a whole term from now
    assert await a.hold()
    assert store.asked == 2
    time.now += 8  # 12 s after it was taken, 8 s after the renewal: still a's
    assert not await b.hold()


async def test_a_recheck_asks_the_store_even_right_after_a_renewal() -> None:
    time = Time()
    store = CountingStore(time)
    a, b = leases(store, time)
    assert await a.hold()
    await store.release_lease("work", "a")  # a's lease is gone, unknown to a
    assert await b.hold()
    assert await a.hold()  # renewed lately: a does not ask
    assert not await a.hold(recheck=True)
    assert store.asked == 3 and not a.held


async def test_a_lease_not_renewed_in_time_is_lost_to_another() -> None:
    time = Time()
    a, b = leases(InMemoryDocumentStore(wall_clock=time), time)
    assert await a.hold()
    time.now += 10  # a stalled longer than the term
    assert await b.hold()
    assert not await a.hold()
    assert not a.held and b.held


async def test_a_released_lease_is_handed_over_at_once() -> None:
    time = Time()
    a, b = leases(InMemoryDocumentStore(wall_clock=time), time)
    assert await a.hold()
    await a.release()
    assert not a.held
    assert await b.hold()  # no wait for the term to end
    await a.release()  # not held: nothing to give up, b keeps it
    assert not await a.hold()


async def test_releasing_on_a_closed_store_lets_the_lease_expire() -> None:
    class Closed(InMemoryDocumentStore):
        async def release_lease(self, name: str, owner: str) -> None:
            raise RuntimeError("the store is closed")

    time = Time()
    lease = Lease(Closed(wall_clock=time), "work", seconds=9, monotonic=time)
    assert await lease.hold()
    await lease.release()
    assert not lease.held


async def test_a_dead_runners_projection_is_taken_over_after_its_lease_seconds() -> None:
    time = Time()
    documents, events = InMemoryDocumentStore(wall_clock=time), InMemoryEventStore()
    registered = musician_registered()
    await events.append(registered.stream_id, [registered], 0)
    dead = ProjectionRunner(events, documents, [AnalyticsProjection()], lease_seconds=2)
    assert await dead.catch_up("analytics") == 1  # and it never lets go (killed)
    another = musician_registered(musician_id="m2")
    await events.append(another.stream_id, [another], 0)
    successor = ProjectionRunner(events, documents, [AnalyticsProjection()], lease_seconds=2)
    time.now += 1.9
    assert await successor.catch_up("analytics") == 1  # still the dead runner's
    time.now += 0.2
    assert await successor.catch_up("analytics") == 2


async def test_the_fence_names_the_generation_the_lease_is_held_at() -> None:
    time = Time()
    a, b = leases(InMemoryDocumentStore(wall_clock=time), time)
    assert (a.fence, b.fence) == (None, None)
    assert await a.hold()
    fence = a.fence
    assert fence is not None and (fence.lease, fence.owner) == ("work", "a")
    time.now += 4
    assert await a.hold() and a.fence == fence  # renewed: the same generation
    time.now += 10  # a stalled past its term; b takes over, then lets go
    assert await b.hold()
    taken = b.fence
    assert taken is not None and taken.generation > fence.generation
    await b.release()
    assert b.fence is None
    assert await a.hold()  # a holds it again, but not as before: its old fence is stale
    again = a.fence
    assert again is not None and again.generation > taken.generation


async def test_what_is_left_of_the_term_counts_from_before_the_store_was_asked() -> None:
    time = Time()
    store = CountingStore(time)

    class Slow(InMemoryDocumentStore):
        async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
            time.now += 2  # the store takes 2 s to answer
            return await store.try_lease(name, owner, seconds)

    lease = Lease(Slow(), "work", seconds=9, owner="a", monotonic=time)
    assert lease.remaining() == 0 and lease.renewal_due() == 0
    assert await lease.hold()
    assert lease.remaining() == 7  # the store counts 9 s from its answer; the holder from its ask
    assert lease.renewal_due() == 1
    time.now += 1
    assert lease.renewal_due() == 0
    assert await lease.hold()  # renewed
    assert store.asked == 2 and lease.remaining() == 7
    await lease.release()
    assert lease.remaining() == 0
