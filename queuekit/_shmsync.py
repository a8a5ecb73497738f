"""A lock and wake-ups that live in shared memory and survive the death of any process.

The lock is a process-shared, *robust* POSIX mutex: when its holder dies, the kernel releases
it and the next locker is told so (``EOWNERDEAD``), so a process killed at any instant cannot
freeze the others. Taking a free one costs no system call.

Wake-ups are Linux futexes on 32-bit words of the mapping: a waiter sleeps until the word
changes, a waker changes it and wakes the sleepers. They hold no ownership and no named kernel
object, so a process killed while waiting leaves nothing behind. Where there are no futexes the
waiter polls the word instead, sleeping 50 microseconds at first and up to 5 milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import sys
import time
from typing import Any

__all__ = [
    "MUTEX_BYTES",
    "UNAVAILABLE",
    "WAKE_ALL",
    "futex_wait",
    "futex_wake",
    "mutex_at",
    "mutex_init",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
]

MUTEX_BYTES = 128
"""Room reserved for a ``pthread_mutex_t`` (40 bytes on x86-64 glibc, 48 on arm64)."""

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98}
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # without FUTEX_PRIVATE_FLAG: the words are shared
_PTHREAD_PROCESS_SHARED, _PTHREAD_MUTEX_ROBUST = 1, 1
WAKE_ALL = 0x7FFFFFFF


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load() -> tuple[Any, Any, str]:
    """libc twice (releasing the GIL, and keeping it for the calls that never block), or why
    not."""
    if not sys.platform.startswith("linux"):
        return None, None, f"shm:// needs Linux (robust shared mutexes); this is {sys.platform}"
    for short in ("", "c", "pthread"):  # the running program's symbols, usually enough
        name = ctypes.util.find_library(short) if short else None
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            held = ctypes.PyDLL(name, use_errno=True)
            lib.pthread_mutexattr_setrobust, lib.pthread_mutex_consistent  # noqa: B018
        except (OSError, AttributeError):
            continue
        return lib, held, ""
    return None, None, "shm:// needs a C library with robust process-shared mutexes"


_libc, _libc_held, UNAVAILABLE = _load()
"""Why this machine cannot run shm:// (empty when it can)."""
_sys_futex = _SYS_FUTEX.get(platform.machine().lower())

if _libc is not None:
    # No argtypes for the mutex calls: they take what mutex_at makes, which ctypes passes as
    # it is, at half the cost of converting an address on every call.
    for _lib in (_libc, _libc_held):
        for _fn in ("lock", "trylock", "unlock", "consistent", "init"):
            getattr(_lib, f"pthread_mutex_{_fn}").restype = ctypes.c_int
    _libc.syscall.restype = ctypes.c_long
    _libc.syscall.argtypes = [
        ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32,
    ]  # fmt: skip


def mutex_init(address: int) -> None:
    """Make a fresh robust, process-shared mutex at ``address`` (``MUTEX_BYTES`` of a shared
    mapping), before any other process maps it."""
    attr = ctypes.create_string_buffer(64)
    calls = [
        ("pthread_mutexattr_init", (attr,)),
        ("pthread_mutexattr_setpshared", (attr, _PTHREAD_PROCESS_SHARED)),
        ("pthread_mutexattr_setrobust", (attr, _PTHREAD_MUTEX_ROBUST)),
        ("pthread_mutex_init", (ctypes.c_void_p(address), attr)),
    ]
    for name, args in calls:
        result = getattr(_libc, name)(*args)
        if result:
            raise OSError(result, f"{name}: {os.strerror(result)}")
    _libc.pthread_mutexattr_destroy(attr)


def mutex_at(address: int) -> Any:
    """The mutex at ``address``, as the calls below take it (the mapping must outlive it)."""
    return ctypes.byref(ctypes.c_char.from_address(address))


# Taking a free mutex and releasing one never block, so these keep the GIL (and cost less).
mutex_trylock: Any = _libc_held.pthread_mutex_trylock if _libc_held is not None else None
"""``mutex_trylock(mutex)``: 0 when taken; otherwise pass the result to :func:`mutex_lock`."""
mutex_unlock: Any = _libc_held.pthread_mutex_unlock if _libc_held is not None else None


def mutex_lock(mutex: Any, tried: int = errno.EBUSY) -> bool:
    """Take the mutex, after ``mutex_trylock`` returned ``tried``. True when its previous
    holder died holding it: what that holder did under it may be unfinished."""
    result = _libc.pthread_mutex_lock(mutex) if tried == errno.EBUSY else tried
    if result == 0:
        return False
    if result == errno.EOWNERDEAD:
        _libc.pthread_mutex_consistent(mutex)
        return True
    raise OSError(result, f"cannot take the queue's lock: {os.strerror(result)}")


def futex_wait(address: int, expected: int, timeout: float | None) -> None:
    """Sleep while the 32-bit word at ``address`` holds ``expected``, at most ``timeout``
    seconds; it may return early (a wake-up, a signal, a changed word): re-check and repeat."""
    if _sys_futex is None:
        _poll(address, expected, timeout)
        return
    spec = None
    if timeout is not None:
        whole = int(timeout)
        spec = ctypes.byref(_Timespec(whole, int((timeout - whole) * 1e9)))
    _libc.syscall(_sys_futex, address, _FUTEX_WAIT, expected, spec, None, 0)


def futex_wake(address: int, count: int = WAKE_ALL) -> None:
    """Wake up to ``count`` of the processes and threads sleeping on the word at ``address``
    (every one by default)."""
    if _sys_futex is not None:
        _libc.syscall(_sys_futex, address, _FUTEX_WAKE, min(count, WAKE_ALL), None, None, 0)


def _poll(address: int, expected: int, timeout: float | None) -> None:
    word = ctypes.c_uint32.from_address(address)
    end = None if timeout is None else time.monotonic() + timeout
    pause = 50e-6
    while word.value == expected:
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            return
        time.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, 5e-3)
