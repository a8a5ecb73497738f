"""What a queue shared by processes keeps beside its transport, under one lock.

An exact item count, the unfinished tasks, the shutdown flag, and condition variables whose
waiters may be in any process: everything of the contract except moving the bytes. A backend
(``mp://``, ``pipe://``) holds one :class:`ProcessSharedState` and passes it to child processes
inside its handle; backends never import each other, only this module.

A process killed while *waiting* (in ``get``, ``put`` or ``join``) is harmless. On Linux the lock
is a robust mutex in a private shared mapping (see :mod:`queuekit._shmsync`): a process killed
while holding it does not freeze the others; the next one to take it runs
:meth:`ProcessSharedState.repair` first. Elsewhere it is a ``multiprocessing`` lock, which a
process killed holding it leaves held for good.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import mmap
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.context import get_spawning_popen
from multiprocessing.reduction import DupFd
from multiprocessing.synchronize import Lock, Semaphore
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._base import QueueBase, check_batch_fits, deadline, remaining
from ._errors import Empty, Full, InvalidURL, JoinTimeout, QueueClosed, ShutDown
from ._protocol import Capabilities
from ._shmsync import (
    MUTEX_BYTES,
    UNAVAILABLE,
    mutex_at,
    mutex_init,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
)
from ._urls import Param, as_int, as_serializer

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

__all__ = [
    "PROCESS_PARAMS",
    "START_METHODS",
    "ProcessSharedState",
    "RobustLock",
    "SharedStateHandle",
    "as_context",
    "check_travel",
    "make_lock",
    "primitives_context",
    "start_methods_for",
]

T = TypeVar("T")

START_METHODS = ("fork", "spawn", "forkserver")

# Slots of the shared array; a subclass appends its own after FIRST_FREE.
COUNT, UNFINISHED, SHUTDOWN, _SLEEP_NOT_EMPTY, _SLEEP_NOT_FULL, _SLEEP_TASKS, _REPAIRS = range(7)
FIRST_FREE = 7

# Values of the SHUTDOWN slot.
GRACEFUL, IMMEDIATE = 1, 2

SPINS = 100
"""Tries to take the lock without sleeping, in :meth:`ProcessSharedState.acquire`."""


def as_context(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected a start method name, not {type(value).__name__}")
    available = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
    if value and value not in available:
        raise ValueError(f"expected one of {', '.join(available)}, or empty for any")
    return value


PROCESS_PARAMS = [
    Param("maxsize", as_int, 0, "most items held; 0 for unbounded"),
    Param("serializer", as_serializer, "pickle", "pickle, json, raw or an object with dumps/loads"),
    Param(
        "context",
        as_context,
        "",
        "start method of the processes sharing the queue: fork (fork-only locks), spawn, "
        "forkserver, or empty for any",
    ),
]
"""The parameters of every backend whose queue is shared by processes through this module."""


def start_methods_for(context: str) -> tuple[str, ...]:
    """The start methods under which a handle made for ``context`` travels, on this platform."""
    available = multiprocessing.get_all_start_methods()
    methods = ("fork",) if context == "fork" else START_METHODS
    return tuple(m for m in methods if m in available)


def primitives_context(context: str) -> BaseContext:
    """The context to make locks, semaphores and shared memory in, for ``context``."""
    if context:
        return multiprocessing.get_context(context)
    # The first method listed is the default; asking get_context() would fix it for the program.
    default = (
        multiprocessing.get_start_method(allow_none=True)
        or multiprocessing.get_all_start_methods()[0]
    )
    # Locks made for fork cannot be sent to spawn or forkserver children; named ones go anywhere.
    return multiprocessing.get_context("spawn" if default == "fork" else default)


def check_travel(handle: object, scheme: str, context: str, closed: bool) -> None:
    """Refuse to pickle ``handle`` unless it is going to a child process being started."""
    popen = get_spawning_popen()
    if popen is None:
        raise RuntimeError(
            f"a {scheme}:// queue handle cannot be pickled; pass it to the child as an argument "
            "of Process (Process(target=..., args=(queue,))), which shares it properly"
        )
    if closed:
        raise QueueClosed(f"{handle!r} is closed; pass an open handle to the child process")
    if context == "fork":
        method = getattr(popen, "method", "spawn")
        raise RuntimeError(
            f"this {scheme}:// queue was opened with context=fork, whose locks only fork children "
            f"can use; open it with context={method} (or no context) to pass it to a "
            f"{method} child"
        )


class RobustLock:
    """A robust, process-shared mutex alone in a private shared mapping (a ``memfd``).

    It goes to child processes of any start method, as a descriptor. When a holder dies, the
    next process to take it calls ``on_owner_dead`` (set by its owner, never sent to children)
    before anything else: what the dead one did under the lock may be unfinished.
    """

    on_owner_dead: Callable[[], None] | None

    def __init__(self) -> None:
        self._fd = os.memfd_create("queuekit-lock", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, MUTEX_BYTES)
            self._map()
            mutex_init(self._addr)
        except BaseException:
            os.close(self._fd)
            raise
        self.on_owner_dead = None

    def _map(self) -> None:
        self._mm = mmap.mmap(self._fd, MUTEX_BYTES)
        self._pin = ctypes.c_char.from_buffer(self._mm)  # the mutex is used by address
        self._addr = ctypes.addressof(self._pin)
        self.mutex = mutex_at(self._addr)

    def __getstate__(self) -> dict[str, Any]:
        return {"fd": DupFd(self._fd)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._fd = state["fd"].detach()
        os.set_inheritable(self._fd, False)
        self._map()
        self.on_owner_dead = None

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._fd)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        tried = mutex_trylock(self.mutex)
        if tried == errno.EBUSY and not block:
            return False
        self.locked(tried)
        return True

    def locked(self, tried: int) -> None:
        """Finish taking the mutex after a ``mutex_trylock`` that returned ``tried``."""
        # Held for microseconds by a process on another CPU: trying again for a while costs
        # less than sleeping in the kernel and being woken.
        spins = SPINS
        while tried == errno.EBUSY and spins:
            tried = mutex_trylock(self.mutex)
            spins -= 1
        if tried and mutex_lock(self.mutex, tried) and self.on_owner_dead is not None:
            self.on_owner_dead()

    def release(self) -> None:
        mutex_unlock(self.mutex)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        mutex_unlock(self.mutex)


def make_lock(ctx: BaseContext) -> RobustLock | Lock:
    """A :class:`RobustLock` where the platform has them, else a ``multiprocessing`` lock."""
    if not UNAVAILABLE and hasattr(os, "memfd_create"):
        return RobustLock()
    return ctx.Lock()


def view_of(array: ctypes.Array[Any]) -> memoryview:
    """The items of a ctypes array of integers, read and written at less cost than through
    the array (about 15 ns an access instead of 25)."""
    return memoryview(array).cast("B").cast(array._type_._type_)


class _Waiters:
    """A condition variable on the queue's lock, for waiters in any process.

    ``multiprocessing.Condition`` makes ``notify`` wait for each woken waiter to acknowledge,
    so a waiter killed while asleep blocks every later ``notify`` forever (with the lock held).
    Here ``notify`` only posts a semaphore; a dead waiter costs at most one spurious wake-up.
    Invariant, under the lock: sleepers + semaphore value + tokens taken but not yet returned
    under the lock == waiters inside ``wait``.
    """

    def __init__(
        self,
        ctx: BaseContext,
        lock: RobustLock | Lock,
        state: ctypes.Array[ctypes.c_int64],
        slot: int,
    ):
        self._lock = lock
        self._raw = state
        self._state = view_of(state)
        self._slot = slot
        self._sem: Semaphore = ctx.Semaphore(0)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_state"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state = view_of(self._raw)

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
        # Tokens first: a notifier killed half-way leaves sleepers counted (and woken again by
        # the repair), never sleepers uncounted whom nothing would wake.
        k = min(n, self._state[self._slot])
        for _ in range(k):
            self._sem.release()
        self._state[self._slot] -= k

    def notify_all(self) -> None:
        self.notify(self._state[self._slot])


class ProcessSharedState:
    """The contract's bookkeeping for a queue whose handles live in several processes.

    Methods named ``wait_for_*`` and ``added`` are called with :attr:`lock` held, so that a
    backend can move its bytes under the same lock; the others take the lock themselves.
    Subclasses refine what "room" means (:meth:`has_room`, :meth:`no_room`) and may check
    their transport while a putter waits (:meth:`probe`, every ``PROBE_EVERY`` seconds).
    """

    PROBE_EVERY: ClassVar[float | None] = None

    def __init__(self, maxsize: int, context: str | None, extra_slots: int = 0) -> None:
        try:
            self.context = as_context(context)
        except (TypeError, ValueError) as exc:
            raise InvalidURL(f"bad value {context!r} for 'context': {exc}") from None
        self.maxsize = maxsize
        ctx = primitives_context(self.context)
        self.lock = make_lock(ctx)
        self._raw = ctx.RawArray(ctypes.c_int64, FIRST_FREE + extra_slots)
        self.not_empty = _Waiters(ctx, self.lock, self._raw, _SLEEP_NOT_EMPTY)
        self.not_full = _Waiters(ctx, self.lock, self._raw, _SLEEP_NOT_FULL)
        self.all_tasks_done = _Waiters(ctx, self.lock, self._raw, _SLEEP_TASKS)
        self._link()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["slots"], state["release"], state["mutex"]  # remade in the child by _link
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._link()

    def _link(self) -> None:
        self.slots = view_of(self._raw)
        lock = self.lock
        self.release: Callable[[], object]
        self.mutex: Any = None
        if isinstance(lock, RobustLock):
            lock.on_owner_dead = self.repair
            self.mutex = lock.mutex
            self.release = functools.partial(mutex_unlock, lock.mutex)
        else:
            self.release = lock.release

    def repair(self) -> None:
        """Called with the lock just taken from a process that died holding it: make the state
        whole again. Here: wake every waiter, since the dead one may have owed wake-ups
        (waiters re-check, so a spurious one costs a look). Subclasses repair their transport
        first."""
        self.slots[_REPAIRS] += 1
        for waiters in (self.not_empty, self.not_full, self.all_tasks_done):
            waiters.notify_all()

    # --- With the lock held -------------------------------------------------------------

    def has_room(self, n: int, nbytes: int, since: float | None) -> bool:
        """Whether ``n`` items of ``nbytes`` fit now; ``since`` is when the put began to wait
        (``time.monotonic()``), None on its first look."""
        return not 0 < self.maxsize < self.slots[COUNT] + n

    def no_room(self, n: int, nbytes: int) -> Full:
        """The error for a putter whose deadline passed without room."""
        return Full()

    def probe(self) -> None:
        """Raise if the transport can no longer take what a waiting putter wants to send."""

    def acquire(self) -> None:
        """Take :attr:`lock` for a hot path (release it with :attr:`release`).

        It spins a little before sleeping: the holder, on another CPU, usually lets go within
        microseconds, and a sleep costs both processes a futex round trip and a wake-up.
        """
        mutex = self.mutex
        if mutex is not None:
            tried = mutex_trylock(mutex)
            if tried:
                self.lock.locked(tried)  # type: ignore[union-attr]
            return
        lock = self.lock
        try_lock = lock.acquire
        if try_lock(False):
            return
        for _ in range(SPINS):
            if try_lock(False):
                return
        try_lock()

    def wait_for_room(self, n: int, nbytes: int, block: bool, timeout: float | None) -> None:
        """Return once ``n`` items of ``nbytes`` in all fit; ``ShutDown`` or ``Full`` if not."""
        s = self.slots
        if s[SHUTDOWN]:
            raise ShutDown
        if 0 < self.maxsize < n:
            check_batch_fits(n, self.maxsize)
        end = None if block and timeout is None else deadline(block, timeout)
        since = None
        while not self.has_room(n, nbytes, since):
            wait = remaining(end)
            if wait == 0.0:
                raise self.no_room(n, nbytes)
            if since is None:
                since = time.monotonic()
            every = self.PROBE_EVERY
            if every is not None and (wait is None or wait > every):
                wait = every
            self.not_full.wait(wait)
            if s[SHUTDOWN]:
                raise ShutDown
            if every is not None:
                self.probe()

    def added(self, n: int) -> None:
        """Count ``n`` items in, as put; they can be claimed from now on."""
        s = self.slots
        # Unfinished first: a process killed between the two leaves a task that join() waits
        # for, as for an item a killed consumer held, never one that task_done() refuses.
        s[UNFINISHED] += n
        s[COUNT] += n
        if s[_SLEEP_NOT_EMPTY]:
            self.not_empty.notify(n)

    def wait_for_items(self, max_items: int, block: bool, timeout: float | None) -> int:
        """Claim between 1 and ``max_items`` items (how many is returned); ``Empty`` or
        ``ShutDown`` if none. The caller takes them from its transport, then wakes putters."""
        s = self.slots
        if s[SHUTDOWN] and not s[COUNT]:
            raise ShutDown
        end = None if block and timeout is None else deadline(block, timeout)
        while not s[COUNT]:
            wait = remaining(end)
            if wait == 0.0:
                raise Empty
            self.not_empty.wait(wait)
            if s[SHUTDOWN] and not s[COUNT]:
                raise ShutDown
        claimed = min(max_items, s[COUNT])
        s[COUNT] -= claimed
        return claimed

    def made_room(self) -> None:
        # All, not one: a waiting batch may need more room than one item frees.
        if self.slots[_SLEEP_NOT_FULL]:
            self.not_full.notify_all()

    # --- Taking the lock ----------------------------------------------------------------

    def reserve(self, n: int, block: bool, timeout: float | None) -> None:
        """Wait for room for ``n`` items and count them in; the caller sends them after."""
        self.acquire()
        try:
            self.wait_for_room(n, 0, block, timeout)
            self.added(n)
        finally:
            self.release()

    def claim(self, max_items: int, block: bool, timeout: float | None) -> int:
        """Claim items (see :meth:`wait_for_items`) and wake putters at once."""
        self.acquire()
        try:
            claimed = self.wait_for_items(max_items, block, timeout)
            self.made_room()
            return claimed
        finally:
            self.release()

    def qsize(self) -> int:
        with self.lock:
            return self.slots[COUNT]

    def is_shut_down(self) -> bool:
        with self.lock:
            return bool(self.slots[SHUTDOWN])

    def task_done(self) -> None:
        s = self.slots
        self.acquire()
        try:
            if s[UNFINISHED] <= 0:
                raise ValueError("task_done() called more times than there were items put")
            s[UNFINISHED] -= 1
            if not s[UNFINISHED]:
                self.all_tasks_done.notify_all()
        finally:
            self.release()

    def join(self, timeout: float | None) -> None:
        s = self.slots
        with self.lock:
            end = deadline(True, timeout)
            while s[UNFINISHED]:
                wait = remaining(end)
                if wait == 0.0:
                    raise JoinTimeout(f"join() timed out with {s[UNFINISHED]} unfinished tasks")
                self.all_tasks_done.wait(wait)

    def shutdown(self, immediate: bool) -> int:
        """Shut the queue down; the number of items an immediate shutdown discarded."""
        s = self.slots
        with self.lock:
            discarded = 0
            if immediate:
                s[SHUTDOWN] = IMMEDIATE
                discarded = s[COUNT]
                s[COUNT] = 0
                s[UNFINISHED] = max(0, s[UNFINISHED] - discarded)
                self.all_tasks_done.notify_all()
            elif not s[SHUTDOWN]:
                s[SHUTDOWN] = GRACEFUL
            self.not_empty.notify_all()
            self.not_full.notify_all()
            return discarded

    def snapshot(self) -> dict[str, Any]:
        """The shared facts, for a backend's ``info()``."""
        with self.lock:
            count, unfinished, shut, repairs = (
                self.slots[i] for i in (COUNT, UNFINISHED, SHUTDOWN, _REPAIRS)
            )
        return {
            "maxsize": self.maxsize,
            "qsize": count,
            "unfinished": unfinished,
            "shutdown": bool(shut),
            "repairs": repairs,
            "context": self.context or "any",
            "start_methods": list(start_methods_for(self.context)),
        }


class SharedStateHandle(QueueBase[T]):
    """A handle's calls that only consult the :class:`ProcessSharedState` in ``_shared``,
    and how a handle travels to a child process (as a ``Process`` argument, nothing else)."""

    SCHEME: ClassVar[str]
    _shared: ProcessSharedState

    def __getstate__(self) -> dict[str, Any]:
        check_travel(self, self.SCHEME, self._shared.context, self._closed)
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._closed = False

    def _capabilities(self, **more: Any) -> Capabilities:
        return Capabilities(
            qsize="exact",
            cross_process=True,
            start_methods=start_methods_for(self._shared.context),
            serializes=True,
            **more,
        )

    @property
    def maxsize(self) -> int:
        return self._shared.maxsize

    def qsize(self) -> int:
        self._check_open()
        return self._shared.qsize()

    def task_done(self) -> None:
        self._check_open()
        self._shared.task_done()

    def join(self, timeout: float | None = None) -> None:
        self._check_open()
        self._shared.join(timeout)
