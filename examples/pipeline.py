"""A three-stage multiprocess pipeline on any cross-process queuekit backend.

    python examples/pipeline.py [URL] [--items N] [--join-first]      # URL defaults to mp://

Producers put items of mixed sizes (up to 256 KiB) into queue A; one group of workers checksums
A into B, a second group verifies B into C; the main process collects C and checks that every
item arrived exactly once. The transport is chosen by the URL alone.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from multiprocessing import Process
from typing import Any

import queuekit

SIZES = (100, 4 * 1024, 64 * 1024, 256 * 1024)
PRODUCERS = WORKERS = 2
TIMEOUT = 60.0  # join() raises JoinTimeout after this: a stuck stage cannot pass for a done one


def produce(a: queuekit.Queue[Any], numbers: range) -> None:
    for n in numbers:
        a.put((n, bytes([n % 256]) * SIZES[n % len(SIZES)]))
    a.close()  # returns once this process's items are written into the transport


def checksum(item: tuple[int, bytes]) -> tuple[int, bytes, int]:
    n, payload = item
    return n, payload, zlib.crc32(payload)


def verify(item: tuple[int, bytes, int]) -> tuple[int, int, bool]:
    n, payload, crc = item
    return n, len(payload), zlib.crc32(payload) == crc


def stage(src: queuekit.Queue[Any], dst: queuekit.Queue[Any], work: Callable[[Any], Any]) -> None:
    while True:
        try:
            item = src.get()
        except queuekit.ShutDown:  # the stage before is finished and drained
            break
        dst.put(work(item))
        src.task_done()
    src.close()
    dst.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="mp://", help="queue URL (default mp://)")
    parser.add_argument("--items", type=int, default=1000, help="items to send (default 1000)")
    parser.add_argument(
        "--join-first", action="store_true", help="join producers before anyone drains (hangs)"
    )
    args = parser.parse_args()

    a, b, c = (queuekit.open(args.url) for _ in range(3))
    if not a.capabilities.cross_process:
        sys.exit(
            f"{args.url} is not cross-process: its handles cannot be shared with worker "
            "processes. Run this with mp://, or another URL whose backend's "
            "capabilities.cross_process is true."
        )

    start = time.monotonic()
    numbers = [range(i, args.items, PRODUCERS) for i in range(PRODUCERS)]
    producers = [Process(target=produce, args=(a, numbers[i])) for i in range(PRODUCERS)]
    workers = [Process(target=stage, args=(a, b, checksum)) for _ in range(WORKERS)]
    workers += [Process(target=stage, args=(b, c, verify)) for _ in range(WORKERS)]
    for p in producers:
        p.start()
    if args.join_first:  # the classic pattern: wait for the producers before draining A
        end = time.monotonic() + 3
        for p in producers:
            p.join(timeout=max(0.0, end - time.monotonic()))
        stuck = sum(p.is_alive() for p in producers)
        print(
            f"--join-first: {stuck} of {PRODUCERS} producers still alive after 3s"
            + (" (a plain Process.join() would wait as long as nobody drains A)" if stuck else "")
        )
    for p in workers:
        p.start()

    delivered: Counter[int] = Counter()
    for _ in range(args.items):
        n, size, intact = c.get(timeout=TIMEOUT)
        if not intact or size != SIZES[n % len(SIZES)]:
            sys.exit(f"item {n} arrived damaged")
        delivered[n] += 1
        c.task_done()
    for q in (a, b, c):
        q.join(timeout=TIMEOUT)  # every item put into q was processed...
        q.shutdown()  # ...so its readers may stop: their get() raises ShutDown
    for p in producers + workers:
        p.join()
    elapsed = time.monotonic() - start
    for q in (a, b, c):
        q.close()

    once = sum(count == 1 for count in delivered.values())
    crashed = [p.name for p in producers + workers if p.exitcode != 0]
    print(
        f"{args.url}: {len(delivered)} of {args.items} items delivered, {once} exactly once, "
        f"in {elapsed:.2f}s through 3 queues and {len(producers + workers)} processes"
        + (f"; failed: {', '.join(crashed)}" if crashed else "")
    )
    print(
        "note: on mp://, as on multiprocessing's queues, a process that put items cannot exit "
        "until its feeder thread has written them into the 64 KiB pipe, so joining producers "
        "before their queue is drained hangs: try --join-first. This run drains while they "
        "run. shm:// and pipe:// have no feeder thread: a put returns once its item is in the "
        "queue, and a full queue shows in put (it waits, or raises Full after its timeout)."
    )
    return 0 if once == len(delivered) == args.items and not crashed else 1


if __name__ == "__main__":
    sys.exit(main())
