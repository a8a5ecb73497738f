"""What is particular to memory://: who gets woken, forked children, subclasses' hooks.

The contract itself is the conformance suite's business. memory:// notifies only the callers
it counted as waiting; these tests wait until the count shows the threads asleep, so a wake-up
that is owed and never sent fails the test at ``LONG`` instead of passing by luck of timing.
The sleepers' own timeouts (``ASLEEP``) are far longer, so they cannot rescue a missed wake-up.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from refusing import Refused, Refusing

import queuekit
from queuekit import Empty, QueueClosed, ShutDown
from queuekit.backends.memory import MemoryQueue

LONG = 20.0
"""Seconds after which a thread or a call is taken to hang (the machine is shared and slow)."""
ASLEEP = 10 * LONG


def wait_until(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + LONG
    while not condition():
        assert time.monotonic() < end, f"still not {what} after {LONG}s"
        time.sleep(0.001)


class Crew:
    """Threads running calls on queues; each result (or exception) is kept in ``results``.
    The queues it opened are shut down at the end, to wake whatever a failed test left asleep."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.results: queue.Queue[Any] = queue.Queue()
        self.queues: list[MemoryQueue[Any]] = []

    def open(self, name: str = "", maxsize: int = 0) -> MemoryQueue[Any]:
        q: MemoryQueue[Any] = MemoryQueue(name, maxsize=maxsize)
        self.queues.append(q)
        return q

    def start(self, call: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            try:
                self.results.put(call())
            except Exception as exc:
                self.results.put(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def collect(self, count: int) -> list[Any]:
        return [self.results.get(timeout=LONG) for _ in range(count)]

    def finish(self) -> None:
        for q in self.queues:
            q.shutdown(immediate=True)
        end = time.monotonic() + LONG
        for thread in self.threads:
            thread.join(max(0.0, end - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a thread never returned"


@pytest.fixture
def crew() -> Iterator[Crew]:
    threads = Crew()
    yield threads
    threads.finish()


def test_each_put_wakes_one_sleeping_getter(crew: Crew) -> None:
    q = crew.open()
    for _ in range(6):
        crew.start(lambda: q.get(timeout=ASLEEP))
    wait_until(lambda: len(q._state.not_empty.asleep) == 6, "six getters asleep")
    for i in range(6):
        q.put(i)
    assert sorted(crew.collect(6)) == list(range(6))
    assert len(q._state.not_empty.asleep) == 0


def test_a_batch_wakes_as_many_sleeping_getters_as_it_has_items(crew: Crew) -> None:
    q = crew.open()
    for _ in range(5):
        crew.start(lambda: q.get(timeout=ASLEEP))
    wait_until(lambda: len(q._state.not_empty.asleep) == 5, "five getters asleep")
    q.put_many(range(4))
    assert sorted(crew.collect(4)) == list(range(4))
    q.put(4)
    assert crew.collect(1) == [4]


def test_each_get_lets_one_sleeping_putter_in(crew: Crew) -> None:
    q = crew.open(maxsize=2)
    q.put_many([0, 1])
    for i in range(2, 6):
        crew.start(lambda i=i: q.put(i, timeout=ASLEEP))  # type: ignore[misc]
    wait_until(lambda: len(q._state.not_full.asleep) == 4, "four putters asleep")
    got = [q.get(timeout=LONG) for _ in range(6)]
    assert got[:2] == [0, 1]
    assert sorted(got[2:]) == [2, 3, 4, 5]
    assert crew.collect(4) == [None] * 4
    assert q.qsize() == 0


def test_a_waiting_batch_does_not_take_the_wake_up_a_single_put_needs(crew: Crew) -> None:
    q = crew.open(maxsize=3)
    q.put_many(["a", "b", "c"])
    wide = crew.start(lambda: q.put_many(["x", "y", "z"], timeout=ASLEEP))
    wait_until(lambda: len(q._state.not_full.asleep) == 1, "the batch putter asleep")
    single = crew.start(lambda: q.put("s", timeout=ASLEEP))
    wait_until(lambda: len(q._state.not_full.asleep) == 2, "both putters asleep")
    assert q.get() == "a"  # room for one: the single put, queued behind the batch, goes in
    single.join(LONG)
    assert not single.is_alive(), "the single put was not woken by the room it needed"
    assert wide.is_alive()
    assert [q.get(timeout=LONG) for _ in range(6)] == ["b", "c", "s", "x", "y", "z"]
    assert crew.collect(2) == [None, None]


def test_shutdown_wakes_every_sleeping_getter_putter_and_batch(crew: Crew) -> None:
    empty = crew.open("wake-all-empty")
    full = crew.open("wake-all-full", maxsize=2)
    full.put_many([1, 2])
    for _ in range(3):
        crew.start(lambda: empty.get(timeout=ASLEEP))
        crew.start(lambda: full.put(3, timeout=ASLEEP))
    crew.start(lambda: full.put_many([4, 5], timeout=ASLEEP))
    wait_until(lambda: len(empty._state.not_empty.asleep) == 3, "three getters asleep")
    wait_until(lambda: len(full._state.not_full.asleep) == 4, "four putters asleep")
    empty.shutdown()
    full.shutdown()
    assert all(isinstance(r, ShutDown) for r in crew.collect(7))
    assert full.get_many(5) == [1, 2]  # graceful: what was there before is still drained


def test_every_joiner_wakes_when_the_last_task_is_done(crew: Crew) -> None:
    q = crew.open()
    q.put_many([1, 2])
    for _ in range(3):
        crew.start(lambda: q.join(timeout=ASLEEP))
    wait_until(lambda: len(q._state.all_tasks_done.asleep) == 3, "three joiners asleep")
    q.get_many(2)
    q.task_done()
    assert len(q._state.all_tasks_done.asleep) == 3  # one task is left
    q.task_done()
    assert crew.collect(3) == [None] * 3
    with pytest.raises(ValueError, match="more times than there were items put"):
        q.task_done()


def test_a_negative_timeout_is_refused_even_when_the_call_need_not_wait() -> None:
    q: MemoryQueue[int] = MemoryQueue()
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    assert q.qsize() == 0
    q.put(1, block=False, timeout=-1)  # not blocking: the timeout is ignored
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-0.5)
    assert q.qsize() == 1
    assert q.get(block=False, timeout=-1) == 1
    with pytest.raises(Empty):
        q.get(timeout=0)


def test_get_many_takes_the_front_items_in_order() -> None:
    q: MemoryQueue[int] = MemoryQueue()
    q.put_many(iter(range(10)))  # any iterable
    assert q.get_many(3) == [0, 1, 2]
    assert q.get_many(1) == [3]
    assert q.qsize() == 6
    assert q.get_many(100) == [4, 5, 6, 7, 8, 9]
    assert q.empty()


def _use_inherited(q: MemoryQueue[int], errors: Any) -> None:
    try:
        q.put(1)
    except QueueClosed as exc:
        errors.put(str(exc))
    else:
        errors.put("the put worked")
    fresh: MemoryQueue[int] = MemoryQueue()  # a queue opened in the child is the child's own
    fresh.put(2)
    errors.put(fresh.get(block=False))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_cannot_use_an_inherited_handle() -> None:
    q: MemoryQueue[int] = MemoryQueue()
    ctx: Any = multiprocessing.get_context("fork")  # BaseContext does not declare Process
    report = ctx.SimpleQueue()
    child = ctx.Process(target=_use_inherited, args=(q, report))
    child.start()
    child.join(LONG)
    assert child.exitcode == 0
    assert "a process other than the one that opened it" in report.get()
    assert report.get() == 2
    q.put(3)  # the parent's handle is unaffected
    assert q.get(block=False) == 3


class Tagged(MemoryQueue[Any]):
    """Overrides the encoding hooks: put and get must go through them, not around them."""

    def _encode(self, item: Any) -> Any:
        return ("tagged", super()._encode(item))

    def _decode(self, data: Any) -> Any:
        tag, inner = data
        assert tag == "tagged"
        return ("seen", super()._decode(inner))


@pytest.mark.parametrize("serializer", [None, "pickle"])
def test_a_subclass_overriding_a_hook_has_it_applied_to_every_call(serializer: str | None) -> None:
    q = Tagged(serializer=serializer)
    q.put(1)
    q.put_many([2, 3])
    assert [data[0] for data in q._state.items] == ["tagged"] * 3
    assert q.get() == ("seen", 1)
    assert q.get_many(5) == [("seen", 2), ("seen", 3)]
    q.close()
    with pytest.raises(QueueClosed):
        q.put(4)


def test_a_closed_handle_refuses_every_call_and_others_keep_the_queue() -> None:
    a = queuekit.open("memory://closing")
    b = queuekit.open("memory://closing")
    a.put(1)
    a.close()
    for call in (lambda: a.put(2), a.get, lambda: a.get_many(1), a.qsize, a.task_done):
        with pytest.raises(QueueClosed, match="is closed"):
            call()
    assert b.get(block=False) == 1
    b.close()


def test_a_notified_getter_stops_counting_as_asleep_at_once(crew: Crew) -> None:
    q = crew.open()
    crew.start(lambda: q.get(timeout=ASLEEP))
    wait_until(lambda: len(q._state.not_empty.asleep) == 1, "the getter asleep")
    q.put(1)
    assert not q._state.not_empty.asleep  # the puts that follow have nobody to wake
    q.put(2)
    assert crew.collect(1) == [1]
    assert q.get_many(5) == [2]


def test_a_getter_that_gives_up_leaves_nobody_asleep() -> None:
    q: MemoryQueue[int] = MemoryQueue()
    with pytest.raises(Empty):
        q.get(timeout=0.01)
    assert not q._state.not_empty.asleep


def test_a_timeout_beyond_what_a_lock_takes_waits_like_any_other(crew: Crew) -> None:
    q = crew.open()
    crew.start(lambda: q.get(timeout=threading.TIMEOUT_MAX * 10))
    wait_until(lambda: len(q._state.not_empty.asleep) == 1, "the getter asleep")
    q.put(7)
    assert crew.collect(1) == [7]


# --- A message that will not load ----------------------------------------------------------


class ShuttingRefusing(Refusing):
    """Refuses to load "bad" and "shut"; on "shut" it shuts the queue down at once first (as
    another thread could, while a get_many loads its batch)."""

    def __init__(self) -> None:
        self.queue: MemoryQueue[Any] | None = None

    def loads(self, data: bytes) -> Any:
        item = pickle.loads(data)
        if item == "shut" and self.queue is not None:
            self.queue.shutdown(immediate=True)
        if item in ("bad", "shut"):
            raise Refused(f"refusing {item!r}")
        return item


def refusing_queue() -> MemoryQueue[Any]:
    serializer = ShuttingRefusing()
    q: MemoryQueue[Any] = MemoryQueue(serializer=serializer)
    serializer.queue = q
    return q


def test_a_bad_message_is_counted_done_and_raised_and_the_next_is_served() -> None:
    q = refusing_queue()
    q.put("bad")
    q.put(1)
    with pytest.raises(Refused):
        q.get()
    assert q.get() == 1
    q.task_done()
    q.join(timeout=0)  # the bad message needed no task_done()
    with pytest.raises(ValueError, match="more times"):
        q.task_done()


def test_get_many_returns_the_items_before_a_bad_one_which_the_next_get_meets() -> None:
    q = refusing_queue()
    q.put_many([0, 1, "bad", 3, 4])
    assert q.get_many(5) == [0, 1]
    assert q.qsize() == 3  # the rest went back to the queue
    q.put(5)  # behind them: they went back to the front
    with pytest.raises(Refused):
        q.get()
    assert q.get_many(5) == [3, 4, 5]
    for _ in range(5):
        q.task_done()
    q.join(timeout=0)


def test_get_many_whose_first_message_is_bad_raises_and_keeps_the_rest_in_front() -> None:
    q = refusing_queue()
    q.put_many(["bad", 1, 2])
    q.put(3)
    with pytest.raises(Refused):
        q.get_many(3)
    assert q.qsize() == 3
    assert q.get() == 1
    assert q.get_many(5) == [2, 3]
    for _ in range(3):
        q.task_done()
    q.join(timeout=0)


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "subclass"])
def test_the_rule_holds_through_a_subclass_s_hooks(hooked: bool) -> None:
    class Hooked(MemoryQueue[Any]):
        def _decode(self, data: Any) -> Any:
            return super()._decode(data)

    serializer = ShuttingRefusing()
    q = (Hooked if hooked else MemoryQueue)(serializer=serializer)
    q.put_many([0, "bad", 2])
    assert q.get_many(3) == [0]
    with pytest.raises(Refused):
        q.get()
    assert q.get() == 2
    q.task_done()
    q.task_done()
    q.join(timeout=0)


def test_what_a_get_many_gives_back_after_an_immediate_shutdown_is_discarded_as_done() -> None:
    q = refusing_queue()
    q.put_many([0, "shut", 2, 3])
    assert q.get_many(4) == [0]  # loading "shut" shut the queue down meanwhile
    assert q.qsize() == 0
    with pytest.raises(ShutDown):
        q.get(block=False)
    q.task_done()  # for 0; the three given back were discarded, done
    q.join(timeout=0)
