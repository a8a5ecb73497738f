"""Tier ``blocking``, continued: the global order a backend declaring ``ordering="fifo"``
promises, beyond each producer's own order (which every backend keeps, and ``fifo-order`` and
``many-producers-and-consumers`` check).

"One global order" is checked as callers can see it: of two puts, the one that returned before
the other began comes out first, whichever threads made them.
"""

from __future__ import annotations

import queue as stdlib_queue
import random
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from .._errors import Empty
from .._protocol import Queue
from ._blocking import WAKE, Call, Calls
from ._checks import NotApplicable, Target, check

Stamp = tuple[int, float, float]
"""Of an item: the producer that put it, when its put began and when it returned."""


def _needs_global_fifo(target: Target) -> None:
    ordering = target.capabilities.ordering
    if ordering != "fifo":
        raise NotApplicable(
            f"the backend declares ordering={ordering!r}: only each producer's own order, "
            "which fifo-order and many-producers-and-consumers check"
        )


def _take(q: Queue[Any], count: int, what: str) -> list[Any]:
    got: list[Any] = []
    try:
        while len(got) < count:
            got += q.get_many(count - len(got), timeout=WAKE)
    except Empty:
        raise AssertionError(
            f"only {len(got)} of {count} {what} came back within {WAKE:g}s: items were lost"
        ) from None
    return got


def _first_wrong(got: list[Any], stamps: dict[Any, Stamp]) -> tuple[Any, Any] | None:
    """Two items ``(a, b)`` such that ``a`` came out after ``b`` although ``a``'s put returned
    before ``b``'s began; None when the order is consistent with the time of the puts."""
    earliest: tuple[float, Any] | None = None  # the first-returned put among those got later
    for item in reversed(got):
        _, began, returned = stamps[item]
        if earliest is not None and earliest[0] < began:
            return earliest[1], item
        if earliest is None or returned < earliest[0]:
            earliest = (returned, item)
    return None


def _describe(a: Any, b: Any, stamps: dict[Any, Stamp], how: str) -> str:
    (pa, _, returned), (pb, began, _) = stamps[a], stamps[b]
    return (
        f"{a!r} (put by producer thread {pa}) came out after {b!r} (put by producer thread "
        f"{pb}), although its put returned {1000 * (began - returned):.2f} ms before that one "
        f"began ({how}): with ordering='fifo' items come out in the one order they went in"
    )


@check("fifo-across-threads", tier="blocking")
def fifo_across_threads(target: Target) -> None:
    """With ordering="fifo", items put in turn by several threads (each put or put_many
    returning before the next begins) come out in exactly that order."""
    _needs_global_fifo(target)
    threads, steps = 3, 60
    rng = random.Random(20)  # the same plan on every run
    plan = [(rng.randrange(threads), rng.choice((1, 1, 1, 2, 3))) for _ in range(steps)]
    with target.queue() as q, Calls(q) as calls:
        inboxes: list[stdlib_queue.Queue[list[Any] | None]] = [
            stdlib_queue.Queue() for _ in range(threads)
        ]
        finished: stdlib_queue.Queue[int] = stdlib_queue.Queue()

        def produce(t: int) -> None:
            while (batch := inboxes[t].get(timeout=10 * WAKE)) is not None:
                if len(batch) == 1:
                    q.put(batch[0], timeout=WAKE)
                else:
                    q.put_many(batch, timeout=WAKE)
                finished.put(t)

        producers = [
            calls.start(f"producer thread {t} (puts when its turn comes)", partial(produce, t))
            for t in range(threads)
        ]
        order: list[Any] = []
        who: dict[Any, int] = {}
        for t, size in plan:
            batch = [target.item(len(order) + k) for k in range(size)]
            inboxes[t].put(batch)
            try:
                finished.get(timeout=WAKE)
            except stdlib_queue.Empty:
                for producer in producers:
                    if not producer.running:
                        producer.returned()
                raise AssertionError(
                    f"producer thread {t} did not finish a put of {size} within {WAKE:g}s"
                ) from None
            order += batch
            who.update(dict.fromkeys(batch, t))
        for inbox in inboxes:
            inbox.put(None)
        for producer in producers:
            producer.finish().returned()
        got = _take(q, len(order), "items put in turn by threads")
        if got != order:
            i = next(i for i, (a, b) in enumerate(zip(got, order, strict=True)) if a != b)
            raise AssertionError(
                f"items put in turn by {threads} threads came out as {got[i : i + 4]!r}... at "
                f"position {i}, where {order[i]!r} (put by thread {who[order[i]]}) was next; "
                f"{got[i]!r} (thread {who.get(got[i], '?')}) was put after it: with "
                "ordering='fifo' items come out in the one order they went in"
            )


def _produce_stamped(
    q: Queue[Any], items: list[Any], p: int, go: threading.Event, stamps: dict[Any, Stamp]
) -> None:
    if not go.wait(WAKE):
        raise AssertionError("the producers were never told to start")
    step = 2 if p == 0 else 1  # producer 0 puts pairs with put_many
    for i in range(0, len(items), step):
        batch = items[i : i + step]
        began = time.monotonic()
        if step == 1:
            q.put(batch[0], timeout=WAKE)
        else:
            q.put_many(batch, timeout=WAKE)
        returned = time.monotonic()
        stamps.update(dict.fromkeys(batch, (p, began, returned)))


@check("fifo-across-concurrent-producers", tier="blocking")
def fifo_across_concurrent_producers(target: Target) -> None:
    """With ordering="fifo", items that threads put at the same time come out in an order
    consistent with time: one whose put returned before another's began comes out first
    (drained afterwards, and got by a consumer thread meanwhile)."""
    _needs_global_fifo(target)
    producers, per_producer = 4, 50
    total = producers * per_producer
    with target.queue() as q, Calls(q) as calls:
        for phase, meanwhile in enumerate((False, True)):
            how = "got by a consumer thread meanwhile" if meanwhile else "drained afterwards"
            stamps: dict[Any, Stamp] = {}
            go = threading.Event()
            base = phase * 10_000
            workers = [
                calls.start(
                    f"producer thread {p} ({'put_many of 2' if p == 0 else 'put'}, stamped)",
                    partial(
                        _produce_stamped,
                        q,
                        [target.item(base + p * 1000 + s) for s in range(per_producer)],
                        p,
                        go,
                        stamps,
                    ),
                )
                for p in range(producers)
            ]
            consumer: Call | None = None
            if meanwhile:
                take: Callable[[], list[Any]] = partial(_take, q, total, "items put at once")
                consumer = calls.start("a consumer thread getting every item", take)
            go.set()
            for worker in workers:
                worker.finish(10 * WAKE, "(putting 50 items)").returned()
            if consumer is None:
                got = _take(q, total, "items put at once")
            else:
                got = consumer.finish(10 * WAKE, "(getting every item)").returned()
            wrong = _first_wrong(got, stamps)
            if wrong is not None:
                raise AssertionError(_describe(*wrong, stamps, how))
