"""Tier ``core``: one thread, every call of the contract, against a model.

The focused checks come first so that a broken backend is named by the property it breaks;
the state machine then drives the backend and a ``deque`` model side by side through random
sequences of every call, and compares results and sizes after each step.
"""

from __future__ import annotations

import queue as stdlib_queue
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .._errors import Empty, Full, JoinTimeout, QueueError, ShutDown
from .._protocol import Capabilities, Queue
from ._checks import Target, call_with_watchdog, check

# A single-threaded call that the model says must not wait is still given this long before
# the check calls it hung: generous, because CI machines are slow and shared.
PATIENCE = 10.0
# Timed waits that the model says must time out use this (short: they run hundreds of times).
SHORT = 0.01


def expect_outcome(call: Callable[[], Any], expected: type[BaseException] | None, what: str) -> Any:
    """Run ``call``; it must raise ``expected`` (exactly that kind), or return when None."""
    try:
        result = call()
    except BaseException as exc:
        if expected is not None and isinstance(exc, expected):
            return None
        wanted = f"raise {expected.__name__}" if expected else "succeed"
        raise AssertionError(f"{what} should {wanted}, but raised {exc!r}") from exc
    if expected is not None:
        raise AssertionError(f"{what} should raise {expected.__name__}, but returned {result!r}")
    return result


def settle_qsize(q: Queue[Any], caps: Capabilities, expected: int) -> int:
    """``q.qsize()``; for an approximate backend, the first reading equal to ``expected``
    within a second (or the last one)."""
    size = q.qsize()
    if caps.qsize == "approximate":
        end = time.monotonic() + 1.0
        while size != expected and time.monotonic() < end:
            time.sleep(0.01)
            size = q.qsize()
    return size


def take(q: Queue[Any], count: int, what: str = "items put") -> list[Any]:
    """``count`` items that must be in ``q``; a missing one fails as lost, not as Empty."""
    got: list[Any] = []
    try:
        while len(got) < count:
            got.extend(q.get_many(count - len(got), timeout=PATIENCE))
    except Empty:
        raise AssertionError(
            f"only {len(got)} of {count} {what} came back within {PATIENCE:g}s: items were lost"
        ) from None
    return got


@check("fresh-queue-per-open", tier="core")
def fresh_queue_per_open(target: Target) -> None:
    """Every open gives a fresh, empty queue (the suite relies on it)."""
    with target.queue() as first, target.queue() as second:
        first.put(target.item(1), timeout=PATIENCE)
        size = settle_qsize(second, target.capabilities, 0)
        assert size == 0, (
            f"opening {target.description} twice gave one shared queue (qsize {size}); the suite "
            "needs a fresh queue per open: give a URL without a queue name or key"
        )
        assert first.get(timeout=PATIENCE) == target.item(1), "the item put was not got back"


@check("stdlib-exceptions", tier="core")
def stdlib_exceptions(target: Target) -> None:
    """Empty and Full are queue.Empty and queue.Full (and queuekit errors)."""
    with target.queue(maxsize=1) as q:
        cases: list[tuple[str, Callable[[], Any], type[Exception]]]
        cases = [
            ("get_nowait() on an empty queue", q.get_nowait, stdlib_queue.Empty),
            ("get(block=False) on an empty queue", lambda: q.get(block=False), stdlib_queue.Empty),
            ("get(timeout=0.01) on an empty queue", lambda: q.get(timeout=SHORT), Empty),
        ]
        for what, call, kind in cases:
            try:
                call()
            except kind as exc:
                assert isinstance(exc, QueueError), f"{what} raised {exc!r}, not a QueueError"
            else:
                raise AssertionError(f"{what} returned instead of raising {kind.__name__}")
        q.put(target.item(1), timeout=PATIENCE)
        cases = [
            ("put_nowait() on a full queue", lambda: q.put_nowait(target.item(2)), Full),
            ("put(timeout=0.01) on a full queue", lambda: q.put(target.item(2), timeout=SHORT),
             stdlib_queue.Full),
        ]  # fmt: skip
        for what, call, kind in cases:
            try:
                call()
            except kind as exc:
                assert isinstance(exc, stdlib_queue.Full), f"{what}: {exc!r} is not a queue.Full"
            else:
                raise AssertionError(f"{what} returned instead of raising Full")


