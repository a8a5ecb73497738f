"""A kill loop: producers and consumers SIGKILLed at random moments while they work.

Every item carries its producer, its sequence number and bytes derived from both, so a
consumer can tell a torn or changed item from a whole one. Every call a worker makes has a
timeout, and the worker reports any call that overran it by more than ``MARGIN``. The parent
kills a producer or a consumer every few milliseconds, starts a replacement, and at the end
lets the survivors finish and drain the queue. The :class:`Outcome` says what was seen; the
tests decide what each backend may lose or repeat.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from queuekit import Empty, Full, QueueError, ShutDown

FORK: Any = multiprocessing.get_context("fork")
CALL_TIMEOUT = 0.5
MARGIN = 1.0
"""Seconds a call may overrun its timeout on a loaded two-core machine before it counts."""
MAX_GET = 3
"""The most items one get_many takes: what a killed consumer can have in hand."""
MAX_PUT = 3
"""The most items one put_many gives: what a killed producer can have on its way."""
FINISH = 60.0


def make_item(producer: int, seq: int) -> tuple[int, int, bytes]:
    rng = random.Random(producer * 1_000_003 + seq)
    return (producer, seq, rng.randbytes(rng.randrange(0, 3000)))


def _timed(call: Any, *args: Any) -> Any:
    start = time.monotonic()
    try:
        return call(*args, timeout=CALL_TIMEOUT)
    finally:
        overran = time.monotonic() - start - CALL_TIMEOUT
        if overran > MARGIN:
            raise AssertionError(f"{call.__name__} overran its timeout by {overran:.2f}s")


def _producer(q: Any, producer: int, count: int, confirmed: Any, conn: Connection) -> None:
    rng = random.Random(producer)
    seq = 0
    try:
        while seq < count:
            upto = min(count, seq + rng.randint(1, MAX_PUT))
            batch = [make_item(producer, s) for s in range(seq, upto)]
            try:
                if len(batch) == 1:
                    _timed(q.put, batch[0])
                else:
                    _timed(q.put_many, batch)
            except (Full, Empty):
                continue
            seq += len(batch)
            confirmed[producer] = seq  # its items up to here are in the queue for sure
    except AssertionError as exc:
        conn.send(("late", str(exc)))
    except QueueError as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _consumer(q: Any, conn: Connection, consumer: int) -> None:
    rng = random.Random(consumer)
    while True:
        try:
            got = (
                _timed(q.get_many, rng.randint(1, MAX_GET))
                if rng.random() < 0.5
                else [_timed(q.get)]
            )
        except Empty:
            continue
        except ShutDown:
            return
        except AssertionError as exc:
            conn.send(("late", str(exc)))
            continue
        except QueueError as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        for item in got:
            producer, seq, _data = item
            conn.send(("got", (producer, seq, item == make_item(producer, seq))))
            q.task_done()


@dataclass
class Outcome:
    kills: dict[str, int] = field(default_factory=lambda: {"producer": 0, "consumer": 0})
    got: list[tuple[int, int]] = field(default_factory=list)
    torn: list[tuple[int, int]] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    promised: set[tuple[int, int]] = field(default_factory=set)
    left_in_queue: int = 0
    killed_producers: set[int] = field(default_factory=set)

    @property
    def missing(self) -> set[tuple[int, int]]:
        return self.promised - set(self.got)

    @property
    def duplicates(self) -> int:
        return len(self.got) - len(set(self.got))

    def unsent(self) -> dict[int, int]:
        """For each killed producer, how many of its last items were never got, after the
        last one that was: what it may have put and not yet written when it died."""
        last_got: dict[int, int] = {}
        for producer, seq in self.got:
            last_got[producer] = max(seq, last_got.get(producer, -1))
        tails = dict.fromkeys(self.killed_producers, 0)
        for producer, seq in self.missing:
            if producer in tails and seq > last_got.get(producer, -1):
                tails[producer] += 1
        return tails


def kill_loop(q: Any, kills: int, *, per_producer: int = 5000, seed: int = 20261129) -> Outcome:
    """Run 3 producers and 3 consumers on ``q``, SIGKILL ``kills`` of them (half each kind,
    each replaced at once), then let the rest finish and drain ``q``."""
    rng = random.Random(seed)
    out = Outcome()
    producers_total = kills + 3
    confirmed = FORK.Array("q", producers_total, lock=False)
    workers: list[tuple[str, Any, Connection]] = []
    producer_of: dict[int, int] = {}

    def start(kind: str, index: int) -> None:
        ours, theirs = FORK.Pipe(duplex=False)
        args = (
            (q, index, per_producer, confirmed, theirs)
            if kind == "producer"
            else (q, theirs, index)
        )
        target = _producer if kind == "producer" else _consumer
        p = FORK.Process(target=target, args=args, daemon=True)
        p.start()
        theirs.close()
        workers.append((kind, p, ours))
        if kind == "producer":
            producer_of[p.pid] = index

    def collect() -> None:
        for _, _, conn in workers:
            with contextlib.suppress(EOFError, OSError, ValueError, TypeError):
                while conn.poll():
                    what, detail = conn.recv()
                    if what == "got":
                        out.got.append(detail[:2])
                        if not detail[2]:
                            out.torn.append(detail[:2])
                    else:
                        (out.late if what == "late" else out.errors).append(detail)

    def live(kind: str) -> list[Any]:
        return [p for k, p, _ in workers if k == kind and p.is_alive()]

    next_producer = 0
    for index in range(3):
        start("producer", next_producer)
        next_producer += 1
        start("consumer", index)
    try:
        turn = 0
        give_up = time.monotonic() + FINISH
        while sum(out.kills.values()) < kills and time.monotonic() < give_up:
            time.sleep(rng.uniform(0.002, 0.03))
            collect()
            kind = ("producer", "consumer")[turn % 2]
            turn += 1
            candidates = live(kind)
            if candidates:
                victim = rng.choice(candidates).pid
                os.kill(victim, signal.SIGKILL)
                out.kills[kind] += 1
                if kind == "producer":
                    out.killed_producers.add(producer_of[victim])
            # A replacement for the one killed, or a new one where all had finished.
            if kind == "consumer":
                start("consumer", len(workers))
            elif next_producer < producers_total:
                start("producer", next_producer)
                next_producer += 1
        end = time.monotonic() + FINISH
        while live("producer") and time.monotonic() < end:
            collect()
            time.sleep(0.01)
        while q.qsize() and time.monotonic() < end:
            collect()
            time.sleep(0.01)
        out.left_in_queue = q.qsize()
        q.shutdown()
        for _, p, _ in workers:
            p.join(FINISH)
        collect()
    finally:
        for _, p, _ in workers:
            if p.is_alive():
                p.kill()
            p.join(FINISH)
    out.promised = {(p, s) for p in range(next_producer) for s in range(confirmed[p])}
    return out
