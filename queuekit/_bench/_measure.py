"""The measurements, each one run of a scenario on a target, in the run's own process.

Clocks: ``time.monotonic()`` is one clock for the whole system on Linux, so a producer's
reading and a consumer's compare. Windows run from the first put to the last get; starting
processes and building items are outside them. Every item is checked after it arrives: a lost,
repeated, reordered or damaged item fails the run.
"""

from __future__ import annotations

import functools
import queue
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import ShutDown
from ._harness import Crew, Figures, Unmeasured
from ._targets import Target

MiB = 1024 * 1024
PAD = b"x" * 32
STOP = "stop"


def small(i: int) -> tuple[str, int, bytes]:
    """The usual small item: 58 bytes pickled."""
    return ("job", i, PAD)


@functools.cache
def _pool(size: int) -> tuple[bytes, ...]:
    return tuple(bytes([k]) * size for k in range(16))


@dataclass(frozen=True)
class Items:
    """Small tuples (``size`` 0), or ``bytes`` of ``size``: 16 distinct ones in turn, so a
    million large items need not all be held, and one out of turn is still caught."""

    size: int = 0

    def make(self, i: int) -> Any:
        return small(i) if not self.size else _pool(self.size)[i % 16]

    def check(self, i: int, item: Any) -> bool:
        return bool(item == self.make(i))


# --- One producer -> one consumer -------------------------------------------------------------


def _produce(target: Target, q: Any, n: int, batch: int, items: Items) -> float:
    ops = target.ops(q)
    made = [items.make(i) for i in range(n)]
    if batch > 1 and ops.put_many:
        put_many = ops.put_many
        chunks = [made[i : i + batch] for i in range(0, n, batch)]
        start = time.monotonic()
        for chunk in chunks:
            put_many(chunk)
    else:
        put = ops.put
        start = time.monotonic()
        for item in made:
            put(item)
    return start


def _consume(target: Target, q: Any, n: int, batch: int, items: Items, ready: Any) -> float:
    ops = target.ops(q)
    check = items.check
    wrong = -1
    ready.wait()
    if batch > 1 and ops.get_many:
        get_many, got = ops.get_many, 0
        while got < n:
            for item in get_many(min(batch, n - got)):
                if wrong < 0 and not check(got, item):
                    wrong = got
                got += 1
    else:
        get = ops.get
        for i in range(n):
            # Held until the next get returns, as by a consumer's loop variable: an item freed
            # before the next get makes malloc return 1 MiB items to the kernel and fault them
            # in again, which cost shm:// three quarters of its 1 MiB throughput here.
            item = get()
            if not check(i, item) and wrong < 0:
                wrong = i
    end = time.monotonic()
    if wrong >= 0:
        raise RuntimeError(f"item {wrong} arrived wrong (lost, repeated, reordered or damaged)")
    return end


def stream(target: Target, n: int, batch: int = 1, size: int = 0) -> Figures:
    """1 producer -> 1 consumer; ``batch`` items per put_many/get_many (1: put/get; queues
    without batch calls use single calls); ``size`` 0 for small tuples, else bytes of it."""
    q, crew, items = target.open(), Crew(target.threads), Items(size)
    ready = crew.barrier(2)
    crew.start("consumer", _consume, target, q, n, batch, items, ready)
    ready.wait()  # the consumer is about to block in its first get
    crew.start("producer", _produce, target, q, n, batch, items)
    [end] = crew.join("consumer")
    [start] = crew.join("producer")
    seconds = end - start
    if size:
        return {"MiB/s": n * size / MiB / seconds}
    return {"msg/s": n / seconds}


# --- Several producers and consumers -----------------------------------------------------------


def _many_produce(target: Target, q: Any, p: int, count: int, go: Any) -> float:
    put = target.ops(q).put
    made = [(p, i, PAD) for i in range(count)]
    go.wait()
    start = time.monotonic()
    for item in made:
        put(item)
    put(STOP)
    return start


def _many_consume(target: Target, q: Any, ready: Any) -> tuple[float, int, int]:
    get = target.ops(q).get
    last: dict[int, int] = {}
    got = total = 0
    ready.wait()
    while True:
        item = get()
        if item == STOP:
            break
        p, i, _ = item
        if i <= last.get(p, -1):
            raise RuntimeError(f"producer {p}'s item {i} came after its item {last[p]}")
        last[p] = i
        got, total = got + 1, total + i
    return time.monotonic(), got, total


def many(target: Target, n: int, pairs: int = 4) -> Figures:
    """``pairs`` producers x as many consumers, ``n`` items in all. Each producer puts a stop
    marker after its items; each consumer stops at the first it gets."""
    q, crew = target.open(), Crew(target.threads)
    count = n // pairs
    ready, go = crew.barrier(pairs + 1), crew.barrier(pairs + 1)
    for _ in range(pairs):
        crew.start("consumer", _many_consume, target, q, ready)
    for p in range(pairs):
        crew.start("producer", _many_produce, target, q, p, count, go)
    ready.wait()
    go.wait()
    ends = crew.join("consumer")
    starts = crew.join("producer")
    got = sum(e[1] for e in ends)
    if got != count * pairs or sum(e[2] for e in ends) != pairs * count * (count - 1) // 2:
        raise RuntimeError(f"{got} items arrived, not {count * pairs} distinct ones")
    return {"msg/s": got / (max(e[0] for e in ends) - min(starts))}