@check("fifo-order", tier="core")
def fifo_order(target: Target) -> None:
    """Items put by one thread come out in the order they were put."""
    items = [target.item(n) for n in range(50)]
    with target.queue() as q:
        for item in items:
            q.put(item, timeout=PATIENCE)
        got = [take(q, 1)[0] for _ in items]
        assert got == items, f"items came out as {got[:8]}..., not in the order put {items[:8]}..."


@check("qsize-empty-full", tier="core")
def qsize_empty_full(target: Target) -> None:
    """qsize, empty and full follow the items in the queue and its maxsize."""
    caps = target.capabilities
    with target.queue(maxsize=3) as q:
        assert q.maxsize == 3, f"opened with maxsize=3, the queue says maxsize={q.maxsize}"
        for n in range(3):
            size = settle_qsize(q, caps, n)
            assert size == n, f"qsize() is {size} with {n} items in the queue"
            assert q.empty() == (n == 0), f"empty() is {q.empty()} with {n} items in the queue"
            assert not q.full(), f"full() is true with {n} of 3 items"
            q.put(target.item(n), timeout=PATIENCE)
        assert settle_qsize(q, caps, 3) == 3 and q.full(), "full() is false with 3 of 3 items"
    with target.queue() as q:
        assert q.maxsize <= 0, f"opened unbounded, the queue says maxsize={q.maxsize}"
        q.put_many([target.item(n) for n in range(10)], timeout=PATIENCE)
        assert not q.full(), "an unbounded queue says full()"


@check("maxsize-bound", tier="core")
def maxsize_bound(target: Target) -> None:
    """A bounded queue refuses an item beyond maxsize, and takes one once there is room."""
    with target.queue(maxsize=2) as q:
        q.put_nowait(target.item(1))
        q.put_nowait(target.item(2))
        expect_outcome(lambda: q.put_nowait(target.item(3)), Full, "put_nowait() at maxsize=2")
        expect_outcome(lambda: q.put(target.item(3), timeout=SHORT), Full, "put(timeout) at max")
        assert take(q, 1)[0] == target.item(1), "FIFO broken on a bounded queue"
        q.put_nowait(target.item(3))
        got = [take(q, 1)[0], take(q, 1)[0]]
        assert got == [target.item(2), target.item(3)], f"got {got} after freeing a slot"


@check("task-done-join", tier="core")
def task_done_join(target: Target) -> None:
    """join() waits for a task_done() per item put; one task_done() too many is a ValueError."""
    with target.queue() as q:
        call_with_watchdog(lambda: q.join(), PATIENCE, "join() on a queue never used")
        q.put_many([target.item(1), target.item(2)], timeout=PATIENCE)
        take(q, 1)[0]
        take(q, 1)[0]
        expect_outcome(
            lambda: q.join(timeout=SHORT), JoinTimeout, "join(timeout) with 2 open tasks"
        )
        q.task_done()
        expect_outcome(lambda: q.join(timeout=SHORT), JoinTimeout, "join(timeout) with 1 open task")
        q.task_done()
        call_with_watchdog(partial(q.join, timeout=PATIENCE), PATIENCE * 2)
        expect_outcome(q.task_done, ValueError, "task_done() beyond the items put")
        q.put(target.item(3), timeout=PATIENCE)
        expect_outcome(
            lambda: q.join(timeout=0), JoinTimeout, "join(timeout=0) with an item queued"
        )
        try:
            q.join(timeout=SHORT)
        except JoinTimeout as exc:
            assert isinstance(exc, TimeoutError), "JoinTimeout is not a TimeoutError"


