"""``memory://[NAME]``: in one process, thread-safe; the reference implementation.

Handles opened with the same NAME share one queue for as long as any open handle holds it;
no NAME gives a private queue. Items are handed over by reference unless ``serializer=`` is
given, which makes the queue copy them as a cross-process backend would (useful to catch
unpicklable items in tests before moving to ``mp://``).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

from .._base import QueueBase, check_batch_fits, check_max_items, deadline, remaining
from .._errors import Empty, Full, InvalidURL, JoinTimeout, QueueClosed, ShutDown
from .._protocol import Capabilities
from .._serializers import Serializer
from .._urls import Param, QueueURL, as_int, as_serializer, bind_params

__all__ = ["MemoryQueue"]

T = TypeVar("T")


def _optional_serializer(value: object) -> Serializer | None:
    if value is None or value == "none":
        return None
    return as_serializer(value)


class _State:
    """One queue, shared by every handle that names it."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: deque[Any] = deque()
        self.mutex = threading.Lock()
        self.not_empty = threading.Condition(self.mutex)
        self.not_full = threading.Condition(self.mutex)
        self.all_tasks_done = threading.Condition(self.mutex)
        self.unfinished = 0
        self.is_shutdown = False

    def room(self) -> int:
        return self.maxsize - len(self.items) if self.maxsize > 0 else 1 << 62


_named: weakref.WeakValueDictionary[str, _State] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()


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

    def __init__(
        self, name: str = "", *, maxsize: int = 0, serializer: Serializer | str | None = None
    ) -> None:
        self._name = name
        self._maxsize = maxsize
        self._serializer = _optional_serializer(serializer)
        self._pid = os.getpid()
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
        super()._check_open()
        if os.getpid() != self._pid:
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

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self._check_open()
        self._put_encoded([self._encode(item)], block, timeout)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        self._check_open()
        self._put_encoded([self._encode(item) for item in items], block, timeout)

    def _put_encoded(self, encoded: list[Any], block: bool, timeout: float | None) -> None:
        self._check_open()
        s = self._state
        with s.not_full:
            if s.is_shutdown:
                raise ShutDown
            check_batch_fits(len(encoded), s.maxsize)
            end = deadline(block, timeout)
            while s.room() < len(encoded):
                wait = remaining(end)
                if wait == 0.0:
                    raise Full
                s.not_full.wait(wait)
                if s.is_shutdown:
                    raise ShutDown
            s.items.extend(encoded)
            s.unfinished += len(encoded)
            if encoded:
                s.not_empty.notify(len(encoded))

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        data: T = self._decode(self._get_encoded(1, block, timeout)[0])
        return data

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        self._check_open()
        check_max_items(max_items)
        return [self._decode(data) for data in self._get_encoded(max_items, block, timeout)]

    def _get_encoded(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        self._check_open()
        s = self._state
        with s.not_empty:
            if s.is_shutdown and not s.items:
                raise ShutDown
            end = deadline(block, timeout)
            while not s.items:
                wait = remaining(end)
                if wait == 0.0:
                    raise Empty
                s.not_empty.wait(wait)
                if s.is_shutdown and not s.items:
                    raise ShutDown
            taken = [s.items.popleft() for _ in range(min(max_items, len(s.items)))]
            # Every waiting putter re-checks: a batch that still does not fit must not absorb
            # the wake-up a single put could have used.
            s.not_full.notify_all()
            return taken

    def qsize(self) -> int:
        self._check_open()
        return len(self._state.items)

    def task_done(self) -> None:
        self._check_open()
        s = self._state
        with s.all_tasks_done:
            if s.unfinished <= 0:
                raise ValueError("task_done() called more times than there were items put")
            s.unfinished -= 1
            if s.unfinished == 0:
                s.all_tasks_done.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self._check_open()
        s = self._state
        with s.all_tasks_done:
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
