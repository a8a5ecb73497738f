"""A small base for backends: the calls that follow from the others, and argument checks.

Backends are free not to use it; the contract is :class:`queuekit.Queue`. What lives here is
only what would otherwise be written the same way in every backend.
"""

from __future__ import annotations

import os
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from typing_extensions import Self

from ._errors import QueueClosed

__all__ = [
    "QueueBase",
    "check_batch_fits",
    "check_max_items",
    "deadline",
    "drop_held",
    "forget_held_in_children",
    "load_batch",
    "remaining",
    "take_held",
]

T = TypeVar("T")


def deadline(block: bool, timeout: float | None) -> float | None:
    """The monotonic time a blocking call gives up, per the contract's case analysis.

    ``None`` means wait forever. A non-blocking call gets "now", so the caller tries once and
    gives up; its ``timeout`` is ignored. A negative timeout on a blocking call is refused.
    """
    if not block:
        return time.monotonic()
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number or None, not {timeout!r}")
    return time.monotonic() + timeout


def remaining(end: float | None) -> float | None:
    """Seconds left until ``end`` (never negative); ``None`` stays "forever"."""
    if end is None:
        return None
    return max(0.0, end - time.monotonic())


def check_max_items(max_items: int) -> None:
    if isinstance(max_items, bool) or not isinstance(max_items, int):
        raise TypeError(f"'max_items' must be an int, not {type(max_items).__name__}")
    if max_items < 1:
        raise ValueError(f"'max_items' must be at least 1, not {max_items}")


def check_batch_fits(count: int, maxsize: int) -> None:
    if 0 < maxsize < count:
        raise ValueError(
            f"a batch of {count} items can never fit a queue of maxsize={maxsize}; "
            f"split it into batches of at most {maxsize}"
        )


def load_batch(
    loads_many: Callable[[Sequence[Any]], list[T]],
    loads: Callable[[Any], T],
    payloads: Sequence[Any],
    held: deque[Any],
    count_done: Callable[[], None],
) -> list[T]:
    """The items of ``payloads`` (taken off the queue, front first), as ``get_many`` returns
    them when one of them may not load.

    ``get_many`` behaves as up to ``max_items`` calls of ``get`` that stop before the first
    one that would raise:

    * all load: they are returned;
    * the first does not: it counts as a task done (its taker never had an item to call
      ``task_done()`` for), the error propagates, and the payloads after it wait in
      ``held``;
    * a later one does not: the items before it are returned, and it waits in ``held``
      with the rest, front first, so that the next ``get`` meets it.

    ``held`` is the handle's own: its next calls take from it before the queue.
    """
    try:
        return loads_many(payloads)
    except Exception:
        if len(payloads) == 1:
            count_done()
            raise
    items: list[T] = []
    for n, data in enumerate(payloads):
        try:
            items.append(loads(data))
        except Exception:
            if n == 0:
                count_done()
                held.extendleft(reversed(payloads[1:]))
                raise
            held.extendleft(reversed(payloads[n:]))
            return items
    return items  # loads_many refused what loads takes one at a time: not a bad message


def take_held(held: deque[Any], max_items: int) -> list[Any]:
    """Up to ``max_items`` payloads from the front of ``held``, which other threads of the
    handle may be taking from at the same time."""
    taken: list[Any] = []
    try:
        while len(taken) < max_items:
            taken.append(held.popleft())
    except IndexError:  # another thread took the rest
        pass
    return taken


def drop_held(held: deque[Any]) -> int:
    """Empty ``held`` (as an immediate shutdown discards items); how many this call took."""
    dropped = 0
    try:
        while True:
            held.popleft()
            dropped += 1
    except IndexError:
        return dropped


_holding: weakref.WeakSet[Any] = weakref.WeakSet()


def forget_held_in_children(handle: Any) -> None:
    """Have a forked child's copy of ``handle`` start with an empty ``_held`` deque: the held
    payloads are the parent's, which the child must neither serve nor give back."""
    _holding.add(handle)


def _forget_held() -> None:
    for handle in list(_holding):
        handle._held = deque()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held)


class QueueBase(Generic[T]):
    """Derived calls of the contract, built on ``put``, ``get``, ``qsize`` and ``close``."""

    _closed: bool = False

    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosed(f"{self!r} is closed; open the queue again to keep using it")

    # These four are provided by the backend.
    @property
    def maxsize(self) -> int:
        raise NotImplementedError

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        raise NotImplementedError

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        raise NotImplementedError

    def qsize(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def put_nowait(self, item: T) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> T:
        return self.get(block=False)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        size = self.qsize()  # first, so a closed handle raises whatever its maxsize
        return 0 < self.maxsize <= size

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
