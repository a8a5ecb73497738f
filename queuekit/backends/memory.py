"""``memory://[NAME]``: in one process, thread-safe; the reference implementation.

Handles opened with the same NAME share one queue for as long as any open handle holds it;
no NAME gives a private queue. Items are handed over by reference unless ``serializer=`` is
given, which makes the queue copy them as a cross-process backend would (useful to catch
unpicklable items in tests before moving to ``mp://``).

A message the serializer cannot load is counted as a task done and its error raised. A
``get_many`` that meets one returns the items before it; it and the rest go back to the front
of the queue, in order, in one step (after an immediate shutdown they are discarded and
counted done instead), so the next ``get`` meets it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat, starmap
from typing import Any, ClassVar, TypeVar

from .._base import (
    QueueBase,
    check_batch_fits,
    check_max_items,
    deadline,
    load_batch,
    remaining,
)
from .._errors import Empty, Full, InvalidURL, JoinTimeout, QueueClosed, ShutDown
from .._protocol import Capabilities
from .._serializers import Serializer, dumps_many, loads_many
from .._urls import Param, QueueURL, as_int, as_serializer, bind_params

__all__ = ["MemoryQueue"]

T = TypeVar("T")

# Forks seen by this process. A handle remembers the count it was opened at, so every call can
# tell a child's inherited copy from the original without a getpid() system call.
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if sys.platform != "win32":
    os.register_at_fork(after_in_child=_count_fork)


def _optional_serializer(value: object) -> Serializer | None:
    if value is None or value == "none":
        return None
    return as_serializer(value)


class _Sleepers:
    """Threads asleep under a mutex until notified: ``threading.Condition``'s scheme, except
    that ``asleep`` holds only the threads not notified yet. A Condition keeps a thread it woke
    on its list until that thread runs again, so a producer that goes on putting meanwhile
    would pay for a notify that wakes nobody on every put."""

    def __init__(self, mutex: threading.Lock) -> None:
        self.mutex = mutex
        self.asleep: deque[threading.Lock] = deque()

    def wait(self, timeout: float | None) -> None:
        """With ``mutex`` held: release it, sleep until notified or ``timeout`` seconds (None:
        forever) have passed, and take it again."""
        waiter = threading.Lock()
        waiter.acquire()
        self.asleep.append(waiter)
        self.mutex.release()
        woken = False
        try:
            woken = waiter.acquire(
                True, -1 if timeout is None else min(timeout, threading.TIMEOUT_MAX)
            )
        finally:
            self.mutex.acquire()
            if not woken:
                with contextlib.suppress(ValueError):  # notified as it gave up: the caller
                    self.asleep.remove(waiter)  # re-checks before it gives up for good

    def notify(self, n: int = 1) -> None:
        asleep = self.asleep
        while asleep and n > 0:
            asleep.popleft().release()
            n -= 1

    def notify_all(self) -> None:
        self.notify(len(self.asleep))


class _State:
    """One queue, shared by every handle that names it. A call notifies only where ``asleep``
    shows someone to wake."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.bound = maxsize if maxsize > 0 else sys.maxsize
        self.items: deque[Any] = deque()
        self.mutex = threading.Lock()
        self.not_empty = _Sleepers(self.mutex)
        self.not_full = _Sleepers(self.mutex)
        self.all_tasks_done = _Sleepers(self.mutex)
        self.wide_putters = 0
        """Putters asleep waiting for room for more than one item."""
        self.unfinished = 0
        self.is_shutdown = False
        self.discards = False
        """Shut down with immediate=True: items given back are discarded."""

    def wait_for_room(self, need: int, block: bool, timeout: float | None) -> None:
        """With ``mutex`` held: return once ``need`` more items fit, or raise."""
        end = deadline(block, timeout)
        while self.bound - len(self.items) < need:
            wait = remaining(end)
            if wait == 0.0:
                raise Full
            self.wide_putters += need > 1
            try:
                self.not_full.wait(wait)
            finally:
                self.wide_putters -= need > 1
            if self.is_shutdown:
                raise ShutDown

    def wait_for_items(self, block: bool, timeout: float | None) -> None:
        """With ``mutex`` held: return once there is an item to take, or raise."""
        if self.is_shutdown and not self.items:
            raise ShutDown
        end = deadline(block, timeout)
        while not self.items:
            wait = remaining(end)
            if wait == 0.0:
                raise Empty
            self.not_empty.wait(wait)
            if self.is_shutdown and not self.items:
                raise ShutDown

    def count_done(self, n: int = 1) -> None:
        """With ``mutex`` held: ``n`` tasks are done (never below zero: task_done() may have
        run ahead of get())."""
        self.unfinished = max(0, self.unfinished - n)
        if not self.unfinished and self.all_tasks_done.asleep:
            self.all_tasks_done.notify_all()

    def made_room(self, freed: int) -> None:
        """With ``mutex`` held, after taking ``freed`` items while putters sleep."""
        if self.wide_putters:
            # Every putter re-checks: a batch that still does not fit must not absorb the
            # wake-up a single put could have used.
            self.not_full.notify_all()
        else:
            self.not_full.notify(freed)


