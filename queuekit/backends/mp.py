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
stdlib documentation warns: later gets with a timeout raise ``Empty`` after the grace, and one
without waits for good. The counts beside the pipe survive any kill (a robust lock, see
:mod:`queuekit._procstate`). A process killed while *waiting* (in get, put or join) is harmless.
"""

from __future__ import annotations

import queue as _stdlib_queue
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._base import check_max_items
from .._errors import Empty, InvalidURL, ShutDown
from .._procstate import (
    PROCESS_PARAMS,
    ProcessSharedState,
    SharedStateHandle,
    primitives_context,
)
from .._protocol import Capabilities
from .._serializers import Serializer, get_serializer
from .._urls import Param, QueueURL, bind_params

if TYPE_CHECKING:
    from multiprocessing.queues import Queue as StdlibQueue

__all__ = ["IN_FLIGHT_GRACE", "MPQueue"]

T = TypeVar("T")

IN_FLIGHT_GRACE = 2.0
"""Seconds a getter waits for an item it has claimed but whose bytes are still on their way."""


class MPQueue(SharedStateHandle[T]):
    SCHEME = "mp"
    PARAMS: ClassVar[list[Param]] = list(PROCESS_PARAMS)

    def __init__(
        self,
        *,
        maxsize: int = 0,
        serializer: Serializer | str = "pickle",
        context: str | None = None,
    ) -> None:
        self._shared = ProcessSharedState(maxsize, context)
        self._serializer = get_serializer(serializer)
        self._q: StdlibQueue[bytes] = primitives_context(self._shared.context).Queue()

    @classmethod
    def from_url(cls, url: QueueURL, **options: Any) -> MPQueue[Any]:
        if url.location or url.path or url.username is not None or url.password is not None:
            raise InvalidURL(
                f"{url}: mp:// takes no host, name or path; write mp:// with parameters only, "
                "as in mp://?maxsize=100"
            )
        return cls(**bind_params(url, cls.PARAMS, options))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"maxsize={self.maxsize}"
        return f"<MPQueue mp:// {state}>"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities(ordering="per-producer-fifo")

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self._put_encoded([self._serializer.dumps(item)], block, timeout)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        self._put_encoded([self._serializer.dumps(item) for item in items], block, timeout)

    def _put_encoded(self, encoded: list[bytes], block: bool, timeout: float | None) -> None:
        self._check_open()
        self._shared.reserve(len(encoded), block, timeout)
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
        start = time.monotonic()
        claimed = self._shared.claim(max_items, block, timeout)
        # The call's deadline, for the patience with claimed items still on their way.
        end = None if block and timeout is None else start + (timeout if block and timeout else 0)
        received = self._receive(claimed, end)
        if not received:
            raise ShutDown if self._shared.is_shut_down() else Empty
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
                if end is None and not self._shared.is_shut_down():
                    continue
                break
        return received

    def shutdown(self, immediate: bool = False) -> None:
        self._check_open()
        discarded = self._shared.shutdown(immediate)
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
        return {**self._shared.snapshot(), "serializer": self._serializer.name}
