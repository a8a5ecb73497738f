"""Deliberately broken backends: each breaks one property of the contract.

Each is the reference ``memory://`` queue with one method changed, registered under the
scheme ``broken-NAME``. ``tests/test_conformance.py`` shows the conformance suite fails on
every one of them and names the property broken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import queuekit
from queuekit import Capabilities, QueueURL
from queuekit.backends.memory import MemoryQueue


class Lifo(MemoryQueue[Any]):
    def _get_encoded(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        taken = super()._get_encoded(max_items, block, timeout)
        with self._state.mutex:  # hand out the newest items instead of the oldest
            everything = taken + list(self._state.items)
            self._state.items.clear()
            self._state.items.extend(everything[: -len(taken)])
        return everything[-len(taken) :][::-1]


class IgnoresMaxsize(MemoryQueue[Any]):
    def _put_encoded(self, encoded: list[Any], block: bool, timeout: float | None) -> None:
        with self._state.mutex:
            self._state.items.extend(encoded)
            self._state.unfinished += len(encoded)
            self._state.not_empty.notify_all()


class UncheckedTaskDone(MemoryQueue[Any]):
    def task_done(self) -> None:
        with self._state.mutex:
            self._state.unfinished = max(0, self._state.unfinished - 1)
            self._state.all_tasks_done.notify_all()


class JoinReturnsAtOnce(MemoryQueue[Any]):
    def join(self, timeout: float | None = None) -> None:
        self._check_open()


class ShutdownWakesNobody(MemoryQueue[Any]):
    def shutdown(self, immediate: bool = False) -> None:
        with self._state.mutex:
            self._state.is_shutdown = True
            if immediate:
                self._state.unfinished -= len(self._state.items)
                self._state.items.clear()


class EarlyTimeout(MemoryQueue[Any]):
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return super().get(block, None if timeout is None else timeout / 3)


class QsizeOffByOne(MemoryQueue[Any]):
    def qsize(self) -> int:
        size = super().qsize()
        return size + 1 if size > 2 else size


class DropsItems(MemoryQueue[Any]):
    """Loses every 7th item put, silently."""

    _puts = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._puts += 1
        if self._puts % 7:
            super().put(item, block, timeout)


class GetManyTakesOne(MemoryQueue[Any]):
    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> Any:
        return super().get_many(1, block, timeout)


class PartialPutMany(MemoryQueue[Any]):
    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        for item in items:  # one at a time: a Full midway leaves half a batch behind
            self.put(item, block, timeout)


class EmptyAfterShutdown(MemoryQueue[Any]):
    def _get_encoded(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        try:
            return super()._get_encoded(max_items, block, timeout)
        except queuekit.ShutDown:
            raise queuekit.Empty from None


class ImmediateKeepsTasks(MemoryQueue[Any]):
    def shutdown(self, immediate: bool = False) -> None:
        with self._state.mutex:
            self._state.items.clear() if immediate else None
        super().shutdown(immediate=False)


class UsableAfterClose(MemoryQueue[Any]):
    def close(self) -> None:
        pass


class NegativeTimeoutWaits(MemoryQueue[Any]):
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return super().get(block, None if timeout is None else abs(timeout))


class SilentSerializationDrop(MemoryQueue[Any]):
    """Like the stdlib's feeder thread: an unpicklable item vanishes without an error."""

    def _encode(self, item: Any) -> Any:
        try:
            return super()._encode(item)
        except queuekit.SerializationError:
            return None

    def _put_encoded(self, encoded: list[Any], block: bool, timeout: float | None) -> None:
        super()._put_encoded([e for e in encoded if e is not None], block, timeout)


class ClaimsCrossProcess(MemoryQueue[Any]):
    """Says its handles work in child processes; they are copies that share nothing."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(cross_process=True, start_methods=("fork",), serializes=False)

    def __reduce__(self) -> Any:
        return (ClaimsCrossProcess, ())

    def _check_open(self) -> None:
        if self._closed:
            raise queuekit.QueueClosed("closed")


class SlowGet(MemoryQueue[Any]):
    """Wakes a blocked getter late: polls every two seconds instead of being notified."""

    def _get_encoded(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return super()._get_encoded(max_items, False, None)
            except queuekit.Empty:
                if not block or (end is not None and time.monotonic() >= end):
                    raise
            time.sleep(2.0)


class NewestProducerFirst(MemoryQueue[Any]):
    """Declares the default ordering="fifo", but gets serve the items of the thread that put
    last before anyone else's: each producer's own order is kept, the global one is not."""

    def _put_encoded(self, encoded: list[Any], block: bool, timeout: float | None) -> None:
        producer = threading.get_ident()
        super()._put_encoded([(producer, data) for data in encoded], block, timeout)

    def _get_encoded(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        taken = super()._get_encoded(max_items, block, timeout)
        with self._state.mutex:
            everything = taken + list(self._state.items)
            newest = everything[-1][0]
            order = sorted(range(len(everything)), key=lambda i: (everything[i][0] != newest, i))
            self._state.items.clear()
            self._state.items.extend(everything[i] for i in sorted(order[len(taken) :]))
        return [everything[i][1] for i in order[: len(taken)]]


class CloseHangs(MemoryQueue[Any]):
    """close() waits for good, like one that joins a helper thread that never ends."""

    def close(self) -> None:
        threading.Event().wait()


BROKEN: dict[str, type[MemoryQueue[Any]]] = {
    "lifo": Lifo,
    "ignores-maxsize": IgnoresMaxsize,
    "unchecked-task-done": UncheckedTaskDone,
    "join-returns-at-once": JoinReturnsAtOnce,
    "shutdown-wakes-nobody": ShutdownWakesNobody,
    "early-timeout": EarlyTimeout,
    "qsize-off-by-one": QsizeOffByOne,
    "drops-items": DropsItems,
    "get-many-takes-one": GetManyTakesOne,
    "partial-put-many": PartialPutMany,
    "empty-after-shutdown": EmptyAfterShutdown,
    "immediate-keeps-tasks": ImmediateKeepsTasks,
    "usable-after-close": UsableAfterClose,
    "negative-timeout-waits": NegativeTimeoutWaits,
    "silent-serialization-drop": SilentSerializationDrop,
    "claims-cross-process": ClaimsCrossProcess,
    "slow-get": SlowGet,
    "close-hangs": CloseHangs,
    "newest-producer-first": NewestProducerFirst,
}


def _opener(cls: type[MemoryQueue[Any]]) -> Any:
    def open_broken(url: QueueURL, **options: Any) -> MemoryQueue[Any]:
        return cls(url.location, **queuekit.bind_params(url, cls.PARAMS, options))

    return open_broken


def register_all() -> None:
    for name, cls in BROKEN.items():
        queuekit.register_backend(f"broken-{name}", _opener(cls), replace=True)


register_all()
