"""Producers and consumers on different machines, sharing one queue through a Redis server.

    python examples/redis_cross_machine.py consume 'redis://HOST:6379/0?key=jobs-1'   # any hosts
    python examples/redis_cross_machine.py produce 'redis://HOST:6379/0?key=jobs-1' --items 1000

Start consumers on as many machines as you like, then one producer on any machine that reaches
the same server. The producer puts its jobs, waits until every one is done (``join`` with a
timeout, so a stuck consumer is an error, not a hang), then shuts the queue down, which ends
the consumers. A shut-down queue stays shut down: give each run a new ``key``. Delivery is at
least once: jobs held by a consumer that dies are delivered again after its
``visibility_timeout``, so a job must be safe to do twice.
"""

from __future__ import annotations

import argparse
import socket
import sys
import zlib

import queuekit


def produce(q: queuekit.Queue[dict[str, object]], items: int, timeout: float) -> None:
    host = socket.gethostname()
    for start in range(0, items, 100):
        q.put_many([{"job": i, "from": host} for i in range(start, min(items, start + 100))])
    q.join(timeout=timeout)  # raises JoinTimeout, with the tasks left, if consumers stall
    q.shutdown()
    print(f"{host}: {items} jobs put and done")


def consume(q: queuekit.Queue[dict[str, object]]) -> None:
    host, done = socket.gethostname(), 0
    while True:
        try:
            job = q.get()
        except queuekit.ShutDown:  # the producer saw every job done
            break
        zlib.crc32(str(job).encode())  # the work
        q.task_done()
        done += 1
    print(f"{host}: did {done} jobs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("url", help="redis://[USER:PASSWORD@]HOST[:PORT][/DB]?key=NAME")
    parser.add_argument("--items", type=int, default=1000, help="jobs to put (produce)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (produce)")
    args = parser.parse_args()
    if "key=" not in args.url:
        parser.error("give the queue a name both roles share: ...?key=NAME")
    with queuekit.open(args.url) as q:
        if args.role == "produce":
            produce(q, args.items, args.timeout)
        else:
            consume(q)
    return 0


if __name__ == "__main__":
    sys.exit(main())
