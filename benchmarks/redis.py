"""redis:// side by side with raw redis-py loops, on the same server, in the same run.

    python benchmarks/redis.py [--url redis://HOST:PORT/DB] [--repeat N] [--ops N] [--markdown FILE]

Without --url (or QUEUEKIT_REDIS_URL) it starts a redis-server of its own on a free loopback
port (no persistence) and kills it at the end. One process, one connection each, 100-byte
items; queuekit uses serializer=raw so both sides send the same bytes and the difference is
the queue's own work. Each pair runs in alternating order in every round; the figures are
medians over rounds, and each ratio is the median of the rounds' own ratios.

* put+get: ``q.put(x); q.get()`` against ``LPUSH`` + ``BRPOP``;
* acknowledged get: ``q.get(); q.task_done()`` against ``BLMOVE`` + ``LREM`` (items queued
  before the clock starts, the same way on both sides);
* batches of 10, 100 and 1000: ``put_many`` against one variadic ``LPUSH``, ``get_many(n)``
  against ``LPOP key n`` (items per second; batches of 1000 only when ``--ops`` is 1000 or
  more).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# This file is itself called redis.py: keep its directory out of the way of redis-py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import redis  # noqa: E402

import queuekit  # noqa: E402

ITEM = b"x" * 100
BATCH = 100
BIG = 1000


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH: install it or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="queuekit-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        r = redis.Redis(port=port)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def timed(setup: Callable[[], None], body: Callable[[], None]) -> float:
    setup()
    start = time.perf_counter()
    body()
    return time.perf_counter() - start


def scenarios(
    url: str, ops: int, cleanup: list[Callable[[], object]]
) -> dict[str, tuple[Callable[[], float], Callable[[], float]]]:
    r = redis.Redis.from_url(url)
    key = f"bench-raw-{secrets.token_hex(4)}"
    proc = key + ":proc"
    q = queuekit.open(url, serializer="raw")
    # On a server of the caller's (--url), nothing of the run is left behind.
    cleanup += [q.close, q.unlink, lambda: r.delete(key, proc)]
    q.put(ITEM)
    q.get()  # scripts loaded, consumer registered: steady state
    q.task_done()
    batches = ops // BATCH

    def none() -> None:
        pass

    def raw_put_get() -> None:
        for _ in range(ops):
            r.lpush(key, ITEM)
            r.brpop([key], 1)

    def qk_put_get() -> None:
        for _ in range(ops):
            q.put(ITEM)
            q.get()
            q.task_done()  # untimed below would leave unfinished tasks growing; cheap here

    def raw_fill() -> None:
        r.delete(key, proc)
        for _ in range(batches):
            r.lpush(key, *[ITEM] * BATCH)

    def qk_fill() -> None:
        for _ in range(batches):
            q.put_many([ITEM] * BATCH)

    def raw_ack() -> None:
        for _ in range(ops):
            m = r.blmove(key, proc, 1, "RIGHT", "LEFT")
            r.lrem(proc, -1, m)  # type: ignore[arg-type]

    def qk_ack() -> None:
        for _ in range(ops):
            q.get()
            q.task_done()

    def qk_drain() -> None:
        for _ in range(ops):
            q.task_done()

    def batch_cases(size: int) -> dict[str, tuple[Callable[[], float], Callable[[], float]]]:
        count = ops // size
        batch = [ITEM] * size

        def raw_put_many() -> None:
            for _ in range(count):
                r.lpush(key, *batch)

        def qk_put_many() -> None:
            for _ in range(count):
                q.put_many(batch)

        def raw_get_many() -> None:
            for _ in range(count):
                r.lpop(key, size)

        def qk_get_many() -> None:
            for _ in range(count):
                q.get_many(size)

        def measure_raw_put_many() -> float:
            took = timed(lambda: r.delete(key), raw_put_many)
            r.delete(key)
            return took

        def measure_qk_put_many() -> float:
            took = timed(none, qk_put_many)
            q.get_many(ops)
            qk_drain()
            return took

        def measure_qk_get_many() -> float:
            took = timed(qk_fill, qk_get_many)
            qk_drain()
            return took

        return {
            f"put_many({size})": (measure_raw_put_many, measure_qk_put_many),
            f"get_many({size})": (lambda: timed(raw_fill, raw_get_many), measure_qk_get_many),
        }

    # q.task_done() runs inside the timed put+get loop: leaving tasks unfinished would let the
    # counter grow across rounds, and a put+get user who never calls it is rare. It costs one
    # more round trip, so the put+get pair is also measured without it, against the same raw.
    def qk_put_get_no_ack() -> None:
        for _ in range(ops):
            q.put(ITEM)
            q.get()

    def measure_qk_put_get_no_ack() -> float:
        took = timed(none, qk_put_get_no_ack)
        qk_drain()
        return took

    return {
        "put+get+task_done": (lambda: timed(none, raw_put_get), lambda: timed(none, qk_put_get)),
        "put+get": (lambda: timed(none, raw_put_get), measure_qk_put_get_no_ack),
        "get+task_done": (lambda: timed(raw_fill, raw_ack), lambda: timed(qk_fill, qk_ack)),
        **batch_cases(10),
        **batch_cases(BATCH),
        **(batch_cases(BIG) if ops >= BIG else {}),
    }  # fmt: skip


TARGETS = {
    "put+get": ("cost", 1.25),
    "get+task_done": ("cost", 1.25),
    **{
        f"{op}({n})": ("throughput", 0.5)
        for op in ("put_many", "get_many")
        for n in (10, BATCH, BIG)
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("QUEUEKIT_REDIS_URL"))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--markdown", metavar="FILE")
    args = parser.parse_args(argv)
    ops = args.ops - args.ops % BATCH
    with server(args.url) as url:
        server_version = redis.Redis.from_url(url).info("server")["redis_version"]
        cleanup: list[Callable[[], object]] = []
        try:
            cases = scenarios(url, ops, cleanup)
            raw: dict[str, list[float]] = {name: [] for name in cases}
            ours: dict[str, list[float]] = {name: [] for name in cases}
            for round_ in range(args.repeat):
                for name, (raw_fn, qk_fn) in cases.items():
                    if round_ % 2:
                        ours[name].append(qk_fn())
                        raw[name].append(raw_fn())
                    else:
                        raw[name].append(raw_fn())
                        ours[name].append(qk_fn())
        finally:
            for step in reversed(cleanup):
                step()
    lines = [
        f"{args.repeat} rounds of {ops} operations (items of {len(ITEM)} bytes), "
        f"Python {sys.version.split()[0]}, redis-py {redis.__version__} "
        f"({'with' if redis.utils.HIREDIS_AVAILABLE else 'without'} hiredis), "
        f"Redis {server_version}",
        "",
        "| scenario | raw redis-py | queuekit redis:// | queuekit / raw cost | target | met? |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name in cases:
        r_us = statistics.median(raw[name]) / ops * 1e6
        q_us = statistics.median(ours[name]) / ops * 1e6
        ratio = statistics.median(b / a for a, b in zip(raw[name], ours[name], strict=True))
        kind, bound = TARGETS.get(name, ("", 0.0))
        if kind == "cost":
            target, met = f"cost <= {bound}x", "yes" if ratio <= bound else "no"
        elif kind == "throughput":
            target = f"throughput >= {bound}x (cost <= {1 / bound:g}x)"
            met = "yes" if ratio <= 1 / bound else "no"
        else:
            target, met = "(for reference)", ""
        lines.append(
            f"| {name} | {r_us:.1f} us/op | {q_us:.1f} us/op | {ratio:.2f}x | {target} | {met} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
