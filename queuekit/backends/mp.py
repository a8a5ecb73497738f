"""``mp://``: the stdlib ``multiprocessing.Queue``'s behaviour, on a pipe that survives kills,
with the whole contract.

The items travel, as bytes, through one kernel pipe of the default size (see
:mod:`._mp_stream`). A put writes them at once when the pipe has room, and otherwise leaves them
to this process's feeder thread, as the stdlib does; and as with the stdlib, a process that put
items exits (or closes its handle) only once its feeder has written them, so joining a producer
whose feeder waits on a full pipe nobody reads hangs. What the stdlib lacks is kept beside the
pipe, under one shared lock: an exact count (so ``qsize`` is exact everywhere), unfinished
tasks, the shutdown flag, and wake-ups that cross processes.

Parameters: ``maxsize``, ``serializer``, and ``context``, the start method of the processes
that will share the queue. Left empty, the queue is made so its handle travels to children of
every start method; ``context=fork`` makes fork-only locks, which need no resource tracker.

Losses are bounded by what a killed process held: a producer, what it had put and not yet
written; a consumer, what it had claimed. An item is announced to the stream and counted before
its bytes are sent, so a getter that claims it waits for it, even with ``block=False``, past its
deadline by at most ``IN_FLIGHT_GRACE`` and only while the bytes can still come (a living
process has items announced and not written, or a frame is half written); otherwise it raises
``Empty`` (``ShutDown`` once shut down) and the item is lost. The stream and the counts beside it
survive any kill; a process killed while *waiting* (in get, put or join) is harmless.

A message the serializer cannot load is counted as a task done and its error raised. A
``get_many`` that meets one returns the items before it and keeps it and the rest in the
handle, as payloads, which its next gets take before the queue: they are not in ``qsize()``,
an immediate shutdown discards them as done, and ``close()`` puts them back at the back of the
queue (or raises :class:`~queuekit.QueueError`, saying to get them first, and stays open).
A process killed holding them loses them.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TypeVar

from .._base import (
    check_max_items,
    drop_held,
    forget_held_in_children,
    load_batch,
    take_held,
)
from .._errors import CorruptMessage, Empty, InvalidURL, QueueError, ShutDown
from .._procstate import (
    IMMEDIATE,
    PROCESS_PARAMS,
    SHUTDOWN,
    UNFINISHED,
    ProcessSharedState,
    SharedStateHandle,
)
from .._protocol import Capabilities
from .._serializers import Serializer, get_serializer, loads_many
from .._urls import Param, QueueURL, bind_params
from ._mp_stream import FramePipe

__all__ = ["IN_FLIGHT_GRACE", "MPQueue"]

T = TypeVar("T")

IN_FLIGHT_GRACE = 2.0
"""Seconds past its deadline a getter waits for an item it has claimed whose bytes are still on
their way (restarted by each piece of a large item that arrives)."""


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
        self._stream = FramePipe(self._shared.context)
        self._held: deque[bytes] = deque()
        """Payloads a get_many took and did not return, front first (see load_batch)."""

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_held"] = deque()  # this handle's own, not its copy's
        return state

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
        shared, n = self._shared, len(encoded)
        shared.acquire()
        try:
            shared.wait_for_room(n, 0, block, timeout)
            # Announced as they are counted, then sent: a getter that claims one of these
            # waits for its bytes while this process lives (and not while it waits for room).
            self._stream.announce(n)
            shared.added(n)
        finally:
            shared.release()
        self._stream.send(encoded)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if self._held and (taken := self._take_held(1)):
            data = taken[0]
        else:
            data = self._get_encoded(1, block, timeout)[0]
        try:
            item: T = self._serializer.loads(data)
        except Exception:
            self._tasks_done()
            raise
        return item

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        check_max_items(max_items)
        if not (self._held and (payloads := self._take_held(max_items))):
            payloads = self._get_encoded(max_items, block, timeout)
        try:
            return loads_many(self._serializer, payloads)
        except Exception:
            pass  # a message that will not load: load_batch starts over and sorts it out
        try:
            return load_batch(
                self._loads_many, self._serializer.loads, payloads, self._held, self._tasks_done
            )
        finally:
            if self._held:
                forget_held_in_children(self)

    def _loads_many(self, payloads: Sequence[bytes]) -> list[T]:
        return loads_many(self._serializer, payloads)

    def _tasks_done(self, n: int = 1) -> None:
        """``n`` tasks are done: messages that will not load, or payloads a handle dropped
        (never below zero: task_done() may have run ahead of get())."""
        shared = self._shared
        s = shared.slots
        with shared.lock:
            s[UNFINISHED] = max(0, s[UNFINISHED] - n)
            if not s[UNFINISHED]:
                shared.all_tasks_done.notify_all()

    def _take_held(self, max_items: int) -> list[bytes]:
        """Up to ``max_items`` of the payloads this handle holds, front first."""
        self._check_open()
        if self._shared.slots[SHUTDOWN] == IMMEDIATE:
            self._drop_held()
            raise ShutDown
        return take_held(self._held, max_items)

    def _drop_held(self) -> None:
        """Discard the payloads this handle holds, as done, as an immediate shutdown does."""
        if dropped := drop_held(self._held):
            self._tasks_done(dropped)

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
        """Up to ``claimed`` messages from the pipe; fewer only if they were lost with a
        process that died (counted done when the stream knows: a void frame)."""
        received: list[bytes] = []
        lost = 0
        foreign: CorruptMessage | None = None
        late_since: float | None = None
        while len(received) + lost < claimed:
            now = time.monotonic()
            # Until the deadline; past it, short looks (see below); without one, a grace at a time.
            late = end is not None and now >= end
            until = now + 0.05 if late else end or now + IN_FLIGHT_GRACE
            payloads, void, bad = self._stream.receive(claimed - len(received) - lost, until)
            received += payloads
            lost += void
            foreign = foreign or bad
            if payloads or void or bad:
                late_since = None  # patience restarts with each message
                continue
            if end is None:
                if self._shared.is_shut_down():
                    break
                continue
            # Past the deadline: wait on, up to the grace, only for items that may still come;
            # the grace restarts with each piece of a large item.
            now = time.monotonic()
            late_since = late_since or now
            if now < max(late_since, self._stream.moved) + IN_FLIGHT_GRACE and (
                self._stream.in_flight()
            ):
                continue
            if self._stream.abandon():
                lost += 1
            break
        if lost:
            self._tasks_done(lost)
        if foreign is not None:
            # Bytes that were never an item: raise them, and serve the items from the handle.
            self._held.extend(received)
            forget_held_in_children(self)
            raise foreign
        return received

    def shutdown(self, immediate: bool = False) -> None:
        self._check_open()
        discarded = self._shared.shutdown(immediate)
        # The discarded items still fill the pipe, and their producers' feeders (and exits)
        # wait on it: take them out, giving up on those whose producer died.
        with contextlib.suppress(CorruptMessage):
            self._receive(discarded, time.monotonic())
        if immediate:
            self._drop_held()

    def close(self) -> None:
        if self._closed:
            return
        if self._held:
            self._give_back()
        self._closed = True
        # As the stdlib: wait until this process's feeder has written what it put into the pipe.
        self._stream.flush()
        self._stream.close_fds()

    def _give_back(self) -> None:
        shared, held = self._shared, list(self._held)
        s, n = shared.slots, len(held)
        shared.acquire()
        try:
            if s[SHUTDOWN] == IMMEDIATE:
                discard = True
            else:
                discard = False
                shared.wait_for_room(n, 0, False, None)
                self._stream.announce(n)
                shared.added(n)
                s[UNFINISHED] -= n  # got, and unfinished already
        except Exception as exc:
            raise QueueError(
                f"mp://: this handle holds {n} items that a get_many took after a message that "
                f"would not load, and cannot put them back ({exc!r:.200}); get them first (get "
                "or get_many on this handle), then close it. The handle is still open"
            ) from exc
        finally:
            shared.release()
        if discard:
            self._drop_held()
            return
        # Counted first, sent after, as a put.
        self._stream.send(held)
        self._held.clear()

    def info(self) -> dict[str, Any]:
        """Facts for ``queuekit info``."""
        self._check_open()
        return {
            **self._shared.snapshot(),
            **self._stream.facts(),
            "serializer": self._serializer.name,
        }
