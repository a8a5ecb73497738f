"""``shm://[NAME]``: a ring buffer in shared memory, for processes on one Linux machine.

Lifecycle:

* ``shm://`` (no NAME) makes a new private queue on every open. Its memory has no name at all
  (an unlinked ``/dev/shm`` file): nothing can leak, even when every process is killed, and it
  reaches other processes only as a handle passed to ``multiprocessing.Process`` (fork, spawn
  or forkserver). It is freed when the last process holding a handle closes it or exits.
* ``shm://NAME`` names ``/dev/shm/queuekit-NAME`` (owner-only, mode 0600). With the default
  ``create=auto`` the first open creates it and later opens, in any process, attach to it;
  ``create=new`` insists on creating it, ``create=never`` on attaching. A named queue persists,
  with its items, until :meth:`ShmQueue.unlink` (or the module's :func:`unlink`) removes the
  name; handles open then keep working on it, and the next open of the name makes a new queue.
  There is no resource tracker involved, on any Python version.

The items are frames in one ring (8-byte header: the payload's length, and its CRC-32 with
``checksum=true``; a payload is split in two where it wraps around). The queue has two robust
locks, one for each end: putters take the put lock, which guards the tail and the count of
items ever put; getters take the get lock, which guards the head and the counts of items got
and tasks done. So a putter and a getter never wait for each other. Each end's state is
written in two copies, the current one chosen by the parity of a version word written after
them: a put writes its frames into free space and then the tail; a get copies frames out and
then the head. Calls that need both ends at once (waiting, ``qsize``, ``join``, ``shutdown``)
take both locks, the put lock first. A process killed at any instant leaves each end's state
from before or after its call, never a torn frame, and the kernel releases its locks.

On x86 a putter reads the head (and a getter the tail) without the other lock, as the last
version committed, and only when what it saw before is not enough: the head only grows, so an
old one only understates the room, and the processor keeps the other end's copying and its
commit in order. Elsewhere those reads take both locks.

What a killed process can lose: the items of a put it was inside (all or none of a batch, and
none are visible before they all are), and the items it had got, in a get that was returning
or held for processing. Items it got but had not marked with ``task_done()`` stay unfinished,
so ``join()`` without a timeout would wait for them forever. A wake-up it was about to send
when killed is made up by the waiters themselves within half a second. One killed while asleep
in a call stays in the count of sleepers: each later change at the other end then makes one
wake-up system call more than it needs (slower, never wrong).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import re
import secrets
import struct
import zlib
from collections.abc import Iterable
from multiprocessing.context import get_spawning_popen
from multiprocessing.reduction import DupFd
from typing import Any, ClassVar, TypeVar

from .._base import QueueBase, check_batch_fits, check_max_items, deadline, remaining
from .._errors import (
    BackendUnavailable,
    CorruptMessage,
    Empty,
    Full,
    InvalidURL,
    JoinTimeout,
    MessageTooLarge,
    QueueClosed,
    ShutDown,
)
from .._protocol import Capabilities
from .._serializers import Serializer, dumps_many, get_serializer, loads_many
from .._shmsync import (
    MUTEX_BYTES,
    UNAVAILABLE,
    WAKE_ALL,
    futex_wait,
    futex_wake,
    mutex_at,
    mutex_init,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
)
from .._urls import Param, QueueURL, as_bool, as_int, as_serializer, as_size, bind_params

__all__ = ["DEFAULT_CAPACITY", "SHM_DIR", "ShmQueue", "unlink"]

T = TypeVar("T")

SHM_DIR = "/dev/shm"
PREFIX = "queuekit-"
DEFAULT_CAPACITY = 16 * 1024 * 1024
MIN_CAPACITY = 64
MAX_CAPACITY = 1 << 40
SLICE = 0.5
"""The longest a waiter sleeps before it looks at the queue again by itself."""
LOCK_SPINS = 50
"""How many more times a caller tries a busy lock before it sleeps in the kernel for it."""
SPINS = 100
"""How many times a get that finds the queue empty looks for an item before it sleeps."""
_ORDERED = platform.machine().lower() in ("x86_64", "amd64")
"""Whether one end's committed state can be read without its lock (see above)."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
_START_METHODS = ("fork", "spawn", "forkserver")

