"""Messages per second from one producer process to one consumer process, small pickled items.

    python benchmarks/throughput.py [--quick] [--repeat N] [--items N] [--mixed] [--markdown FILE]

Each measurement forks a consumer, waits until it is ready, then forks a producer, and times
from the producer's first put to the consumer's last get (both read the same system-wide
monotonic clock). The consumer checks afterwards that it got every item, in order, intact.
``multiprocessing.Queue`` is the baseline, measured in the same run: every other row is given
as a ratio to its median. Repetitions interleave the backends, so noise on a shared machine
hits them all alike. faster-fifo is measured when it is importable; it is not a dependency.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import pickle
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import queuekit
from queuekit._bench import _report as bench_report

CTX: Any = multiprocessing.get_context("fork")  # BaseContext does not declare Process
WATCHDOG = 300.0
"""Seconds after which a measurement is taken to hang; its processes are killed."""

Item = tuple[str, int, bytes]
Ops = tuple[
    Callable[[Any], None],
    Callable[[], Any],
    Callable[[list[Any]], None],
    Callable[[int], list[Any]],
]
"""put(item), get(), put_many(items), get_many(max_items): one backend's calls on one queue."""


MIXED = False
"""Set by ``--mixed``: item ``i`` carries ``i % 64`` bytes instead of 32, so that the items of
a batch differ in size (pickled, 25 to 91 bytes), as a batch of text or records of several
kinds would; the default items are all one size (but for ``i`` below 256)."""


def make_item(i: int) -> Item:
    return ("job", i, b"x" * (i % 64 if MIXED else 32))


# --- Backends and scenarios -----------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[], Any]
    ops: Callable[[Any], Ops]
    close: Callable[[Any], None]
    batches: bool = True


def _queuekit_ops(q: Any) -> Ops:
    return q.put, q.get, q.put_many, q.get_many


def _queuekit(url: str) -> Backend:
    return Backend(url, functools.partial(queuekit.open, url), _queuekit_ops, lambda q: q.close())


def _stdlib_close(q: Any) -> None:
    q.close()
    q.join_thread()


def _stdlib_ops(q: Any) -> Ops:
    def no_batches(*args: Any) -> Any:
        raise NotImplementedError("multiprocessing.Queue has no batch calls")

    return q.put, q.get, no_batches, no_batches


def _faster_fifo_ops(q: Any) -> Ops:
    # Its calls time out after 10 s by default; the watchdog is the limit here.
    return (
        functools.partial(q.put, block=True, timeout=WATCHDOG),
        functools.partial(q.get, block=True, timeout=WATCHDOG),
        functools.partial(q.put_many, block=True, timeout=WATCHDOG),
        lambda k: q.get_many(block=True, timeout=WATCHDOG, max_messages_to_get=k),
    )


BASELINE = Backend("multiprocessing.Queue", CTX.Queue, _stdlib_ops, _stdlib_close, batches=False)


def available_backends() -> list[Backend]:
    """The baseline first, then every contender that can be opened on this machine."""
    backends = [BASELINE, _queuekit("mp://")]
    if "pipe" in queuekit.registered_schemes():
        backends.append(_queuekit("pipe://?capacity=1MiB"))
    try:
        import faster_fifo  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        backends.append(
            Backend(
                "faster-fifo (1 MB buffer)",
                functools.partial(faster_fifo.Queue, max_size_bytes=1_000_000),
                _faster_fifo_ops,
                lambda q: q.close(),
            )
        )
    return backends


@dataclass(frozen=True)
class Scenario:
    name: str
    batch: int
    """Items per put_many/get_many call; 1 for single put/get."""


SCENARIOS = (
    Scenario("put/get", 1),
    Scenario("batches of 100", 100),
    Scenario("batches of 1000", 1000),
)


# --- One measurement ------------------------------------------------------------------------


def _chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _produce(backend: Backend, q: Any, n: int, batch: int, out: Connection) -> None:
    put, _, put_many, _ = backend.ops(q)
    items = [make_item(i) for i in range(n)]
    if batch == 1:
        start = time.monotonic()
        for item in items:
            put(item)
    else:
        chunks = list(_chunks(items, batch))
        start = time.monotonic()
        for chunk in chunks:
            put_many(chunk)
    out.send(start)
    out.close()


def _consume(backend: Backend, q: Any, n: int, batch: int, out: Connection) -> None:
    _, get, _, get_many = backend.ops(q)
    got: list[Item] = []
    out.send("ready")
    if batch == 1:
        append = got.append
        for _ in range(n):
            append(get())
    else:
        while len(got) < n:
            got.extend(get_many(min(batch, n - len(got))))
    end = time.monotonic()
    wrong = next((i for i, item in enumerate(got) if item != make_item(i)), None)
    if len(got) != n:
        out.send(f"got {len(got)} items, not {n}")
    elif wrong is not None:
        out.send(f"item {wrong} is {got[wrong]!r}, expected {make_item(wrong)!r}")
    else:
        out.send(end)
    out.close()


def _await(conn: Connection, what: str, children: list[Any]) -> Any:
    """The next message on ``conn``; ``RuntimeError`` if a child fails first, or none comes."""
    end = time.monotonic() + WATCHDOG
    while not conn.poll():
        if not wait([conn, *(p.sentinel for p in children)], max(0.0, end - time.monotonic())):
            raise RuntimeError(f"{what}: nothing after {WATCHDOG:.0f}s")
        for p in children:
            if p.exitcode:
                raise RuntimeError(f"{what}: {p.name} exited with status {p.exitcode}")
        children = [p for p in children if p.exitcode is None]
    try:
        return conn.recv()
    except EOFError:
        raise RuntimeError(f"{what}: a child exited without reporting") from None


