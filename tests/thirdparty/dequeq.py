"""``deque://``: a third-party backend that implements :class:`queuekit.Queue` from scratch.

It subclasses nothing of queuekit's and imports only its public names, so it shows what an
outside author needs. Self-contained on purpose: the entry-point test copies this file alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from typing_extensions import Self

import queuekit
from queuekit import Capabilities, Empty, Full, JoinTimeout, QueueClosed, QueueURL, ShutDown

PARAMS = [queuekit.Param("maxsize", queuekit.as_int, 0, "most items held; 0 for unbounded")]


class DequeQueue:
    def __init__(self, maxsize: int = 0) -> None:
        self._maxsize = maxsize
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._unfinished = 0
        self._shut = False
        self._closed = False

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(serializes=False)

    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosed("this deque:// handle is closed; open a new one")

    @staticmethod
    def _deadline(block: bool, timeout: float | None) -> float | None:
        if not block:
            return time.monotonic()
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError("timeout must be non-negative or None")
        return time.monotonic() + timeout

    def _wait(self, end: float | None, error: type[Exception]) -> None:
        """Wait for a change until ``end``; raise ``error`` if none came in time."""
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            raise error
        self._changed.wait(left)

    def _take(self) -> Any:
        # The one step tests/thirdparty/lifo.py breaks on purpose.
        return self._items.popleft()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.put_many([item], block, timeout)

    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        self._check_open()
        batch = list(items)
        with self._lock:
            if self._shut:
                raise ShutDown
            if 0 < self._maxsize < len(batch):
                raise ValueError(f"a batch of {len(batch)} never fits maxsize={self._maxsize}")
            end = self._deadline(block, timeout)
            while 0 < self._maxsize < len(self._items) + len(batch):
                self._wait(end, Full)
                if self._shut:
                    raise ShutDown
            self._items.extend(batch)
            self._unfinished += len(batch)
            self._changed.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.get_many(1, block, timeout)[0]

    def get_many(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[Any]:
        self._check_open()
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        with self._lock:
            if self._shut and not self._items:
                raise ShutDown
            end = self._deadline(block, timeout)
            while not self._items:
                if self._shut:
                    raise ShutDown
                self._wait(end, Empty)
            taken = [self._take() for _ in range(min(max_items, len(self._items)))]
            self._changed.notify_all()
            return taken

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def qsize(self) -> int:
        self._check_open()
        return len(self._items)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return 0 < self._maxsize <= self.qsize()

    def task_done(self) -> None:
        self._check_open()
        with self._lock:
            if self._unfinished == 0:
                raise ValueError("task_done() called more times than items were put")
            self._unfinished -= 1
            self._changed.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self._check_open()
        with self._lock:
            end = self._deadline(True, timeout)
            while self._unfinished:
                self._wait(end, JoinTimeout)

    def shutdown(self, immediate: bool = False) -> None:
        self._check_open()
        with self._lock:
            self._shut = True
            if immediate:
                # task_done() may have run ahead of get(): never count below zero.
                self._unfinished = max(0, self._unfinished - len(self._items))
                self._items.clear()
            self._changed.notify_all()

    def close(self) -> None:
        self._closed = True

    def info(self) -> dict[str, Any]:
        return {"unfinished_tasks": self._unfinished, "shut_down": self._shut}

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ``url`` is positional-only, as in queuekit.Opener, so that mypy accepts it there.
def open_queue(url: QueueURL, /, **options: Any) -> DequeQueue:
    if url.location or url.path:
        raise queuekit.InvalidURL(f"{url}: deque:// takes no name; every open is a new queue")
    return DequeQueue(**queuekit.bind_params(url, PARAMS, options))