# --- The segment's layout ---------------------------------------------------------------------
_MAGIC = b"queuekit-shm\x00\x00\x00\x00"
_VERSION = 2
_CHECKSUM = 1  # flag
_HEADER = struct.Struct("<16sIIQq")  # magic, version, flags, capacity, maxsize
_PUT_MUTEX_AT, _GET_MUTEX_AT = 128, 256
# Each end's state on cache lines of its own, so that the two ends write to different lines.
# The put end: two copies of (tail, items ever put), then the version that chooses one; the
# not-empty counter, bumped by every put (getters sleep on its low 32 bits, a futex word);
# how many sleep on it; shutdown. Tail and head are byte positions that only grow.
_PUT_AT = 512
_PUTS = struct.Struct("<6Q2I")
_PUT_COPIES = struct.Struct("<5Q")  # the copies and the version, for a reader without the lock
_NOT_EMPTY_AT = _PUT_AT + 40
# The get end: two copies of (head, items ever got, tasks done), the version; the not-full
# counter and the tasks counter (bumped when none are left); the sleepers on each.
_GET_AT = 640
_GETS = struct.Struct("<9Q2I")
_GET_COPIES = struct.Struct("<7Q")
_NOT_FULL_AT, _TASKS_AT = _GET_AT + 56, _GET_AT + 64
_SHUTDOWN_AT = _PUT_AT + 52
_SLEEPERS_AT = {_NOT_EMPTY_AT: _PUT_AT + 48, _NOT_FULL_AT: _GET_AT + 72, _TASKS_AT: _GET_AT + 76}
assert _GET_MUTEX_AT + MUTEX_BYTES <= _PUT_AT
assert _PUT_AT + _PUTS.size <= _GET_AT
_WORD = struct.Struct("<Q")
_SLEEPERS = struct.Struct("<I")
_DATA_AT = 4096
_FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload (0 without checksums)
_MAX_FRAME = 0xFFFFFFFF
_PADS = [bytes(-k & 7) for k in range(8)]  # the zeros after a payload, by its length's last bits
_MASK32 = 0xFFFFFFFF


def _pad(n: int) -> int:
    return (n + 7) & ~7