def measure(backend: Backend, scenario: Scenario, n: int) -> float:
    """Messages per second of one run; ``RuntimeError`` if it hangs, fails or loses items."""
    q = backend.open()
    from_consumer, to_parent_c = CTX.Pipe(duplex=False)
    from_producer, to_parent_p = CTX.Pipe(duplex=False)
    args = (backend, q, n, scenario.batch)
    consumer = CTX.Process(target=_consume, args=(*args, to_parent_c), name="consumer")
    producer = CTX.Process(target=_produce, args=(*args, to_parent_p), name="producer")
    what = f"{backend.name}, {scenario.name}"
    try:
        consumer.start()
        to_parent_c.close()  # the child's copy is the only one left: its exit is an EOF here
        if _await(from_consumer, what, [consumer]) != "ready":
            raise RuntimeError(f"{what}: the consumer did not start")
        producer.start()
        to_parent_p.close()
        result = _await(from_consumer, what, [consumer, producer])
        if isinstance(result, str):
            raise RuntimeError(f"{what}: {result}")
        end = float(result)
        start = float(_await(from_producer, what, [producer]))
        for p in (producer, consumer):
            p.join(WATCHDOG)
            if p.exitcode != 0:
                raise RuntimeError(f"{what}: {p.name} exited with status {p.exitcode}")
        return n / (end - start)
    finally:
        for p in (producer, consumer):
            if p.is_alive():
                p.kill()
                p.join()
        for conn in (from_consumer, to_parent_c, from_producer, to_parent_p):
            conn.close()
        backend.close(q)


# --- A run: every backend and scenario, repeated --------------------------------------------


@dataclass(frozen=True)
class Row:
    backend: str
    scenario: str
    rates: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def run(
    backends: list[Backend], n: int, repeat: int, log: Callable[[str], None] = print
) -> list[Row]:
    """Median, min and max msg/s of each (backend, scenario); repetitions interleave them."""
    pairs = [(b, s) for s in SCENARIOS for b in backends if b.batches or s.batch == 1]
    rates: dict[tuple[str, str], list[float]] = {(b.name, s.name): [] for b, s in pairs}
    for rep in range(repeat):
        turn = rep % len(pairs)  # rotate the order too, so no backend always goes first
        for backend, scenario in pairs[turn:] + pairs[:turn]:
            rate = measure(backend, scenario, n)
            rates[backend.name, scenario.name].append(rate)
            log(f"  run {rep + 1}/{repeat}: {backend.name}, {scenario.name}: {rate:,.0f} msg/s")
    return [Row(b.name, s.name, tuple(rates[b.name, s.name])) for b, s in pairs]


def table(rows: list[Row], baseline: str) -> list[list[str]]:
    """One line per row. ``x mp.Queue`` divides medians; ``paired`` is the median, over rounds,
    of each run divided by the baseline's run in the same round, which bursts of load on a
    shared machine sway less."""
    base = next(r for r in rows if r.backend == baseline and r.scenario == "put/get")
    header = ["backend", "calls", "median msg/s", "x mp.Queue", "paired", "min msg/s", "max msg/s"]
    body = [
        [
            r.backend,
            r.scenario,
            f"{r.median:,.0f}",
            f"{r.median / base.median:.2f}x",
            f"{statistics.median(a / b for a, b in zip(r.rates, base.rates, strict=True)):.2f}x",
            f"{min(r.rates):,.0f}",
            f"{max(r.rates):,.0f}",
        ]
        for r in rows
    ]
    return [header, *body]


def format_text(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join(["---", "---"] + ["---:"] * (len(cells[0]) - 2)) + "|")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    return {**bench_report.machine(), "command": shlex.join(["python", *sys.argv])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20,000 items instead of 200,000")
    parser.add_argument("--items", type=int, help="items per measurement (overrides --quick)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (5)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table and machine here")
    parser.add_argument(
        "--mixed", action="store_true", help="items of 25 to 91 bytes pickled, not all 58"
    )
    args = parser.parse_args(argv)
    global MIXED
    MIXED = args.mixed  # before any process is forked
    n = args.items or (20_000 if args.quick else 200_000)
    if n < 1 or args.repeat < 1:
        parser.error("--items and --repeat must be at least 1")

    backends = available_backends()
    sample = {*range(0, n, max(1, n // 997)), *range(max(0, n - 64), n)}
    sizes = sorted({len(pickle.dumps(make_item(i), protocol=5)) for i in sample})
    size = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
    print(
        f"{n:,} items of {size} bytes pickled, 1 producer -> 1 consumer process (fork), "
        f"{args.repeat} runs each; backends: {', '.join(b.name for b in backends)}"
    )
    rows = run(backends, n, args.repeat)
    cells = table(rows, BASELINE.name)
    print(format_text(cells))
    if args.markdown:
        facts = machine()
        shape = "`('job', i, b'x' * (i % 64))`" if MIXED else f"`{make_item(12345)!r}`"
        facts["items"] = f"{n:,} per run, each {shape} ({size} bytes pickled)"
        facts["runs"] = f"{args.repeat} per row, interleaved; start method fork"
        with open(args.markdown, "w") as out:
            out.write(format_markdown(cells) + "\n\n")
            out.writelines(f"- {key}: {value}\n" for key, value in facts.items())
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
