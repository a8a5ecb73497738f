"""The queue contract: what every queuekit backend does, stated once.

The meaning is that of CPython 3.13's :class:`queue.Queue`, extended to batches and to
transports that cross processes and hosts. ``docs/semantics.md`` says the same in prose; the
conformance suite in :mod:`queuekit.testing` checks it.

Every blocking call follows one case analysis, in this order:

* The handle was closed: :class:`~queuekit.QueueClosed`, whatever the arguments.
* The queue was shut down: :class:`~queuekit.ShutDown` wins over :class:`~queuekit.Full` and
  :class:`~queuekit.Empty` (puts always; gets once nothing is left to drain).
* ``block`` is false: act now or raise ``Full``/``Empty`` at once; ``timeout`` is ignored,
  even a negative one.
* ``block`` is true and ``timeout`` is None: wait as long as it takes.
* ``block`` is true and ``timeout`` is a number: a negative number is a :class:`ValueError`;
  otherwise wait at most ``timeout`` seconds, then raise ``Full``/``Empty``. A shutdown during
  the wait wakes the caller with ``ShutDown``.

Timeouts are measured on a monotonic clock; a waiter may return somewhat after its deadline
(scheduling, a lock held by another caller), never before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, TypeVar, runtime_checkable

from typing_extensions import Self

__all__ = ["Capabilities", "Queue"]

T = TypeVar("T")


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees beyond the core contract.

    The conformance suite reads these and checks each claim; it never relaxes the core
    contract because of them.
    """

    qsize: Literal["exact", "approximate"] = "exact"
    """``exact``: ``qsize()`` is the number of items put and not yet got whenever no call is in
    flight. ``approximate``: it may lag a call that has returned, and settles within a second."""

    ordering: Literal["fifo", "per-producer-fifo"] = "fifo"
    """``fifo``: one global order. ``per-producer-fifo``: items from one producer (a thread, or a
    process) come out in the order it put them; items of different producers may interleave in
    any order consistent with that."""

    cross_process: bool = False
    """The handle can be passed to a child process and used from both sides."""

    start_methods: tuple[str, ...] = ()
    """The multiprocessing start methods under which a handle travels to a child."""

    cross_host: bool = False
    """Processes on different machines can share the queue (opening the same URL)."""

    durable: bool = False
    """Items survive the loss of every handle and of the transport's process (a server restart)."""

    serializes: bool = True
    """Items are serialized on ``put``: a get returns an equal copy, not the same object, and an
    unserializable item is refused by ``put``. A backend that hands over references (the
    in-process ``memory://`` default) says ``False``."""

    max_message_size: int | None = None
    """The largest serialized item the backend can ever accept, in bytes (None: no fixed limit)."""


