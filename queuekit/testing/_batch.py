"""Tier ``batch``: ``put_many`` and ``get_many`` as the contract defines them."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import settings as Settings
from hypothesis import strategies as st

from .._errors import Empty, Full, JoinTimeout, SerializationError, ShutDown
from ._checks import Target, check
from ._core import PATIENCE, SHORT, expect_outcome, settle_qsize


@check("batch-order-and-bounds", tier="batch")
def batch_order_and_bounds(target: Target) -> None:
    """get_many returns 1..max_items items in FIFO order, taking all there are up to the max."""

    @Settings(target.settings)
    @given(
        batches=st.lists(st.integers(0, 20), min_size=1, max_size=5),
        max_items=st.integers(1, 25),
    )
    def run(batches: list[int], max_items: int) -> None:
        with target.queue() as q:
            items = [target.item(n) for n in range(sum(batches))]
            start = 0
            for size in batches:
                q.put_many(
                    iter(items[start : start + size]), timeout=PATIENCE
                )  # any iterable, not just lists
                start += size
            got: list[object] = []
            while len(got) < len(items):
                chunk = q.get_many(max_items, timeout=PATIENCE)
                want = min(max_items, len(items) - len(got))
                assert len(chunk) == want, (
                    f"get_many({max_items}) returned {len(chunk)} items with "
                    f"{len(items) - len(got)} queued; expected {want}"
                )
                got.extend(chunk)
            assert got == items, "get_many did not return the items in the order put"
            expect_outcome(lambda: q.get_many(max_items, block=False), Empty, "get_many on empty")

    run()


@check("put-many-all-or-nothing", tier="batch")
def put_many_all_or_nothing(target: Target) -> None:
    """A batch that does not fit, or cannot be serialized, leaves the queue unchanged."""
    with target.queue(maxsize=4) as q:
        q.put_many([target.item(0), target.item(1)], timeout=PATIENCE)
        batch = [target.item(n) for n in range(2, 5)]
        expect_outcome(lambda: q.put_many(batch, block=False), Full, "put_many(3) with room for 2")
        expect_outcome(lambda: q.put_many(batch, timeout=SHORT), Full, "put_many(3, timeout)")
        size = settle_qsize(q, target.capabilities, 2)
        assert size == 2, f"a refused batch changed the queue: qsize {size}, expected 2"
        too_long = [target.item(n) for n in range(5)]
        expect_outcome(
            lambda: q.put_many(too_long, timeout=PATIENCE), ValueError, "put_many(5) on maxsize=4"
        )
        q.put_many(batch[:2], timeout=PATIENCE)
        got = q.get_many(10, timeout=PATIENCE)
        want = [target.item(n) for n in range(4)]
        assert got == want, f"after refused batches the queue holds {got}, expected {want}"
        if target.capabilities.serializes:
            bad = [target.item(9), threading.Lock(), target.item(10)]
            expect_outcome(
                lambda: q.put_many(bad, timeout=PATIENCE),
                SerializationError,
                "put_many(unpicklable)",
            )
            expect_outcome(q.get_nowait, Empty, "get after a batch refused for serialization")


@check("put-many-waits-for-room", tier="batch")
def put_many_waits_for_room(target: Target) -> None:
    """A blocked put_many enqueues nothing until the whole batch fits, then all of it."""
    with target.queue(maxsize=3) as q:
        q.put_many([target.item(0), target.item(1)], timeout=PATIENCE)
        done = threading.Event()
        errors: list[BaseException] = []

        def putter() -> None:
            try:
                q.put_many([target.item(2), target.item(3)], timeout=PATIENCE)
            except BaseException as exc:
                errors.append(exc)
            done.set()

        thread = threading.Thread(target=putter, daemon=True)
        thread.start()
        assert not done.wait(0.2), f"put_many(2) with room for 1 returned at once ({errors})"
        size = settle_qsize(q, target.capabilities, 2)
        assert size == 2, f"a waiting put_many enqueued part of its batch: qsize {size}"
        assert q.get(timeout=PATIENCE) == target.item(0)
        assert done.wait(PATIENCE), "put_many did not go through once the batch fitted"
        thread.join(PATIENCE)
        assert not errors, f"put_many failed once the batch fitted: {errors[0]!r}"
        got = q.get_many(5, timeout=PATIENCE)
        want = [target.item(n) for n in (1, 2, 3)]
        assert got == want, f"queue holds {got} after the blocked batch, expected {want}"


@check("batch-tasks-and-shutdown", tier="batch")
def batch_tasks_and_shutdown(target: Target) -> None:
    """Each item of a batch is one task; get_many drains a shut-down queue, then ShutDown."""
    with target.queue() as q:
        q.put_many([target.item(n) for n in range(5)], timeout=PATIENCE)
        q.put_many([], timeout=PATIENCE)
        got = q.get_many(3, timeout=PATIENCE)
        for _ in got:
            q.task_done()
        expect_outcome(lambda: q.join(timeout=SHORT), JoinTimeout, "join with 2 items queued")
        q.shutdown()
        expect_outcome(
            lambda: q.put_many([target.item(9)], timeout=PATIENCE),
            ShutDown,
            "put_many after shutdown",
        )
        rest = q.get_many(10, timeout=PATIENCE)
        assert rest == [target.item(3), target.item(4)], f"shutdown lost batch items: {rest}"
        expect_outcome(lambda: q.get_many(10, timeout=SHORT), ShutDown, "get_many when drained")
        q.task_done()
        q.task_done()
        q.join(timeout=PATIENCE)