_named: weakref.WeakValueDictionary[str, _State] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()

# What put and get inline for speed; a subclass overriding any of them gets put and get built
# on these methods instead, so its change applies to every call.
_HOOKS = ("_check_open", "_encode", "_decode", "_put_encoded", "_get_encoded")


class MemoryQueue(QueueBase[T]):
    PARAMS: ClassVar[list[Param]] = [
        Param("maxsize", as_int, 0, "most items held; 0 for unbounded"),
        Param(
            "serializer",
            _optional_serializer,
            None,
            "none (hand over references), pickle, json, raw or an object with dumps/loads",
        ),
    ]
    _plain: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plain = all(getattr(cls, hook) is getattr(MemoryQueue, hook) for hook in _HOOKS)

    def __init__(
        self, name: str = "", *, maxsize: int = 0, serializer: Serializer | str | None = None
    ) -> None:
        self._name = name
        self._maxsize = maxsize
        self._serializer = _optional_serializer(serializer)
        self._closed = False
        self._born = _forks
        if not name:
            self._state = _State(maxsize)
            return
        with _named_lock:
            state = _named.get(name)
            if state is None:
                state = _named[name] = _State(maxsize)
            elif state.maxsize != maxsize:
                raise InvalidURL(
                    f"memory://{name} is open already with maxsize={state.maxsize}; "
                    f"open it with the same maxsize, not {maxsize}"
                )
        self._state = state

    @classmethod
    def from_url(cls, url: QueueURL, **options: Any) -> MemoryQueue[Any]:
        if url.path not in ("", "/") or url.username is not None:
            raise InvalidURL(f"{url}: memory:// takes only a name, as memory://NAME")
        return cls(url.location, **bind_params(url, cls.PARAMS, options))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"maxsize={self.maxsize}"
        return f"<MemoryQueue memory://{self._name} {state}>"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a memory:// queue lives in one process and cannot be pickled; "
            "use mp://, pipe:// or shm:// to share a queue between processes"
        )

    def _check_open(self) -> None:
        if self._closed or self._born != _forks:
            super()._check_open()
            raise QueueClosed(
                "a memory:// queue was used in a process other than the one that opened it; "
                "it does not cross processes: use mp://, pipe:// or shm://"
            )

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(serializes=self._serializer is not None)

    def _encode(self, item: Any) -> Any:
        return item if self._serializer is None else self._serializer.dumps(item)

    def _decode(self, data: Any) -> Any:
        return data if self._serializer is None else self._serializer.loads(data)

    # put and get are _put_encoded and _get_encoded for one item, written out: the method
    # calls, list and checks they save are most of what a single call costs.
    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        if self._closed or self._born != _forks or not self._plain:
            self._check_open()
            self._put_encoded([self._encode(item)], block, timeout)
            return
        data: Any = item if self._serializer is None else self._serializer.dumps(item)
        s = self._state
        with s.mutex:
            if s.is_shutdown:
                raise ShutDown
            # A timeout goes the waiting way even with room, which refuses a negative one.
            if timeout is not None or len(s.items) >= s.bound:
                s.wait_for_room(1, block, timeout)
            s.items.append(data)
            s.unfinished += 1
            if s.not_empty.asleep:
                s.not_empty.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if self._closed or self._born != _forks or not self._plain:
            self._check_open()
            data = self._get_encoded(1, block, timeout)[0]
            try:
                item: T = self._decode(data)
            except Exception:
                self._count_done()
                raise
            return item
        s = self._state
        with s.mutex:
            if timeout is not None or not s.items:
                s.wait_for_items(block, timeout)
            data = s.items.popleft()
            if s.not_full.asleep:
                s.made_room(1)
        if self._serializer is None:
            item = data
            return item
        try:
            item = self._serializer.loads(data)
        except Exception:
            self._count_done()
            raise
        return item

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        self._check_open()
        if not self._plain:
            encoded = [self._encode(item) for item in items]
        elif self._serializer is None:
            encoded = list(items)
        else:
            encoded = dumps_many(self._serializer, list(items))
        self._put_encoded(encoded, block, timeout)

    def _put_encoded(self, encoded: list[Any], block: bool, timeout: float | None) -> None:
        s = self._state
        with s.mutex:
            if s.is_shutdown:
                raise ShutDown
            check_batch_fits(len(encoded), s.maxsize)
            if timeout is not None or s.bound - len(s.items) < len(encoded):
                s.wait_for_room(len(encoded), block, timeout)
            s.items.extend(encoded)
            s.unfinished += len(encoded)
            if s.not_empty.asleep and encoded:
                s.not_empty.notify(len(encoded))

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        self._check_open()
        check_max_items(max_items)
        taken = self._get_encoded(max_items, block, timeout)
        if self._plain:
            if self._serializer is None:
                return taken
            try:
                return loads_many(self._serializer, taken)
            except Exception:
                pass  # a message that will not load: load_batch starts over and sorts it out
        rest: deque[Any] = deque()
        try:
            return load_batch(self._decode_many, self._decode, taken, rest, self._count_done)
        finally:
            if rest:
                self._give_back(rest)

    def _decode_many(self, taken: Sequence[Any]) -> list[T]:
        if not self._plain:
            return [self._decode(data) for data in taken]
        assert self._serializer is not None
        return loads_many(self._serializer, taken)

    def _count_done(self) -> None:
        s = self._state
        with s.mutex:
            s.count_done()

    def _give_back(self, rest: deque[Any]) -> None:
        """Put what a get_many took and did not return back at the front of the queue."""
        s = self._state
        with s.mutex:
            if s.discards:
                s.count_done(len(rest))
                return
            s.items.extendleft(reversed(rest))
            if s.not_empty.asleep:
                s.not_empty.notify(len(rest))

    def _get_encoded(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        s = self._state
        with s.mutex:
            if timeout is not None or not s.items:
                s.wait_for_items(block, timeout)
            items = s.items
            if max_items >= len(items):
                taken = list(items)
                items.clear()
            else:
                taken = list(starmap(items.popleft, repeat((), max_items)))
            if s.not_full.asleep:
                s.made_room(len(taken))
            return taken

    def qsize(self) -> int:
        self._check_open()
        return len(self._state.items)

    def task_done(self) -> None:
        self._check_open()
        s = self._state
        with s.mutex:
            if s.unfinished <= 0:
                raise ValueError("task_done() called more times than there were items put")
            s.count_done()

    def join(self, timeout: float | None = None) -> None:
        self._check_open()
        s = self._state
        with s.mutex:
            end = deadline(True, timeout)
            while s.unfinished:
                wait = remaining(end)
                if wait == 0.0:
                    raise JoinTimeout(f"join() timed out with {s.unfinished} unfinished tasks")
                s.all_tasks_done.wait(wait)

    def shutdown(self, immediate: bool = False) -> None:
        self._check_open()
        s = self._state
        with s.mutex:
            s.is_shutdown = True
            if immediate:
                s.discards = True
                s.unfinished = max(0, s.unfinished - len(s.items))
                s.items.clear()
                s.all_tasks_done.notify_all()
            s.not_empty.notify_all()
            s.not_full.notify_all()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Dropping the state lets a named queue go once its last handle closes.
            self._state = _State(0)