class _Segment:
    """One mapping of a queue's shared memory, and the calls on its layout."""

    __slots__ = (
        "addr",
        "capacity",
        "checksum",
        "data_end",
        "fd",
        "get_mutex",
        "gets_seen",
        "head_seen",
        "maxsize",
        "mm",
        "name",
        "pin",
        "put_mutex",
        "tail_seen",
    )
    addr: int
    capacity: int
    checksum: bool
    data_end: int
    fd: int
    get_mutex: Any
    gets_seen: int
    head_seen: int
    maxsize: int
    mm: mmap.mmap
    name: str
    pin: ctypes.c_char
    put_mutex: Any
    tail_seen: int

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        size = os.fstat(fd).st_size
        shown = f"shm://{name}" if name else "a private shm:// queue"
        if size < _DATA_AT + MIN_CAPACITY:
            raise InvalidURL(
                f"{shown}: {_path(name)} is not a queuekit shm:// segment (only {size} bytes); "
                "remove it (queuekit.backends.shm.unlink) or choose another name"
            )
        self.mm = mmap.mmap(fd, size)
        magic, version, flags, capacity, maxsize = _HEADER.unpack_from(self.mm, 0)
        if magic != _MAGIC or version != _VERSION or _DATA_AT + capacity > size:
            self.mm.close()
            raise InvalidURL(
                f"{shown}: {_path(name)} is not a queuekit shm:// segment of this version; "
                "remove it (queuekit.backends.shm.unlink) or choose another name"
            )
        self.capacity = capacity
        self.maxsize = maxsize
        self.checksum = bool(flags & _CHECKSUM)
        self.data_end = _DATA_AT + capacity
        # The mutexes and the futex words are used by address; a view pins the mapping.
        self.pin = ctypes.c_char.from_buffer(self.mm)
        self.addr = ctypes.addressof(self.pin)
        self.put_mutex = mutex_at(self.addr + _PUT_MUTEX_AT)
        self.get_mutex = mutex_at(self.addr + _GET_MUTEX_AT)
        # What this process last saw of the other end: never ahead of it, as both only grow.
        self.tail_seen = self.head_seen = self.gets_seen = 0

    @staticmethod
    def initialize(fd: int, capacity: int, maxsize: int, checksum: bool) -> None:
        # Reserved now: a ring that outgrew a full /dev/shm would crash a put with SIGBUS.
        try:
            os.posix_fallocate(fd, 0, _DATA_AT + capacity)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                raise
            raise BackendUnavailable(
                f"{SHM_DIR} has no room for a shm:// queue of capacity={capacity} "
                f"({exc.strerror}); choose a smaller capacity, or free or enlarge {SHM_DIR}"
            ) from None
        with mmap.mmap(fd, _DATA_AT) as mm:
            flags = _CHECKSUM if checksum else 0
            _HEADER.pack_into(mm, 0, _MAGIC, _VERSION, flags, capacity, maxsize)
            pin = ctypes.c_char.from_buffer(mm)
            for at in (_PUT_MUTEX_AT, _GET_MUTEX_AT):
                mutex_init(ctypes.addressof(pin) + at)
            del pin

    # Locks ---------------------------------------------------------------------------------

    def take(self, mutex: Any, tried: int = -1) -> None:
        """Take ``mutex`` (``tried``: what a ``mutex_trylock`` of it just returned, if one did)."""
        trylock = mutex_trylock
        if tried == -1:
            tried = trylock(mutex)
        # Held only for a microsecond or so: trying again for a while is cheaper than sleeping
        # (and being woken) in the kernel.
        spins = LOCK_SPINS
        while tried == errno.EBUSY and spins:
            tried = trylock(mutex)
            spins -= 1
        if tried and mutex_lock(mutex, tried):
            # Its holder died, maybe between a change and the wake-ups it owed: pay them.
            for at in (_NOT_EMPTY_AT,) if mutex is self.put_mutex else (_NOT_FULL_AT, _TASKS_AT):
                self.bump(at)
                futex_wake(self.addr + at)

    def take_both(self) -> None:
        self.take(self.put_mutex)
        self.take(self.get_mutex)

    def release_both(self) -> None:
        mutex_unlock(self.get_mutex)
        mutex_unlock(self.put_mutex)

    # Each end's state, under its lock ----------------------------------------------------------

    def put_end(self) -> tuple[tuple[int, ...], int, int, int]:
        """The put end's words, then its tail, items put and shutdown."""
        words = _PUTS.unpack_from(self.mm, _PUT_AT)
        tail, puts = words[2:4] if words[4] & 1 else words[:2]
        return words, tail, puts, words[7]

    def get_end(self) -> tuple[tuple[int, ...], int, int, int]:
        """The get end's words, then its head, items got and tasks done."""
        words = _GETS.unpack_from(self.mm, _GET_AT)
        head, gets, done = words[3:6] if words[6] & 1 else words[:3]
        return words, head, gets, done

    def commit_put(self, words: tuple[int, ...], tail: int, puts: int, shutdown: int) -> None:
        """Make (tail, puts) the put end's state and tell the getters. The current copy is
        written again unchanged, so that one write does it all in order: the copies, then the
        version, then the not-empty word."""
        t0, p0, t1, p1, version, seq, sleepers, _ = words
        if version & 1:
            t0, p0 = tail, puts
        else:
            t1, p1 = tail, puts
        _PUTS.pack_into(self.mm, _PUT_AT, t0, p0, t1, p1, version + 1, seq + 1, sleepers, shutdown)

    def commit_get(
        self, words: tuple[int, ...], head: int, gets: int, done: int, tell: bool, tasks: bool
    ) -> None:
        """Make (head, gets, done) the get end's state; ``tell`` the putters (the not-full
        word) and the joiners (``tasks``)."""
        h0, g0, d0, h1, g1, d1, version, not_full, tasks_seq, full_sleepers, task_sleepers = words
        if version & 1:
            h0, g0, d0 = head, gets, done
        else:
            h1, g1, d1 = head, gets, done
        _GETS.pack_into(
            self.mm, _GET_AT, h0, g0, d0, h1, g1, d1, version + 1,
            not_full + tell, tasks_seq + tasks, full_sleepers, task_sleepers,
        )  # fmt: skip

    # The other end, without its lock -----------------------------------------------------------

    def see_tail(self) -> int:
        """The tail as last committed (getters), without the put lock where that is safe."""
        if _ORDERED:
            mm = self.mm
            while True:  # until no commit came between reading the version and the copies
                version = _WORD.unpack_from(mm, _PUT_AT + 32)[0]
                t0, _, t1, _, again = _PUT_COPIES.unpack_from(mm, _PUT_AT)
                if version == again:
                    self.tail_seen = t1 if version & 1 else t0
                    break
        return self.tail_seen

    def see_head(self) -> None:
        """The head and items got as last committed (putters), without the get lock where
        that is safe."""
        if _ORDERED:
            mm = self.mm
            while True:
                version = _WORD.unpack_from(mm, _GET_AT + 48)[0]
                h0, g0, _, h1, g1, _, again = _GET_COPIES.unpack_from(mm, _GET_AT)
                if version == again:
                    self.head_seen, self.gets_seen = (h1, g1) if version & 1 else (h0, g0)
                    return

    def puts_seen(self) -> int:
        """Items put, as last committed, or 0 where that cannot be read without the lock."""
        if not _ORDERED:
            return 0
        mm = self.mm
        while True:
            version = _WORD.unpack_from(mm, _PUT_AT + 32)[0]
            _, p0, _, p1, again = _PUT_COPIES.unpack_from(mm, _PUT_AT)
            if version == again:
                return int(p1 if version & 1 else p0)

    def fits(self, tail: int, puts: int, need: int, count: int) -> bool:
        """Whether ``count`` items of ``need`` bytes fit, by what this process has seen of the
        get end."""
        return tail + need - self.head_seen <= self.capacity and not (
            0 < self.maxsize < puts - self.gets_seen + count
        )

    def shut_seen(self) -> int:
        """Whether the queue is shut down, read without the put lock (set once, never unset)."""
        return int(_SLEEPERS.unpack_from(self.mm, _SHUTDOWN_AT)[0])

    def room(self, tail: int, puts: int, need: int, count: int) -> bool:
        """``fits``, looking at the get end again when what was seen is short."""
        if self.fits(tail, puts, need, count):
            return True
        self.see_head()
        return _ORDERED and self.fits(tail, puts, need, count)

    # Waiting -------------------------------------------------------------------------------

    def spin(self, head: int, block: bool, timeout: float | None) -> bool:
        """Whether the tail passes ``head`` within a short watch (without the put lock, where
        that is safe), for a get that may wait: cheaper than sleeping and being woken, when
        items come steadily."""
        if _ORDERED and block and (timeout is None or timeout > 0) and not self.shut_seen():
            for _ in range(SPINS):
                if self.see_tail() > head:
                    return True
                os.sched_yield()  # to whoever is about to put, where the processors are busy
        return False

    def bump(self, at: int) -> None:
        """Tell the sleepers on the futex word at ``at`` that something changed."""
        _WORD.pack_into(self.mm, at, _WORD.unpack_from(self.mm, at)[0] + 1)

    def sleep(self, at: int, timeout: float | None) -> None:
        """Holding both locks: release them, sleep until the futex word at ``at`` changes (or
        ``timeout``), take them again. Sleepers are counted, so a change with none costs no
        system call."""
        mm, count_at = self.mm, _SLEEPERS_AT[at]
        expected = _WORD.unpack_from(mm, at)[0] & _MASK32
        _SLEEPERS.pack_into(mm, count_at, _SLEEPERS.unpack_from(mm, count_at)[0] + 1)
        self.release_both()
        try:
            futex_wait(self.addr + at, expected, SLICE if timeout is None else min(timeout, SLICE))
        finally:
            self.take_both()
            # Never below 0: a count left by a sleeper that was killed is not paid back.
            sleepers = _SLEEPERS.unpack_from(mm, count_at)[0]
            _SLEEPERS.pack_into(mm, count_at, max(sleepers - 1, 0))

    def wake(self, at: int, count: int = WAKE_ALL) -> None:
        futex_wake(self.addr + at, count)

    def tell_everyone(self, shut: bool = False, drain: bool = False) -> None:
        """Wake every sleeper, after marking the queue shut down (and emptying it, each item
        counting as done) when asked."""
        self.take_both()
        try:
            put_words, tail, puts, was_shut = self.put_end()
            words, head, gets, done = self.get_end()
            self.commit_put(put_words, tail, puts, 1 if shut else was_shut)
            if drain:
                done += min(puts - gets, puts - done)
                head, gets = tail, puts
            self.commit_get(words, head, gets, done, True, True)
        finally:
            self.release_both()
        for at in (_NOT_EMPTY_AT, _NOT_FULL_AT, _TASKS_AT):
            self.wake(at)

    # Frames --------------------------------------------------------------------------------

    def write(self, pos: int, payload: bytes, crc: int) -> int:
        """Write a frame at byte position ``pos``; the position after it."""
        _FRAME.pack_into(self.mm, _DATA_AT + pos % self.capacity, len(payload), crc)
        self.write_span(pos + 8, payload)
        return pos + 8 + _pad(len(payload))

    def write_span(self, pos: int, data: bytes) -> int:
        """Write ``data`` at byte position ``pos``, going on at the start of the ring where it
        reaches the end; the position after it."""
        mm, at = self.mm, _DATA_AT + pos % self.capacity
        first = self.data_end - at
        if len(data) <= first:
            mm[at : at + len(data)] = data
        else:
            view = memoryview(data)
            mm[at : self.data_end] = view[:first]
            mm[_DATA_AT : _DATA_AT + len(data) - first] = view[first:]
        return pos + len(data)

    def read(self, pos: int, limit: int) -> tuple[bytes, int, int]:
        """The frame at ``pos`` (payload, CRC, position after it); the frame must end by
        ``limit`` (the tail), or the ring is damaged."""
        mm, cap = self.mm, self.capacity
        at = pos % cap
        length, crc = _FRAME.unpack_from(mm, _DATA_AT + at)
        after = pos + 8 + _pad(length)
        if after > limit:
            raise CorruptMessage(
                f"the shm:// ring is damaged: a frame of {length} bytes at position {pos} "
                f"runs past the last one written ({limit}). Something other than queuekit wrote "
                "into the segment; shut the queue down and make a new one"
            )
        start = _DATA_AT + (at + 8) % cap
        end = start + length
        if end <= self.data_end:
            return mm[start:end], crc, after
        first = self.data_end - start
        return mm[start : self.data_end] + mm[_DATA_AT : _DATA_AT + length - first], crc, after

    def frames(self, pos: int, limit: int, max_items: int) -> tuple[list[bytes], list[int], int]:
        """Up to ``max_items`` frames from ``pos`` (at least one is there), reading the tail
        again when ``limit`` is reached; their payloads, CRCs, and the position after them."""
        mm, cap, data_end, unpack_frame = self.mm, self.capacity, self.data_end, _FRAME.unpack_from
        frames: list[bytes] = []
        crcs: list[int] = []
        add_frame, add_crc = frames.append, crcs.append
        left = max_items
        while left:
            if pos >= limit and pos >= (limit := self.see_tail()):
                break
            # The usual case, written out: whole frames up to the tail or the ring's end.
            start = at = _DATA_AT + pos % cap
            stop = min(data_end, at + limit - pos)
            while at < stop:
                n, crc = unpack_frame(mm, at)
                after = at + 8 + ((n + 7) & ~7)
                if after > stop:
                    break
                add_frame(mm[at + 8 : at + 8 + n])
                add_crc(crc)
                at = after
                left -= 1
                if not left:
                    break
            pos += at - start
            if left and at < stop:  # a frame that wraps around the end (or a damaged one)
                data, crc, pos = self.read(pos, limit)
                add_frame(data)
                add_crc(crc)
                left -= 1
        return frames, crcs, pos


