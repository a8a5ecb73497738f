"""What is measured: queuekit URLs, and the queues users would otherwise reach for.

A target opens a fresh queue for each run and gives each worker its calls on it (``Ops``).
Targets come in families; each family's baseline is the queue its ratios are taken against:
``multiprocessing.Queue`` for queues shared between processes, ``queue.Queue`` for queues in
one process, raw redis-py lists for Redis. faster-fifo and redis-py are imported only here, and
only when asked for.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import pickle
import queue
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._registry import open as open_url
from .._urls import parse_url

# Runs and their workers are forked (the command refuses to run where fork is missing).
# Any: BaseContext does not declare Process.
CTX: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)
FOREVER = 3600.0
"""Timeout for calls of queues that give up by themselves (faster-fifo: 10 s); the harness's
watchdog is the real limit."""

PROCESS, THREAD, REDIS = "processes", "threads", "redis"
MP_QUEUE, RAW_REDIS = "multiprocessing.Queue", "redis-py (RPUSH/BLPOP)"


@dataclass(frozen=True)
class Ops:
    """One worker's calls on one queue. Batch and task calls are ``None`` where the queue has
    none: scenarios then use single calls, or skip the target."""

    put: Callable[[Any], None]
    get: Callable[[], Any]
    offer: Callable[[list[Any], float], None]
    """Put a batch, raising ``queue.Full`` if there is no room for it within the timeout."""
    put_many: Callable[[list[Any]], None] | None = None
    get_many: Callable[[int], list[Any]] | None = None
    task_done: Callable[[], None] | None = None
    finish: Callable[[int], None] | None = None
    """Wait until every item was processed, then stop ``readers`` readers."""


@dataclass(frozen=True)
class Target:
    name: str
    family: str
    open: Callable[[], Any]
    ops: Callable[[Any], Ops]
    baseline: bool = False
    tasks: bool = False
    """Has task_done/join, and a way to stop its readers (``Ops.finish``)."""
    only: str | None = None
    """The one scenario this target is for (the pipeline's ``JoinableQueue``)."""
    cleanup: Callable[[], None] | None = None
    """Called once at the end: removes what outlives the runs' processes (Redis keys). Nothing
    else is closed, as every run's processes are killed once it has reported."""

    @property
    def threads(self) -> bool:
        return self.family == THREAD


def _each_put(put: Callable[[Any], None]) -> Callable[[list[Any], float], None]:
    def offer(items: list[Any], timeout: float) -> None:
        for item in items:
            put(item)  # unbounded: never full

    return offer


def _stop_with_sentinels(q: Any) -> Callable[[int], None]:
    def finish(readers: int) -> None:
        q.join()
        for _ in range(readers):
            q.put(None)

    return finish


def _stdlib_ops(q: Any) -> Ops:
    joinable = hasattr(q, "task_done")
    return Ops(
        q.put,
        q.get,
        _each_put(q.put),
        task_done=q.task_done if joinable else None,
        finish=_stop_with_sentinels(q) if joinable else None,
    )


def _queuekit_ops(q: Any) -> Ops:
    def finish(readers: int) -> None:
        q.join()
        q.shutdown()

    return Ops(
        q.put,
        q.get,
        lambda items, timeout: q.put_many(items, timeout=timeout),
        q.put_many,
        q.get_many,
        q.task_done,
        finish,
    )


def queuekit_target(url: str, family: str) -> Target:
    shown = parse_url(url).redacted()
    return Target(shown, family, functools.partial(open_url, url), _queuekit_ops, tasks=True)


def stdlib_targets() -> list[Target]:
    return [
        Target(MP_QUEUE, PROCESS, CTX.Queue, _stdlib_ops, baseline=True),
        Target(
            "multiprocessing.JoinableQueue",
            PROCESS,
            CTX.JoinableQueue,
            _stdlib_ops,
            baseline=True,
            tasks=True,
            only="pipeline",
        ),
        Target("queue.Queue", THREAD, queue.Queue, _stdlib_ops, baseline=True, tasks=True),
    ]


FIFO_BYTES = 16 * 1024 * 1024
"""faster-fifo's buffer: the size of shm://'s default ring, so 1 MiB items fit both."""


def _fifo_ops(q: Any) -> Ops:
    return Ops(
        functools.partial(q.put, block=True, timeout=FOREVER),
        functools.partial(q.get, block=True, timeout=FOREVER),
        lambda items, timeout: q.put_many(items, block=True, timeout=timeout),
        functools.partial(q.put_many, block=True, timeout=FOREVER),
        lambda k: q.get_many(block=True, timeout=FOREVER, max_messages_to_get=k),
    )


def faster_fifo_target() -> Target | None:
    if importlib.util.find_spec("faster_fifo") is None:
        return None
    import faster_fifo  # type: ignore[import-not-found, unused-ignore]

    return Target(
        "faster-fifo (16 MiB buffer)",
        PROCESS,
        functools.partial(faster_fifo.Queue, max_size_bytes=FIFO_BYTES),
        _fifo_ops,
    )


# --- Redis -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisList:
    """A Redis list used as a queue by plain redis-py calls: RPUSH pickled items, BLPOP them."""

    url: str
    key: str


def _redis_ops(q: RedisList) -> Ops:
    import redis

    client: Any = redis.Redis.from_url(q.url)  # one per worker: made after the fork

    def put(item: Any) -> None:
        client.rpush(q.key, pickle.dumps(item, protocol=5))

    def put_many(items: list[Any]) -> None:
        client.rpush(q.key, *(pickle.dumps(item, protocol=5) for item in items))

    def get() -> Any:
        _, data = client.blpop([q.key], timeout=0)
        return pickle.loads(data)

    def get_many(k: int) -> list[Any]:
        first = get()
        rest = client.lpop(q.key, k - 1) if k > 1 else None
        return [first, *(pickle.loads(d) for d in rest or ())]

    return Ops(put, get, lambda items, timeout: put_many(items), put_many, get_many)


def _redis_list(url: str, prefix: str) -> RedisList:
    return RedisList(url, f"{prefix}-raw-{uuid.uuid4().hex}")  # a fresh list for every run


def _redis_queue(url: str, prefix: str) -> Any:
    return open_url(url, key=f"{prefix}-{uuid.uuid4().hex}")


def _redis_cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"*{prefix}*"):  # queuekit's keys are "{NAME}:..."
        client.delete(key)


REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_targets(url: str | None, probe: bool) -> tuple[list[Target], list[str]]:
    """Raw redis-py and ``redis://`` targets for the server at ``url`` (or the local default
    when ``probe``), and one-line notes on what was left out and why. Every run has lists of
    its own, named after this session, and they are deleted at the end."""
    if url is None and not probe:
        return [], []
    url = url or "redis://127.0.0.1:6379/0"
    shown = parse_url(url).redacted()
    if importlib.util.find_spec("redis") is None:
        return [], [
            "redis: not measured: redis-py is not installed (pip install 'queuekit[redis]')"
        ]
    import redis

    server = url.split("?", 1)[0]  # without queuekit's query parameters
    try:
        redis.Redis.from_url(server, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return [], [f"redis: not measured: no server answers at {shown} ({exc})"]
    prefix = f"queuekit-bench-{uuid.uuid4().hex[:12]}"
    cleanup = functools.partial(_redis_cleanup, server, prefix)
    raw = Target(
        RAW_REDIS,
        REDIS,
        functools.partial(_redis_list, server, prefix),
        _redis_ops,
        baseline=True,
        cleanup=cleanup,
    )
    if importlib.util.find_spec("queuekit.backends.redis") is None:
        return [raw], ["redis://: not measured: queuekit.backends.redis is not there yet"]
    with _redis_queue(url, prefix):  # a bad URL is an InvalidURL here, before any run
        pass
    ours = Target(
        shown, REDIS, functools.partial(_redis_queue, url, prefix), _queuekit_ops, tasks=True
    )
    return [raw, ours], []