@check("shutdown-semantics", tier="core")
def shutdown_semantics(target: Target) -> None:
    """After shutdown puts raise ShutDown, gets drain then raise ShutDown; immediate discards."""
    with target.queue(maxsize=2) as q:
        q.put_many([target.item(1), target.item(2)], timeout=PATIENCE)
        q.shutdown()
        expect_outcome(
            lambda: q.put_nowait(target.item(3)), ShutDown, "put on a full shut-down queue"
        )
        expect_outcome(
            lambda: q.put_many([], timeout=PATIENCE), ShutDown, "put_many([]) after shutdown"
        )
        assert take(q, 1)[0] == target.item(1), "a graceful shutdown lost queued items"
        q.shutdown(immediate=True)
        expect_outcome(q.get_nowait, ShutDown, "get_nowait() after shutdown(immediate=True)")
        assert settle_qsize(q, target.capabilities, 0) == 0, "immediate shutdown left items"
        q.task_done()  # the item got before
        call_with_watchdog(q.join, PATIENCE, "join() once immediate shutdown discounted the rest")
        for block, what in (
            (True, "get(timeout) on a drained"),
            (False, "get_nowait() on a drained"),
        ):
            expect_outcome(lambda b=block: q.get(b, SHORT), ShutDown, f"{what} shut-down queue")  # type: ignore[misc]


class _Model:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: deque[Any] = deque()
        self.unfinished = 0
        self.shutdown = False

    def room(self) -> int:
        return self.maxsize - len(self.items) if self.maxsize > 0 else 1 << 30

    def put_outcome(self, count: int) -> type[BaseException] | None:
        if self.shutdown:
            return ShutDown
        if 0 < self.maxsize < count:
            return ValueError
        return Full if self.room() < count else None

    def get_outcome(self) -> type[BaseException] | None:
        if not self.items:
            return ShutDown if self.shutdown else Empty
        return None


MODES = st.sampled_from(["nowait", "block=False", "timeout", "block"])