_HEADERS = [_FRAME.pack(n, 0) for n in range(1024)]
"""The headers of small frames without checksums, made once."""


def _lay_out(frames: list[bytes], crcs: list[int] | None) -> bytes:
    """Frames as the ring holds them, one after the other: made outside the lock, copied into
    the ring at once under it."""
    parts: list[bytes] = []
    add, pads = parts.extend, _PADS
    if crcs is None:
        header, headers = _FRAME.pack, _HEADERS
        for data in frames:
            n = len(data)
            add((headers[n] if n < 1024 else header(n, 0), data, pads[n & 7]))
    else:
        for data, crc in zip(frames, crcs, strict=True):
            add((_FRAME.pack(len(data), crc), data, pads[len(data) & 7]))
    return b"".join(parts)


def _path(name: str) -> str:
    return f"{SHM_DIR}/{PREFIX}{name}"


def _new_file(capacity: int, maxsize: int, checksum: bool, name: str = "") -> int:
    """A new, initialized segment: its descriptor. A private one (no ``name``) never has a
    name; a named one is made under a temporary name and linked to ``name`` only once
    initialized, so that no process ever attaches to one half made. ``FileExistsError`` when
    ``name`` is taken."""
    fd = -1
    if not name:
        with contextlib.suppress(AttributeError, OSError):
            fd = os.open(SHM_DIR, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    temporary = _path(f"{name or 'private'}.{secrets.token_hex(6)}.tmp")
    if fd < 0:
        try:
            fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise BackendUnavailable(
                f"shm:// needs {SHM_DIR}, a shared-memory file system, which this machine lacks"
            ) from None
    else:
        temporary = ""
    try:
        os.fchmod(fd, 0o600)  # exactly, whatever the umask
        _Segment.initialize(fd, capacity, maxsize, checksum)
        if name:
            os.link(temporary, _path(name))
    except BaseException:
        os.close(fd)
        raise
    finally:
        if temporary:
            os.unlink(temporary)
    return fd


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidURL(
            f"shm://{name}: a queue name is 1 to 200 letters, digits, '_', '.' or '-', not "
            "starting with '.' or '-'"
        )


def _as_create(value: object) -> str:
    if value in ("auto", "new", "never"):
        return str(value)
    raise ValueError("expected auto (attach or create), new (create only) or never (attach only)")


def _capacity(value: object) -> int:
    size = as_size(value)
    if not MIN_CAPACITY <= size <= MAX_CAPACITY:
        raise ValueError(f"expected a size from {MIN_CAPACITY} to {MAX_CAPACITY} bytes (1 TiB)")
    return _pad(size)  # frames are 8-byte aligned


class ShmQueue(QueueBase[T]):
    PARAMS: ClassVar[list[Param]] = [
        Param("maxsize", as_int, 0, "most items held; 0 for unbounded"),
        Param(
            "capacity",
            _capacity,
            DEFAULT_CAPACITY,
            "bytes of the ring; the largest item is 8 bytes less",
        ),
        Param(
            "serializer", as_serializer, "pickle", "pickle, json, raw or an object with dumps/loads"
        ),
        Param(
            "create",
            _as_create,
            "auto",
            "auto (attach to NAME, or create it), new (create only), never (attach only)",
        ),
        Param(
            "checksum",
            as_bool,
            False,
            "store a CRC-32 of every item and check it when it is got (costs time, see docs)",
        ),
    ]
    # Settings of the queue itself: given when attaching, they must match what it has.
    _SETTINGS = ("maxsize", "capacity", "checksum")

    def __init__(
        self,
        name: str = "",
        *,
        maxsize: int | None = None,
        capacity: int | None = None,
        serializer: Serializer | str = "pickle",
        create: str = "auto",
        checksum: bool | None = None,
        _fd: int | None = None,
    ) -> None:
        if UNAVAILABLE:
            raise BackendUnavailable(UNAVAILABLE)
        self._serializer = get_serializer(serializer)
        self._dumps = self._serializer.dumps
        self._loads = self._serializer.loads
        self._seg: _Segment | None = None
        if capacity is not None:
            capacity = _capacity(capacity)
        if _fd is not None:
            try:
                self._seg = _Segment(_fd, name)
            except BaseException:
                os.close(_fd)
                raise
        else:
            if name:
                _check_name(name)
            elif create == "never":
                raise InvalidURL("shm:// with create=never needs a NAME to attach to")
            wanted = {"maxsize": maxsize, "capacity": capacity, "checksum": checksum}
            self._seg = self._open(name, create, wanted)
        seg = self._seg
        self._max_item = min(seg.capacity - 8, _MAX_FRAME)

    @staticmethod
    def _open(name: str, create: str, wanted: dict[str, Any]) -> _Segment:
        def make() -> int:
            return _new_file(
                wanted["capacity"] or DEFAULT_CAPACITY,
                wanted["maxsize"] or 0,
                bool(wanted["checksum"]),
                name,
            )

        if not name:
            return _Segment(make(), "")
        while True:
            if create != "new":
                try:
                    fd = os.open(_path(name), os.O_RDWR | os.O_CLOEXEC)
                except PermissionError:
                    raise InvalidURL(
                        f"shm://{name}: {_path(name)} belongs to another user (queues are "
                        "owner-only); choose another name"
                    ) from None
                except FileNotFoundError:
                    if create == "never":
                        raise InvalidURL(
                            f"shm://{name} does not exist ({_path(name)} is missing) and "
                            "create=never: open it with create=auto, or create it first"
                        ) from None
                else:
                    try:
                        seg = _Segment(fd, name)
                    except BaseException:
                        os.close(fd)
                        raise
                    _check_settings(seg, wanted)
                    return seg
            try:
                return _Segment(make(), name)
            except FileExistsError:
                pass
            if create == "new":
                raise InvalidURL(
                    f"shm://{name} exists already and create=new: choose another name, attach "
                    "with create=auto, or unlink it first"
                )

    @classmethod
    def from_url(cls, url: QueueURL, **options: Any) -> ShmQueue[Any]:
        if url.path not in ("", "/") or url.username is not None or url.password is not None:
            raise InvalidURL(f"{url}: shm:// takes only a name, as shm://NAME")
        values = bind_params(url, cls.PARAMS, options)
        for key in cls._SETTINGS:
            if key not in url.query and key not in options:
                values[key] = None  # not asked for: whatever the queue has, or the default
        return cls(url.location, **values)

    def __repr__(self) -> str:
        seg = self._seg
        if seg is None:
            return "<ShmQueue shm:// closed>"
        return f"<ShmQueue shm://{seg.name} maxsize={seg.maxsize} capacity={seg.capacity}>"

    def __reduce__(self) -> Any:
        seg = self._seg
        if seg is None:
            raise QueueClosed(f"{self!r} is closed; pass an open handle to the child process")
        if get_spawning_popen() is not None:
            return _from_fd, (DupFd(seg.fd), seg.name, self._serializer)
        if seg.name:
            return _attach, (seg.name, self._serializer)
        raise TypeError(
            "a private shm:// queue has no name to attach to: pass it to a child as an argument "
            "of multiprocessing.Process, or open a named one (shm://NAME) to attach from anywhere"
        )

    def _segment(self) -> _Segment:
        seg = self._seg
        if seg is None:
            raise QueueClosed(f"{self!r} is closed; open the queue again to keep using it")
        return seg

    @property
    def maxsize(self) -> int:
        return self._segment().maxsize

    @property
    def capabilities(self) -> Capabilities:
        import multiprocessing

        available = multiprocessing.get_all_start_methods()
        return Capabilities(
            qsize="exact",
            ordering="fifo",
            cross_process=True,
            start_methods=tuple(m for m in _START_METHODS if m in available),
            serializes=True,
            max_message_size=self._max_item,
        )

    # --- put ------------------------------------------------------------------------------

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        seg = self._seg
        if seg is None:
            seg = self._segment()
        data = self._dumps(item)
        # The usual case, written out: room, no waiting, no wrap-around.
        n = len(data)
        crc = zlib.crc32(data) if seg.checksum else 0
        mm, mutex = seg.mm, seg.put_mutex
        tried = mutex_trylock(mutex)
        if tried:
            seg.take(mutex, tried)
        try:
            t0, p0, t1, p1, version, seq, sleepers, shut = _PUTS.unpack_from(mm, _PUT_AT)
            tail, puts = (t1, p1) if version & 1 else (t0, p0)
            at = _DATA_AT + tail % seg.capacity
            after = tail + 8 + ((n + 7) & ~7)
            done = not (
                shut
                or at + 8 + n > seg.data_end
                or n > self._max_item
                or (timeout is not None and block and timeout < 0)
                or (
                    (after - seg.head_seen > seg.capacity or seg.maxsize)
                    and not seg.room(tail, puts, after - tail, 1)
                )
            )
            if done:
                _FRAME.pack_into(mm, at, n, crc)
                mm[at + 8 : at + 8 + n] = data
                if version & 1:
                    t0, p0 = after, puts + 1
                else:
                    t1, p1 = after, puts + 1
                _PUTS.pack_into(mm, _PUT_AT, t0, p0, t1, p1, version + 1, seq + 1, sleepers, 0)
        finally:
            mutex_unlock(mutex)
        if not done:
            self._push(seg, [data], [crc], block, timeout)
        elif sleepers:
            seg.wake(_NOT_EMPTY_AT, 1)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        seg = self._segment()
        frames = dumps_many(self._serializer, items if isinstance(items, list) else list(items))
        crcs = [zlib.crc32(data) for data in frames] if seg.checksum else None
        self._push(seg, frames, crcs, block, timeout)

    def _push(
        self,
        seg: _Segment,
        frames: list[bytes],
        crcs: list[int] | None,
        block: bool,
        timeout: float | None,
    ) -> None:
        count = len(frames)
        largest = max(map(len, frames), default=0)
        if largest > self._max_item:
            raise MessageTooLarge(
                f"an item of {largest} bytes serialized can never fit a shm:// queue of "
                f"capacity={seg.capacity} (at most {self._max_item} bytes per item); "
                "open the queue with a larger capacity"
            )
        if count == 1:
            need = 8 + _pad(largest)
            span = b""
        else:
            span = _lay_out(frames, crcs)
            need = len(span)
        if need > seg.capacity:
            raise MessageTooLarge(
                f"a batch of {count} items, {need} bytes in the ring, can never fit at "
                f"once in a shm:// queue of capacity={seg.capacity}; split the batch, or open "
                "the queue with a larger capacity"
            )
        seg.take(seg.put_mutex)
        try:
            words, tail, puts, shut = seg.put_end()
            if shut:
                raise ShutDown
            check_batch_fits(count, seg.maxsize)
            end = deadline(block, timeout)
            if not seg.room(tail, puts, need, count):
                words, tail, puts = self._wait_room(seg, need, count, end)
            if not count:
                return
            if count == 1:
                tail = seg.write(tail, frames[0], crcs[0] if crcs else 0)
            else:
                tail = seg.write_span(tail, span)
            seg.commit_put(words, tail, puts + count, 0)
        finally:
            mutex_unlock(seg.put_mutex)
        if words[6]:
            seg.wake(_NOT_EMPTY_AT, count)

    def _wait_room(
        self, seg: _Segment, need: int, count: int, end: float | None
    ) -> tuple[tuple[int, ...], int, int]:
        """Holding the put lock: wait, with the get lock too, until ``count`` items of ``need``
        bytes fit; the put end's words, tail and items put then."""
        seg.take(seg.get_mutex)
        try:
            while True:
                words, tail, puts, shut = seg.put_end()
                if shut:
                    raise ShutDown
                _, seg.head_seen, seg.gets_seen, _ = seg.get_end()
                if seg.fits(tail, puts, need, count):
                    return words, tail, puts
                wait = remaining(end)
                if wait == 0.0:
                    raise Full
                seg.sleep(_NOT_FULL_AT, wait)
                self._segment()
        finally:
            mutex_unlock(seg.get_mutex)

    # --- get ------------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        seg = self._seg
        if seg is None:
            seg = self._segment()
        # The usual case, written out: an item there, not wrapped around.
        mm, mutex = seg.mm, seg.get_mutex
        spin = True
        while True:
            tried = mutex_trylock(mutex)
            if tried:
                seg.take(mutex, tried)
            try:
                h0, g0, d0, h1, g1, d1, version, not_full, tasks, sleepers, joiners = (
                    _GETS.unpack_from(mm, _GET_AT)
                )
                head = h1 if version & 1 else h0
                limit = seg.tail_seen
                if (head >= limit and head >= (limit := seg.see_tail())) or (
                    timeout is not None and block and timeout < 0
                ):
                    data = None
                else:
                    at = _DATA_AT + head % seg.capacity
                    n, crc = _FRAME.unpack_from(mm, at)
                    after = head + 8 + ((n + 7) & ~7)
                    if at + 8 + n <= seg.data_end and after <= limit:
                        data = mm[at + 8 : at + 8 + n]
                    else:
                        data, crc, after = seg.read(head, limit)
                    if version & 1:
                        h0, g0, d0 = after, g1 + 1, d1
                    else:
                        h1, g1, d1 = after, g0 + 1, d0
                    _GETS.pack_into(
                        mm, _GET_AT, h0, g0, d0, h1, g1, d1, version + 1,
                        not_full + 1, tasks, sleepers, joiners,
                    )  # fmt: skip
            finally:
                mutex_unlock(mutex)
            if data is not None or not spin or not seg.spin(head, block, timeout):
                break
            spin = False
        if data is None:
            item: T = self._loads(self._wait_pop(seg, 1, block, timeout)[0])
            return item
        if sleepers:
            seg.wake(_NOT_FULL_AT)
        if seg.checksum and zlib.crc32(data) != crc:
            raise _corrupt(seg, data)
        item = self._loads(data)
        return item

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        seg = self._segment()
        check_max_items(max_items)
        frames: list[bytes] | None = None
        spin = True
        while True:
            seg.take(seg.get_mutex)
            try:
                words, head, gets, done = seg.get_end()
                if (head < seg.tail_seen or head < seg.see_tail()) and not (
                    block and timeout is not None and timeout < 0
                ):
                    frames, crcs, head = seg.frames(head, seg.tail_seen, max_items)
                    seg.commit_get(words, head, gets + len(frames), done, True, False)
            finally:
                mutex_unlock(seg.get_mutex)
            if frames is not None or not spin or not seg.spin(head, block, timeout):
                break
            spin = False
        if frames is None:
            frames = self._wait_pop(seg, max_items, block, timeout)
        else:
            self._got(seg, words, frames, crcs)
        items: list[T] = loads_many(self._serializer, frames)
        return items

    def _wait_pop(
        self, seg: _Segment, max_items: int, block: bool, timeout: float | None
    ) -> list[bytes]:
        """Up to ``max_items`` frames, once there is one: with both locks, waiting per
        ``block`` and ``timeout``."""
        seg.take_both()
        try:
            _, tail, _, shut = seg.put_end()
            words, head, gets, done = seg.get_end()
            if shut and head == tail:
                raise ShutDown
            end = deadline(block, timeout)
            while head == tail:
                wait = remaining(end)
                if wait == 0.0:
                    raise Empty
                seg.sleep(_NOT_EMPTY_AT, wait)
                self._segment()
                _, tail, _, shut = seg.put_end()
                words, head, gets, done = seg.get_end()
                if shut and head == tail:
                    raise ShutDown
            seg.tail_seen = tail
            frames, crcs, head = seg.frames(head, tail, max_items)
            seg.commit_get(words, head, gets + len(frames), done, True, False)
        finally:
            seg.release_both()
        return self._got(seg, words, frames, crcs)

    @staticmethod
    def _got(
        seg: _Segment, words: tuple[int, ...], frames: list[bytes], crcs: list[int]
    ) -> list[bytes]:
        """After a get has let go of its locks: wake the putters waiting for room, check the
        frames."""
        if words[9]:
            seg.wake(_NOT_FULL_AT)
        if seg.checksum:
            for data, crc in zip(frames, crcs, strict=True):
                if zlib.crc32(data) != crc:
                    raise _corrupt(seg, data)
        return frames

    # --- the rest -------------------------------------------------------------------------

    def qsize(self) -> int:
        seg = self._segment()
        seg.take_both()
        try:
            return seg.put_end()[2] - seg.get_end()[2]
        finally:
            seg.release_both()

    def task_done(self) -> None:
        seg = self._segment()
        seg.take(seg.get_mutex)
        try:
            words, head, gets, done = seg.get_end()
            # With more than one task left, this one changes nothing anyone waits for.
            quick = seg.puts_seen() - done > 1
            if quick:
                seg.commit_get(words, head, gets, done + 1, False, False)
        finally:
            mutex_unlock(seg.get_mutex)
        if quick:
            return
        seg.take_both()
        try:
            puts = seg.put_end()[2]
            words, head, gets, done = seg.get_end()
            if puts <= done:
                raise ValueError("task_done() called more times than there were items put")
            last = puts - done == 1
            seg.commit_get(words, head, gets, done + 1, False, last)
        finally:
            seg.release_both()
        if last and words[10]:
            seg.wake(_TASKS_AT)

    def join(self, timeout: float | None = None) -> None:
        seg = self._segment()
        seg.take_both()
        try:
            end = deadline(True, timeout)
            while unfinished := seg.put_end()[2] - seg.get_end()[3]:
                wait = remaining(end)
                if wait == 0.0:
                    raise JoinTimeout(f"join() timed out with {unfinished} unfinished tasks")
                seg.sleep(_TASKS_AT, wait)
                self._segment()
        finally:
            seg.release_both()

    def shutdown(self, immediate: bool = False) -> None:
        self._segment().tell_everyone(shut=True, drain=immediate)

    def close(self) -> None:
        seg, self._seg = self._seg, None
        self._closed = True
        if seg is None:
            return
        # Wake this process's own waiters on the handle, so they see it closed. The mapping
        # goes when the last call still using it returns.
        seg.tell_everyone()
        with contextlib.suppress(OSError):
            os.close(seg.fd)

    def unlink(self) -> bool:
        """Remove the queue's name, if it has one and it still names this queue.

        Handles open now keep working; the next open of the name makes a new queue, and the
        memory is freed once the last handle closes. Whether a name was removed.
        """
        seg = self._segment()
        if not seg.name:
            return False
        with contextlib.suppress(FileNotFoundError):
            ours, named = os.fstat(seg.fd), os.stat(_path(seg.name))
            if (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino):
                os.unlink(_path(seg.name))
                return True
        return False

    def info(self) -> dict[str, Any]:
        """Facts for ``queuekit info``."""
        seg = self._segment()
        seg.take_both()
        try:
            _, tail, puts, shut = seg.put_end()
            _, head, gets, done = seg.get_end()
        finally:
            seg.release_both()
        return {
            "name": seg.name or "(private)",
            "path": _path(seg.name) if seg.name else "(none: private)",
            "capacity": seg.capacity,
            "bytes_used": tail - head,
            "maxsize": seg.maxsize,
            "qsize": puts - gets,
            "unfinished": puts - done,
            "shutdown": bool(shut),
            "checksum": seg.checksum,
            "serializer": self._serializer.name,
        }


def _corrupt(seg: _Segment, data: bytes) -> CorruptMessage:
    return CorruptMessage(
        f"an item of {len(data)} bytes read from shm://{seg.name} fails its CRC-32 check: the "
        "segment was written to by something other than queuekit; the item (and any got with "
        "it) is lost"
    )


def _check_settings(seg: _Segment, wanted: dict[str, Any]) -> None:
    has = {"maxsize": seg.maxsize, "capacity": seg.capacity, "checksum": seg.checksum}
    for key, value in wanted.items():
        if value is not None and value != has[key]:
            raise InvalidURL(
                f"shm://{seg.name} exists already with {key}={has[key]}, not {value}: open it "
                f"without {key}= (or with {key}={has[key]}), or unlink it first"
            )


def _from_fd(fd: Any, name: str, serializer: Serializer) -> ShmQueue[Any]:
    return ShmQueue(name, serializer=serializer, _fd=fd.detach())


def _attach(name: str, serializer: Serializer) -> ShmQueue[Any]:
    return ShmQueue(name, serializer=serializer, create="never")


def unlink(url: str) -> bool:
    """Remove the name of the shm:// queue ``url`` names; whether there was one to remove."""
    from .._urls import parse_url

    parsed = parse_url(url)
    if parsed.scheme != "shm" or not parsed.location:
        raise InvalidURL(f"{parsed}: unlink() takes a named shm:// URL, as shm://NAME")
    _check_name(parsed.location)
    try:
        os.unlink(_path(parsed.location))
    except FileNotFoundError:
        return False
    return True
