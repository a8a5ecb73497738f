"""Issue 3's failure story, told as tests.

A producer process that puts more than a pipe holds, into a queue nobody reads yet, cannot be
joined on ``multiprocessing``'s transport: its put calls returned, but its feeder thread still
holds the rest and the process waits for it at exit. On ``pipe://`` a put has written its item
into the kernel when it returns, or raised ``PipeFull``; so the producer learns the pipe is full,
and its process exits at once.

Children are forked, and each is started before the parent's first put (forking a process with
threads is unsafe); they run module-level functions.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import queue
import random
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

import pytest

import queuekit

pipe_backend: ModuleType = importlib.import_module("queuekit.backends.pipe")
needs_pipe = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe:// is Linux's")
pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)

CTX: Any = multiprocessing.get_context("fork")  # BaseContext does not declare Process
LONG = 20.0
"""Seconds after which a child or a call is taken to hang (the machine is shared and slow)."""

HANG = 3.0
"""Seconds a join waits to show a producer that cannot exit."""

ITEM = 64 * 1024
ITEMS = 16
"""1 MiB in all: far more than the 64 KiB a default pipe holds."""


def item(i: int) -> bytes:
    return bytes([i]) * ITEM


@contextlib.contextmanager
def reaped(processes: list[Any]) -> Iterator[None]:
    """Whatever happens in the block, no process of ``processes`` is left running after it."""
    try:
        yield
    finally:
        for p in processes:
            if p.pid is not None and p.is_alive():
                p.kill()
        for p in processes:
            if p.pid is not None:
                p.join(LONG)
        assert not [p for p in processes if p.is_alive()], "a child process survived kill()"


# --- Children -------------------------------------------------------------------------------


def _fill(q: Any, returned: Any) -> None:
    for i in range(ITEMS):
        q.put(item(i))
    returned.set()
    # Exiting now waits for this process's feeder thread, which waits for room in the pipe.


def _fill_until_full(q: Any, block: bool, report: Connection) -> None:
    accepted = 0
    try:
        for i in range(ITEMS):
            if block:
                q.put(item(i), timeout=0.3)
            else:
                q.put(item(i), block=False)
            accepted += 1
    except queue.Full as exc:  # PipeFull is a queue.Full: code written for the stdlib catches it
        report.send((accepted, isinstance(exc, pipe_backend.PipeFull), str(exc)))
    else:
        report.send((accepted, False, "every put succeeded"))
    report.close()


# --- The hang, and the fix ------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["mp://", "multiprocessing.JoinableQueue"])
def test_a_producer_that_overfills_an_unread_pipe_cannot_be_joined_on_the_stdlib_transport(
    transport: str,
) -> None:
    q: Any = CTX.JoinableQueue() if transport.startswith("multi") else queuekit.open(transport)
    returned = CTX.Event()
    child = CTX.Process(target=_fill, args=(q, returned), daemon=True)
    with reaped([child]):
        child.start()
        assert returned.wait(LONG), f"the child had not finished its puts after {LONG}s"
        child.join(timeout=HANG)
        assert child.is_alive(), (
            "the producer exited although nobody read its 1 MiB: the stdlib transport no longer "
            "holds unsent items in a feeder thread, and this story needs retelling"
        )
        # Draining the queue is what lets it go: its feeder can then write the rest.
        got = [q.get(timeout=LONG) for _ in range(ITEMS)]
        child.join(LONG)
        assert not child.is_alive(), "the producer still could not exit once its queue was drained"
        assert child.exitcode == 0
    assert got == [item(i) for i in range(ITEMS)]
    for _ in got:
        q.task_done()
    q.join()
    q.close()
    if transport.startswith("multi"):
        q.join_thread()


@needs_pipe
@pytest.mark.parametrize("block", [False, True], ids=["block=False", "timeout=0.3"])
def test_on_pipe_the_producer_gets_pipe_full_returns_and_is_joined(block: bool) -> None:
    q = queuekit.open("pipe://?capacity=1MiB")
    capacity = q.info()["capacity"]  # type: ignore[attr-defined]
    receive, report = CTX.Pipe(duplex=False)
    child = CTX.Process(target=_fill_until_full, args=(q, block, report), daemon=True)
    with reaped([child]):
        child.start()
        report.close()
        child.join(timeout=10)
        assert not child.is_alive(), "the pipe:// producer could not be joined within 10s"
        assert child.exitcode == 0
    accepted, was_pipe_full, message = receive.recv()
    receive.close()
    assert was_pipe_full, f"expected PipeFull once the pipe was full, got: {message}"
    assert 0 < accepted < ITEMS, f"{accepted} of {ITEMS} 64 KiB items went into a 1 MiB pipe"
    assert str(capacity) in message, f"PipeFull should give the pipe's capacity: {message}"
    for remedy in ("drain", "capacity=", "shm://"):
        assert remedy in message, f"PipeFull should say what to do ({remedy!r}): {message}"
    # What was accepted is in the kernel, whole, though its producer has gone.
    assert q.qsize() == accepted
    assert [q.get(timeout=LONG) for _ in range(accepted)] == [item(i) for i in range(accepted)]
    with pytest.raises(queuekit.Empty):
        q.get_nowait()
    q.close()


# --- A three-stage pipeline -----------------------------------------------------------------

GROUP = 2
"""Processes in each group: producers, A->B workers, B->C workers."""

PER_PRODUCER = 50
SIZES = (100, 256 * 1024)
SEED = 3
PATIENCE = 0.2
"""Seconds one put waits for room before it raises Full and its caller counts and retries."""


def payload_of(n: int) -> bytes:
    """Item ``n``'s payload: seeded random bytes of a seeded size in ``SIZES``, both ends
    included."""
    rng = random.Random(SEED * 1_000_003 + n)
    size = SIZES[n] if n < len(SIZES) else rng.randint(*SIZES)
    return rng.randbytes(size)


def _put_patiently(q: Any, value: Any, full: Any) -> None:
    end = time.monotonic() + LONG
    while True:
        try:
            q.put(value, timeout=PATIENCE)
            return
        except queue.Full:
            with full.get_lock():
                full.value += 1
            if time.monotonic() > end:
                raise


def _produce(a: Any, numbers: range, full: Any) -> None:
    for n in numbers:
        _put_patiently(a, (n, payload_of(n)), full)
    a.close()


def _checksum(value: tuple[int, bytes]) -> tuple[int, bytes, int]:
    n, data = value
    return n, data, zlib.crc32(data)


def _verify(value: tuple[int, bytes, int]) -> tuple[int, bytes, bool]:
    n, data, crc = value
    return n, data, zlib.crc32(data) == crc


def _stage(src: Any, dst: Any, work: Callable[[Any], Any], go: Any, full: Any) -> None:
    go.wait(LONG)
    while True:
        try:
            value = src.get(timeout=LONG)
        except queuekit.ShutDown:
            break
        _put_patiently(dst, work(value), full)
        src.task_done()
    src.close()
    dst.close()


@pytest.mark.parametrize("url", [pytest.param("pipe://?capacity=1MiB", marks=needs_pipe), "mp://"])
def test_three_stage_pipeline_with_producers_joined_before_the_next_stage_drains(
    url: str,
) -> None:
    """Producers -> A -> checksum workers -> B -> verify workers -> C -> the parent.

    The pattern: the parent joins each group of processes as soon as it is done, before the
    queue it fed has been drained, and only then waits for that queue (``join``) and shuts it
    down, which ends the next group. No transport lets a producer finish before anyone reads
    when its output exceeds the pipe, so the stages run together; what differs is how a full
    pipe shows. Every put waits at most ``PATIENCE`` seconds and retries on ``Full``: on
    ``pipe://`` that is ``PipeFull`` from the kernel pipe, which a 1 MiB pipe gives after two
    of the largest items. The first stage of workers waits until a producer has met a full
    pipe, so that path is certain to be taken; ``mp://`` has no such signal (its puts return at
    once and its feeder threads hold the rest), so there the workers start at once.

    Passes when every item arrives exactly once and whole, every process exits by itself with
    status 0, and every queue's ``join`` completes.
    """
    a, b, c = (queuekit.open(url) for _ in range(3))
    full, go = CTX.Value("q", 0), CTX.Event()
    total = GROUP * PER_PRODUCER
    producers = [
        CTX.Process(target=_produce, args=(a, range(i, total, GROUP), full), daemon=True)
        for i in range(GROUP)
    ]
    checksummers = [
        CTX.Process(target=_stage, args=(a, b, _checksum, go, full), daemon=True)
        for _ in range(GROUP)
    ]
    verifiers = [
        CTX.Process(target=_stage, args=(b, c, _verify, go, full), daemon=True)
        for _ in range(GROUP)
    ]
    delivered: Counter[int] = Counter()
    damaged: list[int] = []
    collector_failed: list[BaseException] = []

    def collect() -> None:
        try:
            while True:
                try:
                    n, data, intact = c.get(timeout=LONG)
                except queuekit.ShutDown:
                    return
                delivered[n] += 1
                if not intact or data != payload_of(n):
                    damaged.append(n)
                c.task_done()
        except BaseException as exc:
            collector_failed.append(exc)

    def joined(group: list[Any], what: str) -> None:
        end = time.monotonic() + LONG
        for p in group:
            p.join(max(0.0, end - time.monotonic()))
        stuck = sum(p.is_alive() for p in group)
        assert not stuck, f"{stuck} {what} could not be joined within {LONG}s ({url})"
        assert [p.exitcode for p in group] == [0] * len(group), f"{what} failed ({url})"

    with reaped(producers + checksummers + verifiers):
        for p in verifiers + checksummers + producers:  # readers first
            p.start()
        collector = threading.Thread(target=collect, daemon=True)  # only now: fork before threads
        collector.start()
        if url.startswith("pipe"):
            end = time.monotonic() + LONG
            while not full.value and time.monotonic() < end:
                time.sleep(0.01)
            assert full.value, f"no producer met a full pipe in {LONG}s with nobody reading"
        go.set()
        joined(producers, "producers")
        for q, group, what in ((a, checksummers, "A->B workers"), (b, verifiers, "B->C workers")):
            q.join(timeout=LONG)
            q.shutdown()
            joined(group, what)
        c.join(timeout=LONG)
        c.shutdown()
        collector.join(LONG)
        assert not collector.is_alive(), "the parent's collector did not stop at ShutDown"
    if collector_failed:
        raise collector_failed[0]
    assert sorted(delivered) == list(range(total)), "items were lost"
    assert set(delivered.values()) == {1}, "items were delivered more than once"
    assert not damaged, f"items arrived damaged: {damaged}"
    for q in (a, b, c):
        assert q.qsize() == 0
        q.close()
