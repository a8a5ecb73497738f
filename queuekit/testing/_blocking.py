"""Tier ``blocking``: calls that wait, what wakes them, and timeouts, with threads.

Every call that may wait runs in a thread of its own (a :class:`Call`), so a backend that never
wakes a caller fails a check instead of hanging the run. :class:`Calls` shuts the queue down
(immediately) when a check ends and then requires every thread to end.

Upper bounds are generous, since the machine may be loaded and the transport may cross
processes; lower bounds are the contract's: a timed wait never gives up before its timeout.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from types import TracebackType
from typing import Any

from .._errors import Empty, Full, JoinTimeout, ShutDown
from .._protocol import Queue
from ._checks import Target, check

__all__ = ["WAKE", "Call", "Calls", "settled_qsize", "still_blocked"]

WAKE = 3.0
"""Seconds a caller may take to return once it can (woken, or not meant to wait at all)."""
PROMPT = 0.5
"""The fastest of several woken callers must have returned within this many seconds: a wake-up
is a notification, not the next round of a poll."""
SETTLE = 0.25
"""Seconds given to a caller that must keep waiting to show that it does not."""
TIMEOUT = 0.25
"""The timeout given to timed calls that must run out."""
LATE = 2.0
"""Seconds a timed call may overrun its timeout."""
EARLY = 0.005
"""Seconds a timed call may return before its timeout: only the granularity of a clock other
than ours (a semaphore's, a server's), nothing more."""


def _outcome(value: Any, error: BaseException | None) -> str:
    if error is None:
        return f"returned {value!r}"
    text = str(error).strip().splitlines()
    return f"raised {type(error).__name__}" + (f" ({text[0]})" if text else "")


class Call:
    """One queue call running in a thread of its own; ``label`` says which, in plain words."""

    def __init__(self, label: str, fn: Callable[[], Any]) -> None:
        self.label = label
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = self.ended = time.monotonic()
        self._fn = fn
        self._thread = threading.Thread(target=self._run, name=f"queuekit: {label}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.started = time.monotonic()
        try:
            self.value = self._fn()
        except BaseException as exc:  # the check reads it
            self.error = exc
        self.ended = time.monotonic()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    def outcome(self) -> str:
        return _outcome(self.value, self.error)

    def wait(self, seconds: float) -> bool:
        self._thread.join(max(0.0, seconds))
        return not self._thread.is_alive()

    def finish(self, within: float = WAKE, after: str = "") -> Call:
        """Wait for the call to end; fail if it is still blocked after ``within`` seconds."""
        if not self.wait(within):
            raise AssertionError(
                f"{self.label} did not return within {within:g}s" + (f" {after}" if after else "")
            )
        return self

    def returned(self, after: str = "") -> Any:
        if self.error is not None:
            where = f" {after}" if after else ""
            raise AssertionError(f"{self.label} {self.outcome()}{where}") from self.error
        return self.value

    def raised(self, kind: type[BaseException], after: str = "") -> BaseException:
        if isinstance(self.error, kind):
            return self.error
        where = f" {after}" if after else ""
        raise AssertionError(
            f"{self.label} {self.outcome()}{where} instead of raising {kind.__name__}"
        ) from self.error


class Calls:
    """The calls a check starts; on exit the queues are shut down and every call must end."""

    def __init__(self, *queues: Queue[Any]) -> None:
        self._queues = queues
        self._calls: list[Call] = []

    def start(self, label: str, fn: Callable[[], Any]) -> Call:
        call = Call(label, fn)
        self._calls.append(call)
        return call

    def run(self, label: str, fn: Callable[[], Any], within: float = WAKE, after: str = "") -> Call:
        """Start ``fn`` and wait for it: for calls that must not wait, or not for long."""
        return self.start(label, fn).finish(within, after)

    def __enter__(self) -> Calls:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for q in self._queues:
            with contextlib.suppress(Exception):
                q.shutdown(immediate=True)
        end = time.monotonic() + WAKE
        hung = [c for c in self._calls if not c.wait(end - time.monotonic())]
        if hung and exc_type is None:
            raise AssertionError(
                f"{hung[0].label} was still blocked {WAKE:g}s after shutdown(immediate=True)"
            )


def still_blocked(calls: Iterable[Call], until: str) -> None:
    """Give ``calls`` time to return wrongly; fail naming the first that did."""
    time.sleep(SETTLE)
    for call in calls:
        if not call.running:
            raise AssertionError(f"{call.label} {call.outcome()} instead of waiting {until}")


def woken(
    calls: Iterable[Call], since: float, event: str, raises: type[BaseException] | None = None
) -> list[Any]:
    """What each call returned once ``event`` (done at ``since``) woke it, or that it raised
    ``raises``; and that the first to wake did so promptly."""
    calls = list(calls)
    for call in calls:
        call.wait(since + WAKE - time.monotonic())
    for call in calls:
        if call.running:
            raise AssertionError(f"{call.label} did not return within {WAKE:g}s of {event}")
    first = min(calls, key=lambda call: call.ended)
    fastest = first.ended - since
    of = f" (the fastest of {len(calls)})" if len(calls) > 1 else ""
    assert fastest <= PROMPT, (
        f"{first.label} took {fastest:.2f}s to wake after {event}{of}; a waiting caller must be "
        "woken as soon as it can proceed, not at a later poll"
    )
    if raises is not None:
        return [call.raised(raises, f"when woken by {event}") for call in calls]
    return [call.returned(f"after {event}") for call in calls]


def settled_qsize(q: Queue[Any], expected: int) -> int:
    """``qsize()``, allowing an approximate one a second to settle on ``expected``."""
    size = q.qsize()
    if q.capabilities.qsize == "approximate":
        end = time.monotonic() + 1.0
        while size != expected and time.monotonic() < end:
            time.sleep(0.01)
            size = q.qsize()
    return size


def _with_timeout(call: str, timeout: float | None) -> str:
    """``call`` with ``timeout=`` added as its last argument, when there is one."""
    if timeout is None:
        return call
    return f"{call[:-1]}{', ' if call[-2] != '(' else ''}timeout={timeout:g})"


@check("blocked-get-wakes-on-put", tier="blocking")
def blocked_get_wakes_on_put(target: Target) -> None:
    """A get blocked on an empty queue is woken by a put in another thread, with that item."""
    for n, timeout in enumerate((None, 60.0)):
        with target.queue() as q, Calls(q) as calls:
            getter = calls.start(
                f"a {_with_timeout('get()', timeout)} blocked on an empty queue",
                partial(q.get, timeout=timeout),
            )
            still_blocked([getter], "for an item")
            q.put(target.item(n), timeout=WAKE)
            (got,) = woken([getter], time.monotonic(), "a put")
            assert got == target.item(n), (
                f"{getter.label} returned {got!r} when woken, not the item put ({target.item(n)!r})"
            )
    with target.queue() as q, Calls(q) as calls:
        getters = [
            calls.start(f"get() #{n} of 3 blocked on an empty queue", q.get) for n in range(3)
        ]
        still_blocked(getters, "for an item")
        items = [target.item(n) for n in range(3)]
        q.put_many(items, timeout=WAKE)
        got = woken(getters, time.monotonic(), "a put_many of 3 items (one for each getter)")
        assert Counter(got) == Counter(items), (
            f"3 blocked getters woken by a put_many of {items!r} returned {got!r}"
        )


@check("blocked-put-wakes-on-get", tier="blocking")
def blocked_put_wakes_on_get(target: Target) -> None:
    """A put blocked on a full bounded queue is woken when another thread gets an item."""
    for maxsize, timeout in ((1, None), (2, 60.0)):
        with target.queue(maxsize=maxsize) as q, Calls(q) as calls:
            first = [target.item(n) for n in range(maxsize)]
            q.put_many(first, timeout=WAKE)
            late = target.item(maxsize)
            putter = calls.start(
                f"a {_with_timeout('put(item)', timeout)} on a full queue of maxsize={maxsize}",
                partial(q.put, late, timeout=timeout),
            )
            still_blocked([putter], "for room")
            got = [q.get(timeout=WAKE)]
            woken([putter], time.monotonic(), "a get that made room")
            got += [q.get(timeout=WAKE) for _ in range(maxsize)]
            assert got == [*first, late], (
                f"after a blocked put went through, the items came out as {got!r}, "
                f"not {[*first, late]!r}"
            )
    with target.queue(maxsize=3) as q, Calls(q) as calls:
        q.put_many([target.item(n) for n in range(3)], timeout=WAKE)
        putters = [
            calls.start(f"put() #{n} of 3 on a full queue of maxsize=3", partial(q.put, item))
            for n, item in enumerate([target.item(3), target.item(4), target.item(5)])
        ]
        still_blocked(putters, "for room")
        taken: list[Any] = []
        while len(taken) < 3:  # get_many may take fewer than there are; each call makes room
            taken += q.get_many(3 - len(taken), timeout=WAKE)
        woken(putters, time.monotonic(), "get_many calls that made room for all three")


@check("put-many-waits-for-whole-batch", tier="blocking")
def put_many_waits_for_whole_batch(target: Target) -> None:
    """A put_many blocked on a bounded queue takes no slot until its whole batch fits."""
    for timeout in (None, 60.0):
        with target.queue(maxsize=2) as q, Calls(q) as calls:
            a, b, x, y, w = (target.item(n) for n in range(5))
            q.put_many([a, b], timeout=WAKE)
            batch = calls.start(
                f"a {_with_timeout('put_many([x, y])', timeout)} on a queue of maxsize=2",
                partial(q.put_many, [x, y], timeout=timeout),
            )
            still_blocked([batch], "while the queue was full")
            assert q.get(timeout=WAKE) == a, "the first item put did not come out first"
            still_blocked([batch], "with room for only one of its 2 items")
            if q.capabilities.qsize == "exact":
                size = q.qsize()
                assert size == 1, (
                    f"while a put_many of 2 waited with room for 1, qsize() became {size}, not 1: "
                    "part of the batch was enqueued before the whole batch fitted"
                )
            try:
                q.put_nowait(w)
            except Full:
                raise AssertionError(
                    "put_nowait found a queue of maxsize=2 full with one item in it, while a "
                    "put_many of 2 waited: the waiting batch took a slot before it fitted whole"
                ) from None
            assert q.get(timeout=WAKE) == b, "the items before the waiting batch did not stay first"
            still_blocked([batch], "with room for only one of its 2 items")
            assert q.get(timeout=WAKE) == w, "an item put while a batch waited was lost"
            woken([batch], time.monotonic(), "gets that made room for the whole batch")
            got = [q.get(timeout=WAKE), q.get(timeout=WAKE)]
            assert got == [x, y], f"the waiting batch came out as {got!r}, not {[x, y]!r}"


@check("blocked-get-many-returns-first-arrivals", tier="blocking")
def blocked_get_many_returns_first_arrivals(target: Target) -> None:
    """A blocked get_many returns as soon as an item arrives; it does not wait for max_items."""
    for n, timeout in enumerate((None, 60.0)):
        with target.queue() as q, Calls(q) as calls:
            getter = calls.start(
                f"a {_with_timeout('get_many(10)', timeout)} blocked on an empty queue",
                partial(q.get_many, 10, timeout=timeout),
            )
            still_blocked([getter], "for a first item")
            q.put(target.item(n), timeout=WAKE)
            (got,) = woken([getter], time.monotonic(), "a put of one item (not waiting for 10)")
            assert got == [target.item(n)], (
                f"{getter.label} returned {got!r} after a put of {target.item(n)!r}"
            )
    with target.queue() as q, Calls(q) as calls:
        getter = calls.start("a get_many(10) blocked on an empty queue", partial(q.get_many, 10))
        still_blocked([getter], "for a first item")
        items = [target.item(n) for n in range(3)]
        q.put_many(items, timeout=WAKE)
        (got,) = woken([getter], time.monotonic(), "a put_many of 3 items")
        assert isinstance(got, list) and 1 <= len(got) <= 3 and got == items[: len(got)], (
            f"{getter.label} returned {got!r} after a put_many of {items!r}; expected a "
            "non-empty front part of them"
        )
        rest = [q.get(timeout=WAKE) for _ in range(3 - len(got))]
        assert got + rest == items, f"the items came out as {got + rest!r}, not {items!r}"


@check("timeouts-honoured", tier="blocking")
def timeouts_honoured(target: Target) -> None:
    """A timed get, put, get_many, put_many or join gives up at its timeout: not before, not
    much after."""
    with contextlib.ExitStack() as stack:
        empty = stack.enter_context(target.queue())
        full = stack.enter_context(target.queue(maxsize=1))
        roomy = stack.enter_context(target.queue(maxsize=2))
        pending = stack.enter_context(target.queue())
        calls = stack.enter_context(Calls(empty, full, roomy, pending))
        full.put(target.item(0), timeout=WAKE)
        roomy.put(target.item(0), timeout=WAKE)
        pending.put(target.item(0), timeout=WAKE)
        t = TIMEOUT
        timed: list[tuple[Call, type[BaseException]]] = [
            (calls.start(f"get(timeout={t}) on an empty queue", partial(empty.get, timeout=t)),
             Empty),
            (calls.start(f"get_many(3, timeout={t}) on an empty queue",
                         partial(empty.get_many, 3, timeout=t)), Empty),
            (calls.start(f"put(timeout={t}) on a full queue",
                         partial(full.put, target.item(1), timeout=t)), Full),
            (calls.start(f"put_many of 2 items (timeout={t}) on a queue with room for 1",
                         partial(roomy.put_many, [target.item(1), target.item(2)], timeout=t)),
             Full),
            (calls.start(f"join(timeout={t}) with an unfinished task",
                         partial(pending.join, timeout=t)), JoinTimeout),
        ]  # fmt: skip
        for call, kind in timed:
            call.finish(t + LATE)
            call.raised(kind, f"after {call.elapsed:.3f}s")
            assert call.elapsed >= t - EARLY, (
                f"{call.label} gave up after {call.elapsed:.3f}s, before its timeout: a timed "
                "wait must never end early"
            )
            assert call.elapsed <= t + LATE, (
                f"{call.label} gave up only after {call.elapsed:.3f}s, long after its timeout"
            )
        assert isinstance(timed[-1][0].error, TimeoutError), "JoinTimeout is not a TimeoutError"
        assert settled_qsize(roomy, 1) == 1, "a put_many that timed out left part of its batch"


@check("non-blocking-ignores-timeout", tier="blocking")
def non_blocking_ignores_timeout(target: Target) -> None:
    """With block=False a call acts at once and ignores its timeout, even a negative one."""
    after = "(with block=False the timeout must be ignored)"
    with target.queue(maxsize=1) as full, target.queue(maxsize=2) as q, Calls(full, q) as calls:
        full.put(target.item(0), timeout=WAKE)
        first, second = target.item(10), target.item(11)
        for t in (-1.0, 60.0):
            refusals: list[tuple[str, Callable[[], Any], type[BaseException]]] = [
                (f"get(block=False, timeout={t:g}) on an empty queue",
                 partial(q.get, block=False, timeout=t), Empty),
                (f"get_many(3, block=False, timeout={t:g}) on an empty queue",
                 partial(q.get_many, 3, block=False, timeout=t), Empty),
                (f"put(item, block=False, timeout={t:g}) on a full queue",
                 partial(full.put, target.item(1), block=False, timeout=t), Full),
                (f"put_many([item], block=False, timeout={t:g}) on a full queue",
                 partial(full.put_many, [target.item(1)], block=False, timeout=t), Full),
            ]  # fmt: skip
            for label, fn, kind in refusals:
                calls.run(label, fn, after=after).raised(kind, after)
            calls.run(
                f"put(item, block=False, timeout={t:g}) on an empty queue",
                partial(q.put, first, block=False, timeout=t),
                after=after,
            ).returned(after)
            calls.run(
                f"put_many([item], block=False, timeout={t:g}) on a queue with room",
                partial(q.put_many, [second], block=False, timeout=t),
                after=after,
            ).returned(after)
            settled_qsize(q, 2)
            got = calls.run(
                f"get(block=False, timeout={t:g}) on a queue with 2 items",
                partial(q.get, block=False, timeout=t),
                after=after,
            ).returned(after)
            rest = calls.run(
                f"get_many(5, block=False, timeout={t:g}) on a queue with 1 item",
                partial(q.get_many, 5, block=False, timeout=t),
                after=after,
            ).returned(after)
            assert [got, *rest] == [first, second], (
                f"non-blocking calls with a timeout got {[got, *rest]!r}, not {[first, second]!r}"
            )


@check("negative-timeout-refused", tier="blocking")
def negative_timeout_refused(target: Target) -> None:
    """A blocking call with a negative timeout is a ValueError, and changes nothing."""
    after = "(a negative timeout on a blocking call is a ValueError)"
    with target.queue(maxsize=2) as q, target.queue() as unbounded, Calls(q, unbounded) as calls:

        def refused(label: str, fn: Callable[[], Any]) -> None:
            calls.run(label, fn, after=after).raised(ValueError, after)

        for state in ("an empty", "a full"):
            refused(f"get(timeout=-1) on {state} queue", partial(q.get, timeout=-1))
            refused(f"get_many(2, timeout=-1) on {state} queue", partial(q.get_many, 2, timeout=-1))
            refused(f"put(timeout=-1) on {state} queue", partial(q.put, target.item(9), True, -1))
            refused(
                f"put_many([item], timeout=-1) on {state} queue",
                partial(q.put_many, [target.item(9)], timeout=-1),
            )
            tasks = "no tasks" if state == "an empty" else "unfinished tasks"
            refused(f"join(timeout=-1) with {tasks}", partial(q.join, timeout=-1))
            size = settled_qsize(q, 0 if state == "an empty" else 2)
            expected = 0 if state == "an empty" else 2
            assert size == expected, (
                f"calls refused for a negative timeout changed the queue: qsize {size}, "
                f"expected {expected}"
            )
            if state == "an empty":
                q.put_many([target.item(0), target.item(1)], timeout=WAKE)
        refused("put(timeout=-1) on an unbounded queue", partial(unbounded.put, target.item(9),
                                                                  True, -1))  # fmt: skip
        got = [q.get(timeout=WAKE), q.get(timeout=WAKE)]
        assert got == [target.item(0), target.item(1)], (
            f"after calls refused for a negative timeout the queue held {got!r}"
        )
        assert settled_qsize(unbounded, 0) == 0, "a put refused for its timeout enqueued its item"


@check("shutdown-wakes-blocked-getters", tier="blocking")
def shutdown_wakes_blocked_getters(target: Target) -> None:
    """Getters blocked on an empty queue wake with ShutDown when another thread shuts it down."""
    for immediate in (False, True):
        with target.queue() as q, Calls(q) as calls:
            getters = [
                calls.start("a get() blocked on an empty queue", q.get),
                calls.start("a get(timeout=60) blocked on an empty queue",
                            partial(q.get, timeout=60)),
                calls.start("a get_many(5) blocked on an empty queue", partial(q.get_many, 5)),
                calls.start("a get_many(5, timeout=60) blocked on an empty queue",
                            partial(q.get_many, 5, timeout=60)),
            ]  # fmt: skip
            still_blocked(getters, "for an item")
            event = f"shutdown(immediate={immediate})"
            q.shutdown(immediate=immediate)
            woken(getters, time.monotonic(), event, raises=ShutDown)


@check("shutdown-wakes-blocked-putters", tier="blocking")
def shutdown_wakes_blocked_putters(target: Target) -> None:
    """Putters blocked on a full queue wake with ShutDown when another thread shuts it down."""
    for immediate in (False, True):
        with target.queue(maxsize=1) as q, Calls(q) as calls:
            q.put(target.item(0), timeout=WAKE)
            putters = [
                calls.start("a put() blocked on a full queue", partial(q.put, target.item(1))),
                calls.start("a put(timeout=60) blocked on a full queue",
                            partial(q.put, target.item(2), timeout=60)),
                calls.start("a put_many([item]) blocked on a full queue",
                            partial(q.put_many, [target.item(3)])),
            ]  # fmt: skip
            still_blocked(putters, "for room")
            event = f"shutdown(immediate={immediate})"
            q.shutdown(immediate=immediate)
            woken(putters, time.monotonic(), event, raises=ShutDown)
            if not immediate:
                left = calls.run("get() of the item left by a graceful shutdown", q.get)
                assert left.returned() == target.item(0), (
                    f"after a graceful shutdown woke the putters, get() returned {left.value!r}, "
                    f"not the item that was queued ({target.item(0)!r})"
                )
            calls.run("get(block=False) on a drained shut-down queue",
                      partial(q.get, block=False)).raised(ShutDown)  # fmt: skip


@check("shutdown-and-join", tier="blocking")
def shutdown_and_join(target: Target) -> None:
    """shutdown(immediate=True) releases a blocked join() when the items it discards were the
    only unfinished tasks; a graceful shutdown does not."""
    with target.queue() as q, Calls(q) as calls:
        q.put_many([target.item(n) for n in range(3)], timeout=WAKE)
        joiners = [
            calls.start("a join() waiting for 3 queued items", q.join),
            calls.start("a join(timeout=60) waiting for 3 queued items",
                        partial(q.join, timeout=60)),
        ]  # fmt: skip
        still_blocked(joiners, "for 3 unfinished tasks")
        q.shutdown(immediate=True)
        woken(joiners, time.monotonic(), "shutdown(immediate=True) discarded every unfinished task")
    with target.queue() as q, Calls(q) as calls:
        q.put_many([target.item(n) for n in range(3)], timeout=WAKE)
        q.get(timeout=WAKE)
        joiners = [
            calls.start("a join() waiting for 1 item got and 2 queued", q.join),
            calls.start("a join(timeout=60) waiting for 1 item got and 2 queued",
                        partial(q.join, timeout=60)),
        ]  # fmt: skip
        still_blocked(joiners, "for 3 unfinished tasks")
        q.shutdown()
        still_blocked(
            joiners, "after a graceful shutdown(), which leaves the queued items unfinished"
        )
        q.shutdown(immediate=True)
        still_blocked(joiners, "for the item got before shutdown(immediate=True) and not done")
        q.task_done()
        woken(joiners, time.monotonic(), "the last task_done()")


@check("join-waits-for-every-task-done", tier="blocking")
def join_waits_for_every_task_done(target: Target) -> None:
    """join() returns only after a task_done() for every item put, however slowly they come."""
    count, pause = 4, 0.1
    with target.queue() as q, Calls(q) as calls:
        q.put_many([target.item(n) for n in range(count)], timeout=WAKE)
        done = [0]
        lock = threading.Lock()

        def joined(timeout: float | None) -> int:
            q.join(timeout=timeout)
            with lock:
                return done[0]

        joiners = [
            calls.start(f"a join() waiting for {count} tasks", partial(joined, None)),
            calls.start(f"a join(timeout=60) waiting for {count} tasks", partial(joined, 60.0)),
        ]
        still_blocked(joiners, f"for {count} unfinished tasks")

        def work() -> None:
            for _ in range(count):
                q.get(timeout=WAKE)
                time.sleep(pause)
                with lock:
                    done[0] += 1  # counted before the call: a join that waits sees them all
                q.task_done()

        worker = calls.start("a worker getting items and calling task_done()", work)
        worker.finish(count * pause + WAKE).returned()
        seen = woken(joiners, worker.ended, "the last task_done()")
        for joiner, n in zip(joiners, seen, strict=True):
            assert n == count, (
                f"{joiner.label} returned after {n} of {count} task_done() calls: join() must "
                "wait for every task, not for the queue to be empty"
            )


@check("many-producers-and-consumers", tier="blocking")
def many_producers_and_consumers(target: Target) -> None:
    """4 producers and 4 consumers on a bounded queue: nothing lost, duplicated or reordered
    within a producer, no deadlock, and join() returns after the last task_done()."""
    producers, per_producer, limit = 4, 60, 20.0
    total = producers * per_producer
    key = {target.item(p * 1000 + s): (p, s) for p in range(producers) for s in range(per_producer)}
    with target.queue(maxsize=6) as q, Calls(q) as calls:
        lock = threading.Lock()
        consumed: list[Any] = []
        stop = threading.Event()

        def produce(p: int) -> None:
            items = [target.item(p * 1000 + s) for s in range(per_producer)]
            for i in range(0, per_producer, 3):
                if p == 0:
                    q.put_many(items[i : i + 3])  # a batch must wait to fit whole
                    continue
                for item in items[i : i + 3]:
                    q.put(item, timeout=limit if p == 1 else None)

        def consume(c: int) -> list[Any]:
            mine: list[Any] = []
            while not stop.is_set():
                try:
                    got = q.get_many(4, timeout=0.05) if c % 2 else [q.get(timeout=0.05)]
                except Empty:
                    continue
                mine += got
                for _ in got:
                    q.task_done()
                with lock:
                    consumed.extend(got)
                    if len(consumed) >= total:
                        stop.set()
            return mine

        workers = [
            calls.start(
                f"producer {p} ({['put_many', 'put(timeout)', 'put'][min(p, 2)]})",
                partial(produce, p),
            )
            for p in range(producers)
        ]
        consumers = [
            calls.start(
                f"consumer {c} (a loop of {'get_many(4, ' if c % 2 else 'get('}timeout=0.05))",
                partial(consume, c),
            )
            for c in range(4)
        ]
        end = time.monotonic() + limit
        progress, last_change = -1, time.monotonic()
        while not stop.wait(0.05) and time.monotonic() < end:
            for call in workers + consumers:
                if not call.running and call.error is not None:
                    call.returned()
            with lock:
                now = len(consumed)
            if now != progress:
                progress, last_change = now, time.monotonic()
            elif not any(w.running for w in workers) and time.monotonic() - last_change > WAKE:
                break  # every producer is done and nothing more arrives
        stop.set()
        for worker in workers:
            if not worker.wait(end - time.monotonic()):
                raise AssertionError(
                    f"{worker.label} was still blocked after {limit:g}s (deadlock?)"
                )
            worker.returned()
        seen = [c.finish().returned() for c in consumers]
        with lock:
            counts = Counter(consumed)
        assert counts == Counter(list(key)), (
            f"{total} items went in, {sum(counts.values())} came out: "
            f"{len(set(key) - set(counts))} lost, "
            f"{sum(n - 1 for n in counts.values() if n > 1)} duplicated, "
            f"{len(set(counts) - set(key))} never put"
        )
        for c, mine in enumerate(seen):
            last: dict[int, int] = {}
            for item in mine:
                p, s = key[item]
                assert s > last.get(p, -1), (
                    f"consumer {c} got producer {p}'s item {s} after its item {last[p]}: "
                    "a producer's items must come out in the order it put them"
                )
                last[p] = s
        calls.run("join() after every item was got and marked done", q.join).returned()
        assert settled_qsize(q, 0) == 0, "the queue is not empty after every item was got"
