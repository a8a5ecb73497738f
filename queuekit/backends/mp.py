"""``mp://``: a :class:`multiprocessing.Queue` shared by processes, with the whole contract.

The items travel, as bytes, through one stdlib ``multiprocessing.Queue``: a pipe, written by a
feeder thread in each producing process. That transport's behaviour is kept as it is: a process
that put items exits (or closes its handle) only once its feeder has written them into the
pipe, so joining a producer whose feeder waits on a full pipe nobody reads hangs, as it does
with the stdlib. What the stdlib lacks is added beside the pipe, under one shared lock: an exact
count (so ``qsize`` is exact everywhere), unfinished tasks, the shutdown flag, and wake-ups that
cross processes.

Parameters: ``maxsize``, ``serializer``, and ``context``, the start method of the processes
that will share the queue. Left empty, the queue is made so its handle travels to children of
every start method; ``context=fork`` makes fork-only locks, which need no resource tracker.

Losses, as with the stdlib, are bounded by what a killed process held. An item is counted
before its bytes are sent, so a getter that claims it waits for it (at least
``IN_FLIGHT_GRACE`` seconds, even for ``block=False``); if its producer was killed before its
feeder wrote it, the getter raises ``Empty`` (``ShutDown`` once shut down) and the item is lost.
A process killed while writing into, or reading from, the pipe leaves it unusable, as the
stdlib documentation warns. A process killed while *waiting* (in get, put or join) is harmless.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import queue as _stdlib_queue
import time
from collections.abc import Iterable
from multiprocessing.context import get_spawning_popen
from multiprocessing.synchronize import Lock, Semaphore
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._base import QueueBase, check_batch_fits, check_max_items, deadline, remaining
from .._errors import Empty, Full, InvalidURL, JoinTimeout, QueueClosed, ShutDown
from .._protocol import Capabilities
from .._serializers import Serializer, get_serializer
from .._urls import Param, QueueURL, as_int, as_serializer, bind_params

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.queues import Queue as StdlibQueue

__all__ = ["IN_FLIGHT_GRACE", "MPQueue"]

T = TypeVar("T")

IN_FLIGHT_GRACE = 2.0
"""Seconds a getter waits for an item it has claimed but whose bytes are still on their way."""

_START_METHODS = ("fork", "spawn", "forkserver")

# Slots of the shared state array.
_COUNT, _UNFINISHED, _SHUTDOWN, _SLEEP_NOT_EMPTY, _SLEEP_NOT_FULL, _SLEEP_TASKS = range(6)


def _as_context(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected a start method name, not {type(value).__name__}")
    available = [m for m in _START_METHODS if m in multiprocessing.get_all_start_methods()]
    if value and value not in available:
        raise ValueError(f"expected one of {', '.join(available)}, or empty for any")
    return value


def _primitives_context(context: str) -> BaseContext:
    if context:
        return multiprocessing.get_context(context)
    # The first method listed is the default; asking get_context() would fix it for the program.
    default = (
        multiprocessing.get_start_method(allow_none=True)
        or multiprocessing.get_all_start_methods()[0]
    )
    # Locks made for fork cannot be sent to spawn or forkserver children; named ones go anywhere.
    return multiprocessing.get_context("spawn" if default == "fork" else default)


class _Waiters:
    """A condition variable on the queue's lock, for waiters in any process.

    ``multiprocessing.Condition`` makes ``notify`` wait for each woken waiter to acknowledge,
    so a waiter killed while asleep blocks every later ``notify`` forever (with the lock held).
    Here ``notify`` only posts a semaphore; a dead waiter costs at most one spurious wake-up.
    Invariant, under the lock: sleepers + semaphore value + tokens taken but not yet returned
    under the lock == waiters inside ``wait``.
    """

    def __init__(
        self, ctx: BaseContext, lock: Lock, state: ctypes.Array[ctypes.c_int64], slot: int
    ):
        self._lock = lock
        self._state = state
        self._slot = slot
        self._sem: Semaphore = ctx.Semaphore(0)

    def wait(self, timeout: float | None) -> None:
        self._state[self._slot] += 1
        self._lock.release()
        woken = False
        try:
            woken = self._sem.acquire(True, timeout)
        finally:
            self._lock.acquire()
            # A waiter that timed out as it was notified takes its token now, so none is left over.
            if not woken and not self._sem.acquire(False):
                self._state[self._slot] -= 1

    def notify(self, n: int = 1) -> None:
        k = min(n, self._state[self._slot])
        self._state[self._slot] -= k
        for _ in range(k):
            self._sem.release()

    def notify_all(self) -> None:
        self.notify(self._state[self._slot])


class MPQueue(QueueBase[T]):
    PARAMS: ClassVar[list[Param]] = [
        Param("maxsize", as_int, 0, "most items held; 0 for unbounded"),
        Param(
            "serializer", as_serializer, "pickle", "pickle, json, raw or an object with dumps/loads"
        ),
        Param(
            "context",
            _as_context,
            "",
            "start method of the processes sharing the queue: fork (fork-only locks), spawn, "
            "forkserver, or empty for any",
        ),
    ]

    def __init__(
        self,
        *,
        maxsize: int = 0,
        serializer: Serializer | str = "pickle",
        context: str | None = None,
    ) -> None:
        try:
            self._context = _as_context(context)
        except (TypeError, ValueError) as exc:
            raise InvalidURL(f"bad value {context!r} for 'context': {exc}") from None
        self._maxsize = maxsize
        self._serializer = get_serializer(serializer)
        ctx = _primitives_context(self._context)
        self._lock = ctx.Lock()
        self._state = ctx.RawArray(ctypes.c_int64, 6)
        self._not_empty = _Waiters(ctx, self._lock, self._state, _SLEEP_NOT_EMPTY)
        self._not_full = _Waiters(ctx, self._lock, self._state, _SLEEP_NOT_FULL)
        self._all_tasks_done = _Waiters(ctx, self._lock, self._state, _SLEEP_TASKS)
        self._q: StdlibQueue[bytes] = ctx.Queue()

    @classmethod
    def from_url(cls, url: QueueURL, **options: Any) -> MPQueue[Any]:
        if url.location or url.path or url.username is not None or url.password is not None:
            raise InvalidURL(
                f"{url}: mp:// takes no host, name or path; write mp:// with parameters only, "
                "as in mp://?maxsize=100"
            )
        return cls(**bind_params(url, cls.PARAMS, options))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"maxsize={self._maxsize}"
        return f"<MPQueue mp:// {state}>"

    def __getstate__(self) -> dict[str, Any]:
        popen = get_spawning_popen()
        if popen is None:
            raise RuntimeError(
                "an mp:// queue handle cannot be pickled; pass it to the child as an argument "
                "of Process (Process(target=..., args=(queue,))), which shares it properly"
            )
        if self._closed:
            raise QueueClosed(f"{self!r} is closed; pass an open handle to the child process")
        method = getattr(popen, "method", "spawn")
        if self._context == "fork":
            raise RuntimeError(
                f"this mp:// queue was opened with context=fork, whose locks only fork children "
                f"can use; open it with context={method} (or no context) to pass it to a "
                f"{method} child"
            )
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._closed = False

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def capabilities(self) -> Capabilities:
        available = multiprocessing.get_all_start_methods()
        methods = ("fork",) if self._context == "fork" else _START_METHODS
        return Capabilities(
            qsize="exact",
            ordering="per-producer-fifo",
            cross_process=True,
            start_methods=tuple(m for m in methods if m in available),
            serializes=True,
        )

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self._put_encoded([self._serializer.dumps(item)], block, timeout)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        self._put_encoded([self._serializer.dumps(item) for item in items], block, timeout)

    def _put_encoded(self, encoded: list[bytes], block: bool, timeout: float | None) -> None:
        self._check_open()
        n = len(encoded)
        s = self._state
        with self._lock:
            if s[_SHUTDOWN]:
                raise ShutDown
            check_batch_fits(n, self._maxsize)
            end = deadline(block, timeout)
            while 0 < self._maxsize < s[_COUNT] + n:
                wait = remaining(end)
                if wait == 0.0:
                    raise Full
                self._not_full.wait(wait)
                if s[_SHUTDOWN]:
                    raise ShutDown
            s[_COUNT] += n
            s[_UNFINISHED] += n
            self._not_empty.notify(n)
        # Counted first, sent after: a getter that claims one of these waits for its bytes.
        for data in encoded:
            self._q.put(data)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        item: T = self._serializer.loads(self._get_encoded(1, block, timeout)[0])
        return item

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        check_max_items(max_items)
        return [self._serializer.loads(d) for d in self._get_encoded(max_items, block, timeout)]

    def _get_encoded(self, max_items: int, block: bool, timeout: float | None) -> list[bytes]:
        self._check_open()
        s = self._state
        with self._lock:
            if s[_SHUTDOWN] and not s[_COUNT]:
                raise ShutDown
            end = deadline(block, timeout)
            while not s[_COUNT]:
                wait = remaining(end)
                if wait == 0.0:
                    raise Empty
                self._not_empty.wait(wait)
                if s[_SHUTDOWN] and not s[_COUNT]:
                    raise ShutDown
            claimed = min(max_items, s[_COUNT])
            s[_COUNT] -= claimed
            # All, not `claimed`: a waiting batch may need more room than one item frees.
            self._not_full.notify_all()
        received = self._receive(claimed, end)
        if not received:
            raise ShutDown if self._is_shut_down() else Empty
        return received

    def _receive(self, claimed: int, end: float | None) -> list[bytes]:
        """Up to ``claimed`` messages from the pipe; fewer only if their producers died."""
        received: list[bytes] = []
        while len(received) < claimed:
            # Patience restarts with each message: a long batch of large items may take a while.
            wait = IN_FLIGHT_GRACE if end is None else max(IN_FLIGHT_GRACE, end - time.monotonic())
            try:
                received.append(self._q.get(True, wait))
            except _stdlib_queue.Empty:
                if end is None and not self._is_shut_down():
                    continue
                break
        return received

    def _is_shut_down(self) -> bool:
        with self._lock:
            return bool(self._state[_SHUTDOWN])

    def qsize(self) -> int:
        self._check_open()
        with self._lock:
            return self._state[_COUNT]

    def task_done(self) -> None:
        self._check_open()
        s = self._state
        with self._lock:
            if s[_UNFINISHED] <= 0:
                raise ValueError("task_done() called more times than there were items put")
            s[_UNFINISHED] -= 1
            if not s[_UNFINISHED]:
                self._all_tasks_done.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self._check_open()
        s = self._state
        with self._lock:
            end = deadline(True, timeout)
            while s[_UNFINISHED]:
                wait = remaining(end)
                if wait == 0.0:
                    raise JoinTimeout(f"join() timed out with {s[_UNFINISHED]} unfinished tasks")
                self._all_tasks_done.wait(wait)

    def shutdown(self, immediate: bool = False) -> None:
        self._check_open()
        s = self._state
        with self._lock:
            s[_SHUTDOWN] = 1
            discarded = 0
            if immediate:
                discarded = s[_COUNT]
                s[_COUNT] = 0
                s[_UNFINISHED] = max(0, s[_UNFINISHED] - discarded)
                self._all_tasks_done.notify_all()
            self._not_empty.notify_all()
            self._not_full.notify_all()
        # The discarded items still fill the pipe, and their producers' feeders (and exits)
        # wait on it: take them out, giving up on those whose producer died.
        self._receive(discarded, time.monotonic())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # As the stdlib: wait until this process's feeder has written what it put into the pipe.
        self._q.close()
        self._q.join_thread()

    def info(self) -> dict[str, Any]:
        """Facts for ``queuekit info``."""
        self._check_open()
        with self._lock:
            count, unfinished, shut = (self._state[i] for i in (_COUNT, _UNFINISHED, _SHUTDOWN))
        return {
            "maxsize": self._maxsize,
            "qsize": count,
            "unfinished": unfinished,
            "shutdown": bool(shut),
            "serializer": self._serializer.name,
            "context": self._context or "any",
            "start_methods": list(self.capabilities.start_methods),
        }