# --- Latency ------------------------------------------------------------------------------------


def _wake(target: Target, q: Any, n: int, taken: Any) -> None:
    put = target.ops(q).put
    for _ in range(n):
        time.sleep(0.001)  # the getter is asleep in get by now
        put(time.monotonic())
        taken.get()


def latency(target: Target, n: int) -> Figures:
    """From just before a put to the return of a get that was blocked waiting for it, in
    another process (thread, for in-process queues): p50 and p99 of ``n``."""
    q, crew = target.open(), Crew(target.threads)
    taken = crew.channel()
    crew.start("waker", _wake, target, q, n, taken)
    get = target.ops(q).get
    seen = []
    for _ in range(n):
        sent = get()
        seen.append(time.monotonic() - sent)
        taken.put(None)
    crew.join("waker")
    seen.sort()
    return {"p50 us": seen[len(seen) // 2] * 1e6, "p99 us": seen[int(len(seen) * 0.99)] * 1e6}


# --- Depth -------------------------------------------------------------------------------------


def depth(target: Target, items: int, window: int) -> Figures:
    """Fill to ``items`` (not timed), then time ``window`` get+put pairs at that depth, in one
    process: the cost of an item must not grow with the queue."""
    ops = target.ops(target.open())
    for first in range(0, items, 1000):
        try:
            ops.offer([small(i) for i in range(first, min(items, first + 1000))], 0.5)
        except queue.Full:
            raise Unmeasured(f"full after {first:,} items") from None
    get, put = ops.get, ops.put
    start = time.monotonic()
    for i in range(window):
        if get() != small(i):
            raise RuntimeError(f"item {i} came out wrong at depth {items:,}")
        put(small(items + i))
    return {"us/item": (time.monotonic() - start) / window * 1e6}


# --- Idle ---------------------------------------------------------------------------------------


def _idle_get(target: Target, q: Any, ready: Any) -> float:
    get = target.ops(q).get
    if get() != small(0):
        raise RuntimeError("the first item came out wrong")
    ready.wait()
    cpu, wall = time.process_time(), time.monotonic()
    last = get()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    if last != STOP:
        raise RuntimeError(f"got {last!r} from a queue that was empty")
    return cpu / wall * 100


def idle(target: Target, seconds: float) -> Figures:
    """The CPU used by a process (thread) while its get waits ``seconds`` on an empty queue,
    in % of a core: process time over wall time, every thread of the process counted. One item
    passes first, so connecting and other first-call work fall outside; the wake-up by the
    last put falls inside."""
    q, crew = target.open(), Crew(target.threads)
    ready = crew.barrier(2)
    put = target.ops(q).put
    crew.start("getter", _idle_get, target, q, ready)
    put(small(0))
    ready.wait()
    time.sleep(seconds)
    put(STOP)
    [share] = crew.join("getter")
    return {"% of a core": share}


# --- The pipeline ------------------------------------------------------------------------------

GROUP = 2
PAYLOAD = 256


def _payload(n: int) -> bytes:
    return bytes([n % 256]) * PAYLOAD


def _source(target: Target, a: Any, numbers: range) -> None:
    put = target.ops(a).put
    for n in numbers:
        put((n, _payload(n)))


def _checksum(item: tuple[int, bytes]) -> tuple[int, bytes, int]:
    return (*item, zlib.crc32(item[1]))


def _verify(item: tuple[int, bytes, int]) -> tuple[int, bytes, bool]:
    n, data, crc = item
    return n, data, zlib.crc32(data) == crc


def _stage(target: Target, src: Any, dst: Any, work: Callable[[Any], Any]) -> None:
    take, give = target.ops(src), target.ops(dst)
    assert take.task_done is not None
    while True:
        try:
            item = take.get()
        except ShutDown:
            return
        if item is None:  # the stdlib's queues are stopped by one sentinel per reader
            take.task_done()
            return
        give.put(work(item))
        take.task_done()


def pipeline(target: Target, n: int) -> Figures:
    """Producers -> A -> checksum workers -> B -> verify workers -> C, two processes (threads)
    in each group. The parent joins each group as soon as its input is done, before anyone
    drains the queue it feeds; it drains C last. On a transport whose processes cannot exit
    while their output is unread (a feeder thread holding it), this hangs."""
    a, b, c = (target.open() for _ in range(3))
    crew = Crew(target.threads)
    finish_a, finish_b = target.ops(a).finish, target.ops(b).finish
    assert finish_a is not None
    assert finish_b is not None
    for _ in range(GROUP):  # readers first
        crew.start("verifier", _stage, target, b, c, _verify)
        crew.start("checksummer", _stage, target, a, b, _checksum)
    start = time.monotonic()
    for i in range(GROUP):
        crew.start("producer", _source, target, a, range(i, n, GROUP))
    crew.join("producer")
    finish_a(GROUP)
    crew.join("checksummer")
    finish_b(GROUP)
    crew.join("verifier")
    get = target.ops(c).get
    seen = set()
    for _ in range(n):
        k, data, intact = get()
        if not intact or data != _payload(k) or k in seen:
            raise RuntimeError(f"item {k} arrived damaged or twice")
        seen.add(k)
    return {"msg/s": n / (time.monotonic() - start)}
