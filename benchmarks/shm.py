"""shm:// side by side with multiprocessing.Queue (and faster-fifo when it is importable).

    python benchmarks/shm.py [--quick] [--repeat N] [--markdown FILE]

Scenarios, each repeated and interleaved across the backends like benchmarks/throughput.py
(whose 1 producer -> 1 consumer measurement is reused here, unchanged):

* 1 producer -> 1 consumer process, small pickled items: put/get, and batches of 100;
* 4 producer processes x 4 consumer processes, put/get; and where its time goes: CPU time
  (user, system), minor page faults and context switches per item, summed over the eight
  processes (getrusage around each one's loop);
* 1 MiB items (bytes), 1 producer -> 1 consumer: bytes per second;
* wake-up latency: a get blocked in one process, a put in another; from just before the put
  to the get's return (p50, p99);
* the CPU time a get blocked on an idle queue uses, over one second;
* in one process, the cost of one put and of one get (no waiting, no other process).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import throughput  # the sibling script: its measurement and helpers
from throughput import CTX, WATCHDOG, Backend, Scenario

import queuekit

MiB = 1024 * 1024


def backends(capacity: str = "16MiB", fifo_bytes: int = 1_000_000) -> list[Backend]:
    found = [
        throughput.BASELINE,
        throughput._queuekit(f"shm://?capacity={capacity}"),
        throughput._queuekit(f"shm://?capacity={capacity}&checksum=true"),
    ]
    try:
        import faster_fifo  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        found.append(
            Backend(
                f"faster-fifo ({fifo_bytes / 1e6:g} MB buffer)",
                functools.partial(faster_fifo.Queue, max_size_bytes=fifo_bytes),
                throughput._faster_fifo_ops,
                lambda q: q.close(),
            )
        )
    return found


# --- Several producers and consumers ---------------------------------------------------------

STOP = "stop"


def _producer(backend: Backend, q: Any, items: int, go: Any, out: Connection) -> None:
    put = backend.ops(q)[0]
    batch = [throughput.make_item(i) for i in range(items)]
    go.wait()
    start = time.monotonic()
    for item in batch:
        put(item)
    put(STOP)
    out.send(start)
    out.close()


def _consumer(backend: Backend, q: Any, ready: Any, out: Connection) -> None:
    get = backend.ops(q)[1]
    got = 0
    ready.wait()
    while True:
        item = get()
        if item == STOP:
            break
        got += 1
    out.send((time.monotonic(), got))
    out.close()


def measure_many(backend: Backend, pairs: int, n: int) -> float:
    """Messages per second from ``pairs`` producers to as many consumers, ``n`` in all. Each
    producer puts a stop marker after its items, and each consumer stops at its first marker:
    all the markers come out after all the items (each after its own producer's)."""
    q = backend.open()
    ready = CTX.Barrier(pairs + 1)
    go = CTX.Barrier(pairs + 1)
    children, results = [], []
    try:
        for role in ("consumer", "producer"):
            for _ in range(pairs):
                theirs, ours = CTX.Pipe(duplex=False)
                if role == "consumer":
                    p = CTX.Process(target=_consumer, args=(backend, q, ready, ours))
                else:
                    p = CTX.Process(target=_producer, args=(backend, q, n // pairs, go, ours))
                p.start()
                ours.close()
                children.append(p)
                results.append((role, theirs))
        ready.wait(WATCHDOG)
        go.wait(WATCHDOG)
        starts: list[float] = []
        ends: list[float] = []
        got = 0
        for role, conn in results:
            if not conn.poll(WATCHDOG):
                raise RuntimeError(f"{backend.name}: a {role} did not report")
            value = conn.recv()
            if role == "producer":
                starts.append(value)
            else:
                ends.append(value[0])
                got += value[1]
        if got != n // pairs * pairs:
            raise RuntimeError(f"{backend.name}: {got} items got, not {n // pairs * pairs}")
        return got / (max(ends) - min(starts))
    finally:
        for p in children:
            p.join(WATCHDOG)
            if p.is_alive():
                p.kill()
        for _, conn in results:
            conn.close()
        backend.close(q)


_USAGE = ("ru_utime", "ru_stime", "ru_minflt", "ru_nvcsw", "ru_nivcsw")


def _usage() -> list[float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: mp.Queue's feeder too
    return [float(getattr(usage, field)) for field in _USAGE]


def _costed(role: str, backend: Backend, q: Any, items: int, go: Any, out: Connection) -> None:
    put, get = backend.ops(q)[:2]
    batch = [throughput.make_item(i) for i in range(items)]
    go.wait()
    before = _usage()
    if role == "producer":
        for item in batch:
            put(item)
        put(STOP)
    else:
        while get() != STOP:
            pass
    out.send([after - was for after, was in zip(_usage(), before, strict=True)])
    out.close()


def costs_many(backend: Backend, pairs: int, n: int) -> dict[str, float]:
    """Where the time of ``pairs`` producers x as many consumers goes, per item: CPU
    microseconds (user, system), minor page faults, voluntary and involuntary context
    switches, summed over the processes."""
    q = backend.open()
    go = CTX.Barrier(2 * pairs)
    children, conns = [], []
    try:
        for role in ("consumer", "producer"):
            for _ in range(pairs):
                theirs, ours = CTX.Pipe(duplex=False)
                args = (role, backend, q, n // pairs, go, ours)
                p = CTX.Process(target=_costed, args=args)
                p.start()
                ours.close()
                children.append(p)
                conns.append(theirs)
        totals = [0.0] * len(_USAGE)
        for conn in conns:
            if not conn.poll(WATCHDOG):
                raise RuntimeError(f"{backend.name}: a process did not report")
            totals = [t + v for t, v in zip(totals, conn.recv(), strict=True)]
        items = n // pairs * pairs
        user, system, faults, voluntary, involuntary = (t / items for t in totals)
        return {
            "user us": user * 1e6,
            "sys us": system * 1e6,
            "faults": faults,
            "vol cs": voluntary,
            "invol cs": involuntary,
        }
    finally:
        for p in children:
            p.join(WATCHDOG)
            if p.is_alive():
                p.kill()
        for conn in conns:
            conn.close()
        backend.close(q)


# --- Large items -----------------------------------------------------------------------------


def _big_producer(backend: Backend, q: Any, n: int, size: int, out: Connection) -> None:
    put = backend.ops(q)[0]
    items = [bytes([i % 256]) * size for i in range(n)]
    start = time.monotonic()
    for item in items:
        put(item)
    out.send(start)
    out.close()


def _big_consumer(backend: Backend, q: Any, n: int, size: int, out: Connection) -> None:
    get = backend.ops(q)[1]
    out.send("ready")
    wrong = 0
    for i in range(n):
        item = get()
        wrong += len(item) != size or item[-1] != i % 256
    out.send((time.monotonic(), wrong))
    out.close()


def measure_large(backend: Backend, n: int, size: int = MiB) -> float:
    """Bytes per second, one producer -> one consumer, items of ``size`` bytes."""
    q = backend.open()
    from_c, to_c = CTX.Pipe(duplex=False)
    from_p, to_p = CTX.Pipe(duplex=False)
    consumer = CTX.Process(target=_big_consumer, args=(backend, q, n, size, to_c))
    producer = CTX.Process(target=_big_producer, args=(backend, q, n, size, to_p))
    try:
        consumer.start()
        if not from_c.poll(WATCHDOG) or from_c.recv() != "ready":
            raise RuntimeError(f"{backend.name}: the consumer did not start")
        producer.start()
        if not from_c.poll(WATCHDOG) or not from_p.poll(WATCHDOG):
            raise RuntimeError(f"{backend.name}: no result after {WATCHDOG:.0f}s")
        end: float
        end, wrong = from_c.recv()
        start: float = from_p.recv()
        if wrong:
            raise RuntimeError(f"{backend.name}: {wrong} large items came out wrong")
        return n * size / (end - start)
    finally:
        for p in (producer, consumer):
            p.join(WATCHDOG)
            if p.is_alive():
                p.kill()
        for conn in (from_c, to_c, from_p, to_p):
            conn.close()
        backend.close(q)


# --- Wake-up latency and idle CPU -----------------------------------------------------------


def _waker(backend: Backend, q: Any, n: int, replies: Any) -> None:
    put = backend.ops(q)[0]
    for _ in range(n):
        time.sleep(0.002)  # the getter is asleep by now
        put(time.monotonic())
        replies.get()  # the getter has taken it, and will block again


def latencies(backend: Backend, n: int) -> list[float]:
    """Seconds from just before a put in one process to the return of a get blocked in another."""
    q = backend.open()
    replies = CTX.SimpleQueue()
    get = backend.ops(q)[1]
    waker = CTX.Process(target=_waker, args=(backend, q, n, replies))
    waker.start()
    seen = []
    try:
        for _ in range(n):
            sent = get()
            seen.append(time.monotonic() - sent)
            replies.put(None)
    finally:
        waker.join(WATCHDOG)
        if waker.is_alive():
            waker.kill()
        backend.close(q)
    return seen


def _idle(backend: Backend, q: Any, seconds: float, out: Connection) -> None:
    get = functools.partial(q.get, timeout=seconds)
    cpu, wall = time.process_time(), time.monotonic()
    with contextlib.suppress(Exception):  # queue.Empty, of whichever module
        get()
    out.send((time.process_time() - cpu) / (time.monotonic() - wall))
    out.close()


def idle_cpu(backend: Backend, seconds: float = 1.0) -> float:
    """The share of a core that a get blocked on an empty queue uses."""
    q = backend.open()
    ours, theirs = CTX.Pipe(duplex=False)
    p = CTX.Process(target=_idle, args=(backend, q, seconds, theirs))
    p.start()
    try:
        if not ours.poll(WATCHDOG):
            raise RuntimeError(f"{backend.name}: the idle getter did not report")
        share: float = ours.recv()
        return share
    finally:
        p.join(WATCHDOG)
        ours.close()
        theirs.close()
        backend.close(q)


def per_call(url: str, n: int) -> tuple[float, float]:
    """Microseconds of one put and of one get, in one process."""
    q = queuekit.open(url)
    item = throughput.make_item(1)
    start = time.perf_counter()
    for _ in range(n):
        q.put(item)
    middle = time.perf_counter()
    for _ in range(n):
        q.get()
    end = time.perf_counter()
    q.close()
    return (middle - start) / n * 1e6, (end - middle) / n * 1e6


# --- A run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    scenario: str
    unit: str
    backends: list[Backend]
    measure: Callable[[Backend], float]


def run(cases: list[Case], repeat: int) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    pairs = [(c, b) for c in cases for b in c.backends]
    for rep in range(repeat):
        turn = rep % len(pairs)
        for case, backend in pairs[turn:] + pairs[:turn]:
            value = case.measure(backend)
            results.setdefault((case.scenario, backend.name), []).append(value)
            print(f"  run {rep + 1}/{repeat}: {case.scenario}, {backend.name}: {value:,.0f}")
    return results


def table(cases: list[Case], results: dict[tuple[str, str], list[float]]) -> list[list[str]]:
    """``x mp.Queue`` divides medians; ``paired`` is the median, over rounds, of each run
    divided by the baseline's run of the same scenario in the same round, which bursts of
    load on a shared machine sway less."""
    header = ["scenario", "backend", "median", "unit", "x mp.Queue", "paired", "min", "max"]
    rows = [header]
    for case in cases:
        base_values = results[case.scenario, throughput.BASELINE.name]
        base = statistics.median(base_values)
        for backend in case.backends:
            values = results[case.scenario, backend.name]
            median = statistics.median(values)
            paired = statistics.median(a / b for a, b in zip(values, base_values, strict=True))
            rows.append(
                [
                    case.scenario,
                    backend.name,
                    f"{median:,.0f}",
                    case.unit,
                    f"{median / base:.2f}x",
                    f"{paired:.2f}x",
                    f"{min(values):,.0f}",
                    f"{max(values):,.0f}",
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a tenth of the items")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (5)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables here")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    n = 200_000 // scale
    small = backends()
    large = backends(capacity="16MiB", fifo_bytes=16 * MiB)
    cases = [
        Case(
            "1P->1C put/get",
            "msg/s",
            small,
            lambda b: throughput.measure(b, Scenario("put/get", 1), n),
        ),
        Case(
            "1P->1C batches of 100",
            "msg/s",
            small,
            lambda b: throughput.measure(b, Scenario("batches of 100", 100 if b.batches else 1), n),
        ),
        Case("4P x 4C put/get", "msg/s", small, lambda b: measure_many(b, 4, n)),
        Case(
            "1P->1C 1 MiB items",
            "MiB/s",
            large,
            lambda b: measure_large(b, 1000 // scale) / MiB,
        ),
    ]
    load_before = os.getloadavg()[0]
    results = run(cases, args.repeat)
    cells = table(cases, results)
    print(throughput.format_text(cells))

    lines = ["", "wake-up latency, put in one process -> blocked get returns in another:"]
    for backend in small:
        seen = sorted(latencies(backend, 1000 // scale))
        p50, p99 = seen[len(seen) // 2], seen[int(len(seen) * 0.99)]
        lines.append(f"  {backend.name}: p50 {p50 * 1e6:,.0f} us, p99 {p99 * 1e6:,.0f} us")
    lines.append(
        f"4P x 4C, {n:,} items, per item over the 8 processes (median of {args.repeat}): CPU "
        "us (user, system), minor page faults, context switches (voluntary, involuntary):"
    )
    for backend in small:
        runs = [costs_many(backend, 4, n) for _ in range(args.repeat)]
        cells_of = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        lines.append(
            f"  {backend.name}: "
            + ", ".join(f"{key} {value:.3f}" for key, value in cells_of.items())
        )
    lines.append("CPU used by a get blocked for 1 s on an empty queue:")
    for backend in small:
        lines.append(f"  {backend.name}: {idle_cpu(backend):.3%} of a core")
    lines.append("one process, per call (median of 5):")
    for url in ("shm://", "shm://?checksum=true", "memory://?serializer=pickle"):
        calls = [per_call(url, n // 2) for _ in range(5)]
        put_us = statistics.median(c[0] for c in calls)
        get_us = statistics.median(c[1] for c in calls)
        lines.append(f"  {url}: put {put_us:.2f} us, get {get_us:.2f} us")
    print("\n".join(lines))
    if args.markdown:
        facts = throughput.machine()
        # Other work on the machine moves every figure: say how busy it was.
        facts["load average (1 min)"] = f"{load_before:.1f} at the start, "
        facts["load average (1 min)"] += f"{os.getloadavg()[0]:.1f} at the end"
        with open(args.markdown, "w") as out:
            out.write(throughput.format_markdown(cells) + "\n\n```\n")
            out.write("\n".join(lines).strip() + "\n```\n\n")
            out.writelines(f"- {key}: {value}\n" for key, value in facts.items())
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