@runtime_checkable
class Queue(Protocol[T]):
    """A FIFO queue of items of type ``T`` with task tracking, shutdown and batches.

    A queue object is a *handle*: several handles (in other threads, processes or hosts,
    depending on :attr:`capabilities`) can refer to one queue. ``close()`` ends a handle;
    ``shutdown()`` ends the queue for every handle.
    """

    @property
    def maxsize(self) -> int:
        """The most items the queue holds; ``0`` (or less) means unbounded."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this backend guarantees; see :class:`Capabilities`."""
        ...

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` at the back of the queue.

        Raises :class:`~queuekit.Full` when no room appears in time (see the module docstring
        for block/timeout). The item is serialized in the caller before the queue changes: an
        item that cannot be serialized raises :class:`~queuekit.SerializationError` and one
        that can never fit raises :class:`~queuekit.MessageTooLarge`, both leaving the queue
        unchanged. Each item put counts as one unfinished task until ``task_done()``.
        """
        ...

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return the item at the front of the queue.

        Raises :class:`~queuekit.Empty` when no item appears in time. After ``shutdown()``
        items left in the queue are still returned; once it is empty, :class:`~queuekit.ShutDown`.

        A message that will not load (:class:`~queuekit.CorruptMessage`, such as
        :class:`~queuekit.AuthenticationError`, or whatever the serializer's ``loads`` raised)
        is taken off the queue, quarantined where the backend can (its bytes in the error's
        ``data``; ``redis://`` keeps them in a dead-letter list), counted as a task done (there
        was no item to call ``task_done()`` for), and its error raised. The next ``get`` serves
        the next message.
        """
        ...

    def put_nowait(self, item: T) -> None:
        """``put(item, block=False)``."""
        ...

    def get_nowait(self) -> T:
        """``get(block=False)``."""
        ...

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put every item of ``items``, in order, all or nothing.

        * All or nothing: every item is serialized first; then the call waits (per block and
          timeout) until there is room for the whole batch at once, and enqueues it. On
          ``Full``, ``ShutDown``, ``SerializationError`` or ``MessageTooLarge`` nothing was
          enqueued.
        * A batch longer than a bounded queue's ``maxsize`` can never fit: ``ValueError`` at
          once, telling the caller to split it.
        * Order: the items keep their relative order. Items put concurrently by other
          producers may land between them; a batch is not guaranteed to be contiguous.
        * An empty batch enqueues nothing and returns at once (it still raises on a closed
          handle or a shut-down queue).
        """
        ...

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        """Remove and return between 1 and ``max_items`` items, front first.

        Waits (per block and timeout) only for the first item; then takes whatever else is
        there, up to ``max_items``, without waiting further. Never returns an empty list:
        raises ``Empty`` like ``get`` instead, and ``ShutDown`` once a shut-down queue is
        drained. ``max_items < 1`` is a ``ValueError``. Every item returned is one unfinished
        task that needs its own ``task_done()``.

        A message that will not load (see ``get``): the call behaves as up to ``max_items``
        gets that stop before the first that would raise. The items before it are returned;
        if it comes first, it is handled as by ``get`` and its error raised. Either way it,
        and the messages taken after it, wait in order for the next gets: at the front of the
        queue where the backend can put them back there, otherwise in this handle, whose next
        gets take them before the queue (they are not in ``qsize()``).
        """
        ...

    def qsize(self) -> int:
        """The number of items in the queue (see ``Capabilities.qsize`` for how exact)."""
        ...

    def empty(self) -> bool:
        """``qsize() == 0`` at the moment of asking; a put or get may change it at once."""
        ...

    def full(self) -> bool:
        """``0 < maxsize <= qsize()`` at the moment of asking."""
        ...

    def task_done(self) -> None:
        """Mark one item got earlier as processed, releasing ``join()`` when none are left.

        ``ValueError`` when called more times than items were put. Works after ``shutdown()``.
        """
        ...

    def join(self, timeout: float | None = None) -> None:
        """Wait until every item ever put has been marked with ``task_done()``.

        ``timeout`` None waits as long as it takes; a number waits at most that long and
        raises :class:`~queuekit.JoinTimeout` (a ``TimeoutError``) if tasks remain, so an
        unfinished pipeline cannot pass for a finished one. Negative: ``ValueError``.
        """
        ...

    def shutdown(self, immediate: bool = False) -> None:
        """Shut the queue down for every handle.

        Further puts raise ``ShutDown``; blocked putters and getters wake (putters with
        ``ShutDown``; getters take a remaining item or raise ``ShutDown``). Gets drain what is
        left, then raise ``ShutDown``. With ``immediate=True`` the remaining items are removed
        and each counts as done (releasing ``join()`` if nothing else is pending), so gets
        raise ``ShutDown`` at once. Calling it again is allowed; ``immediate`` can still
        discard what a graceful shutdown left. There is no way back.
        """
        ...

    def close(self) -> None:
        """Release this handle's resources. Idempotent.

        Every later call on this handle raises :class:`~queuekit.QueueClosed`. Other handles,
        and the items in the queue, are not affected (contrast ``shutdown()``). Messages this
        handle holds (see ``get_many``) go back to the queue first, at the back; if they
        cannot (a full or shut-down queue), :class:`~queuekit.QueueError` says to get them
        first, and the handle stays open.
        """
        ...

    def __enter__(self) -> Self:
        """Return the handle itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """``close()`` the handle."""
        ...