def _machine(target: Target) -> type[RuleBasedStateMachine]:
    caps = target.capabilities

    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.q: Queue[Any] | None = None
            self.model = _Model(0)
            self.counter = 0

        # Starting with items in the queue reaches states (3 or more queued) that a run cut
        # short by an early shutdown would otherwise rarely see.
        @initialize(maxsize=st.sampled_from([0, 1, 2, 3, 5]), prefill=st.integers(0, 4))
        def open_queue(self, maxsize: int, prefill: int) -> None:
            self.q = target.open(maxsize=maxsize)
            self.model = _Model(maxsize)
            items = self.fresh(min(prefill, maxsize or prefill))
            self.call("block=False", "put_many", items, expected=None)
            self.model.items.extend(items)
            self.model.unfinished += len(items)

        def teardown(self) -> None:
            if self.q is not None:
                problem = target.dispose(self.q)
                assert problem is None, problem

        def fresh(self, count: int) -> list[Any]:
            self.counter += count
            return [target.item(n) for n in range(self.counter - count, self.counter)]

        def call(
            self, mode: str, name: str, *args: Any, expected: type[BaseException] | None
        ) -> Any:
            q = self.q
            assert q is not None
            state = f"maxsize={self.model.maxsize}, {len(self.model.items)} queued" + (
                ", shut down" if self.model.shutdown else ""
            )
            if mode == "nowait":
                if name in ("put", "get"):
                    return expect_outcome(
                        lambda: getattr(q, f"{name}_nowait")(*args),
                        expected,
                        f"{name}_nowait() ({state})",
                    )
                mode = "block=False"
            what = f"{name}({', '.join(map(repr, args))}{', ' if args else ''}{mode}) ({state})"
            if mode == "block=False":
                return expect_outcome(lambda: getattr(q, name)(*args, block=False), expected, what)
            if mode == "timeout" or expected in (Full, Empty):
                # A plain blocking call that the model says cannot succeed would wait for good.
                return expect_outcome(
                    lambda: getattr(q, name)(*args, timeout=SHORT), expected, what
                )
            return call_with_watchdog(
                lambda: expect_outcome(lambda: getattr(q, name)(*args), expected, what),
                PATIENCE,
                what,
            )

        @rule(mode=MODES)
        def put(self, mode: str) -> None:
            (item,) = self.fresh(1)
            expected = self.model.put_outcome(1)
            self.call(mode, "put", item, expected=expected)
            if expected is None:
                self.model.items.append(item)
                self.model.unfinished += 1

        @rule(mode=MODES, count=st.integers(0, 6))
        def put_many(self, mode: str, count: int) -> None:
            items = self.fresh(count)
            expected = self.model.put_outcome(count)
            self.call(mode, "put_many", items, expected=expected)
            if expected is None:
                self.model.items.extend(items)
                self.model.unfinished += count

        @rule(mode=MODES)
        def get(self, mode: str) -> None:
            expected = self.model.get_outcome()
            got = self.call(mode, "get", expected=expected)
            if expected is None:
                want = self.model.items.popleft()
                assert got == want, f"get() returned {got!r}; the model's front item is {want!r}"
                if not caps.serializes:
                    assert got is want, "get() returned a copy from a by-reference backend"

        @rule(mode=MODES, max_items=st.integers(1, 6))
        def get_many(self, mode: str, max_items: int) -> None:
            expected = self.model.get_outcome()
            got = self.call(mode, "get_many", max_items, expected=expected)
            if expected is None:
                count = min(max_items, len(self.model.items))
                want = [self.model.items.popleft() for _ in range(count)]
                assert got == want, (
                    f"get_many({max_items}) returned {got!r}; the model holds {want!r} at the front"
                )

        @precondition(lambda self: not self.model.shutdown)
        @rule(max_items=st.integers(-2, 0))
        def get_many_invalid(self, max_items: int) -> None:
            self.call("block=False", "get_many", max_items, expected=ValueError)

        @rule()
        def task_done(self) -> None:
            q = self.q
            assert q is not None
            expected = None if self.model.unfinished > 0 else ValueError
            what = f"task_done() with {self.model.unfinished} unfinished tasks"
            expect_outcome(q.task_done, expected, what)
            if expected is None:
                self.model.unfinished -= 1

        @rule(wait=st.sampled_from([None, 0.0, SHORT]))
        def join(self, wait: float | None) -> None:
            q = self.q
            assert q is not None
            unfinished = self.model.unfinished
            if wait is None and unfinished:
                return  # would wait for good in one thread
            expected = JoinTimeout if unfinished else None
            what = f"join(timeout={wait}) with {unfinished} unfinished tasks"
            call_with_watchdog(
                lambda: expect_outcome(lambda: q.join(timeout=wait), expected, what),
                PATIENCE,
                what,
            )

        @rule(immediate=st.booleans())
        def shutdown(self, immediate: bool) -> None:
            assert self.q is not None
            self.q.shutdown(immediate=immediate)
            self.model.shutdown = True
            if immediate:
                self.model.unfinished = max(0, self.model.unfinished - len(self.model.items))
                self.model.items.clear()

        @invariant()
        def sizes_agree(self) -> None:
            q = self.q
            if q is None:
                return
            count = len(self.model.items)
            size = settle_qsize(q, caps, count)
            assert size == count, f"qsize() is {size}; the model holds {count} items"
            assert q.empty() == (count == 0), f"empty() is {q.empty()} with {count} items"
            full = 0 < self.model.maxsize <= count
            assert q.full() == full, f"full() is {q.full()} with {count} of {self.model.maxsize}"
            assert q.maxsize == self.model.maxsize, (
                f"maxsize is {q.maxsize}; the queue was opened with {self.model.maxsize}"
            )

    return QueueMachine


@check("model-state-machine", tier="core")
def model_state_machine(target: Target) -> None:
    """Random sequences of every call agree with a deque model, step by step."""
    target.item(0)  # decide the item type before Hypothesis starts timing examples
    run_state_machine_as_test(_machine(target), settings=Settings(target.settings))
