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
``checksum=true``; a payload is split in two where it wraps around), and the queue's state
(head, tail, count, unfinished tasks, shutdown) is written in two copies, with the current one
chosen by a single word. Every change is made under one robust lock: a put writes its frames
into free space and then flips that word; a get copies frames out and then flips it. A process
killed at any instant leaves the state from before or after its call, never a torn frame, and
the kernel releases its lock.

What a killed process can lose: the items of a put it was inside (all or none of a batch, and
none are visible before they all are), and the items it had got, in a get that was returning
or held for processing. Items it got but had not marked with ``task_done()`` stay unfinished,
so ``join()`` without a timeout would wait for them forever. A wake-up it was about to send
when killed is made up by the waiters themselves within half a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
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
from .._serializers import Serializer, get_serializer
from .._shmsync import (
    MUTEX_BYTES,
    UNAVAILABLE,
    futex_wait,
    futex_wake,
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

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
_START_METHODS = ("fork", "spawn", "forkserver")

# --- The segment's layout ---------------------------------------------------------------------
_MAGIC = b"queuekit-shm\x00\x00\x00\x00"
_VERSION = 1
_CHECKSUM = 1  # flag
_HEADER = struct.Struct("<16sIIQq")  # magic, version, flags, capacity, maxsize
_MUTEX_AT = 64
# The control words: which of the two copies of the state is current; per condition a
# sequence number bumped whenever it may have changed (the futex word its waiters sleep on);
# and a bit per condition saying someone may be asleep on it, so a change costs no system
# call otherwise. Then the two copies of the state: head and tail (byte positions, only ever
# growing), count, unfinished tasks, shutdown.
_CONTROL_AT = 256
assert _MUTEX_AT + MUTEX_BYTES <= _CONTROL_AT
_NOT_EMPTY, _NOT_FULL, _TASKS = 1, 2, 4
_ALL_CONDITIONS = _NOT_EMPTY | _NOT_FULL | _TASKS
_SEQ_AT = {_NOT_EMPTY: 264, _NOT_FULL: 268, _TASKS: 272}
_CONTROL = struct.Struct("<Q4I")  # selected, not-empty seq, not-full seq, tasks seq, sleeping
_ALL = struct.Struct("<Q4I10Q")  # the control words and both copies
_STATE = struct.Struct("<5Q")
_COPY_AT = (_CONTROL_AT + 24, _CONTROL_AT + 64)
_DATA_AT = 4096
_FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload (0 without checksums)
_MAX_FRAME = 0xFFFFFFFF


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
        "maxsize",
        "mm",
        "mutex",
        "name",
        "pin",
    )
    addr: int
    capacity: int
    checksum: bool
    data_end: int
    fd: int
    maxsize: int
    mm: mmap.mmap
    mutex: int
    name: str
    pin: ctypes.c_char

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
        # The mutex and the futex words are used by address; a view pins the mapping.
        self.pin = ctypes.c_char.from_buffer(self.mm)
        self.addr = ctypes.addressof(self.pin)
        self.mutex = self.addr + _MUTEX_AT

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
            mutex_init(ctypes.addressof(pin) + _MUTEX_AT)
            del pin

    # Under the lock ------------------------------------------------------------------------

    def lock(self, tried: int = -1) -> None:
        """Take the lock (``tried``: what a ``mutex_trylock`` just returned, if one did)."""
        trylock, mutex = mutex_trylock, self.mutex
        if tried == -1:
            tried = trylock(mutex)
        # Held only for a microsecond or so: trying again for a while is cheaper than sleeping
        # (and being woken) in the kernel.
        spins = LOCK_SPINS
        while tried == errno.EBUSY and spins:
            tried = trylock(mutex)
            spins -= 1
        if not tried:
            return
        if mutex_lock(mutex, tried):
            # Its holder died, maybe between a change and the wake-up it owed: pay it.
            self.wake(self.notify(_ALL_CONDITIONS) | _ALL_CONDITIONS)

    def unlock(self) -> None:
        mutex_unlock(self.mutex)

    def load(self) -> tuple[int, ...]:
        """The control words, then the current state: (selected, seq x 3, sleeping, head,
        tail, count, unfinished, shutdown)."""
        words = _ALL.unpack_from(self.mm, _CONTROL_AT)
        return words[:10] if words[0] == 0 else words[:5] + words[10:]

    def commit(
        self,
        loaded: tuple[int, ...],
        head: int,
        tail: int,
        count: int,
        unfinished: int,
        shutdown: int,
        changed: int,
    ) -> int:
        """Make this the state, telling the ``changed`` conditions; those with sleepers to
        wake (after unlocking)."""
        selected, not_empty, not_full, tasks, sleeping = loaded[:5]
        spare = 1 - selected
        _STATE.pack_into(self.mm, _COPY_AT[spare], head, tail, count, unfinished, shutdown)
        if changed & _NOT_EMPTY:
            not_empty = (not_empty + 1) & 0xFFFFFFFF
        if changed & _NOT_FULL:
            not_full = (not_full + 1) & 0xFFFFFFFF
        if changed & _TASKS:
            tasks = (tasks + 1) & 0xFFFFFFFF
        # One write flips the selection (a single byte changes) and tells the waiters.
        _CONTROL.pack_into(
            self.mm, _CONTROL_AT, spare, not_empty, not_full, tasks, sleeping & ~changed
        )
        return sleeping & changed

    def notify(self, changed: int) -> int:
        """Tell the ``changed`` conditions, the state as it is; those with sleepers."""
        loaded = self.load()
        head, tail, count, unfinished, shutdown = loaded[5:]
        return self.commit(loaded, head, tail, count, unfinished, shutdown, changed)

    def sleep(self, cond: int, timeout: float | None) -> None:
        """Release the lock, sleep until ``cond`` changes (or ``timeout``), take it again."""
        selected, *seqs, sleeping = _CONTROL.unpack_from(self.mm, _CONTROL_AT)
        expected: int = seqs[(_NOT_EMPTY, _NOT_FULL, _TASKS).index(cond)]
        _CONTROL.pack_into(self.mm, _CONTROL_AT, selected, *seqs, sleeping | cond)
        self.unlock()
        try:
            wait = SLICE if timeout is None else min(timeout, SLICE)
            futex_wait(self.addr + _SEQ_AT[cond], expected, wait)
        finally:
            self.lock()

    def wake(self, conds: int) -> None:
        for cond, at in _SEQ_AT.items():
            if conds & cond:
                futex_wake(self.addr + at)

    def write(self, pos: int, payload: bytes, crc: int) -> int:
        """Write a frame at byte position ``pos``; the position after it."""
        mm, cap = self.mm, self.capacity
        at = pos % cap
        _FRAME.pack_into(mm, _DATA_AT + at, len(payload), crc)
        start = _DATA_AT + (at + 8) % cap
        end = start + len(payload)
        if end <= self.data_end:
            mm[start:end] = payload
        else:
            first = self.data_end - start
            view = memoryview(payload)
            mm[start : self.data_end] = view[:first]
            mm[_DATA_AT : _DATA_AT + len(payload) - first] = view[first:]
        return pos + 8 + _pad(len(payload))

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
        seg = self._segment()
        data = self._dumps(item)
        # The usual case, written out: room, no waiting, no wrap-around.
        n = len(data)
        need = 8 + ((n + 7) & ~7)
        mm = seg.mm
        crc = zlib.crc32(data) if seg.checksum else 0
        tried = mutex_trylock(seg.mutex)
        if tried:
            seg.lock(tried)
        try:
            words = _ALL.unpack_from(mm, _CONTROL_AT)
            selected = words[0]
            head, tail, size, unfinished, shut = words[10:] if selected else words[5:10]
            at = _DATA_AT + tail % seg.capacity
            end = at + need
            if (
                shut
                or end > seg.data_end
                or tail - head + need > seg.capacity
                or 0 < seg.maxsize <= size
                or (block and timeout is not None and timeout < 0)
                or n > self._max_item
            ):
                end = 0
            else:
                _FRAME.pack_into(mm, at, n, crc)
                mm[at + 8 : at + 8 + n] = data
                spare = 1 - selected
                _STATE.pack_into(
                    mm, _COPY_AT[spare], head, tail + need, size + 1, unfinished + 1, 0
                )
                not_empty, not_full, tasks, sleeping = words[1:5]
                _CONTROL.pack_into(
                    mm,
                    _CONTROL_AT,
                    spare,
                    (not_empty + 1) & 0xFFFFFFFF,
                    not_full,
                    tasks,
                    sleeping & ~_NOT_EMPTY,
                )
        finally:
            mutex_unlock(seg.mutex)
        if not end:
            self._push(seg, [data], block, timeout)
        elif sleeping & _NOT_EMPTY:
            seg.wake(_NOT_EMPTY)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        seg = self._segment()
        self._push(seg, [self._dumps(item) for item in items], block, timeout)

    def _push(self, seg: _Segment, frames: list[bytes], block: bool, timeout: float | None) -> None:
        need = 0
        for data in frames:
            if len(data) > self._max_item:
                raise MessageTooLarge(
                    f"an item of {len(data)} bytes serialized can never fit a shm:// queue of "
                    f"capacity={seg.capacity} (at most {self._max_item} bytes per item); "
                    "open the queue with a larger capacity"
                )
            need += 8 + _pad(len(data))
        if need > seg.capacity:
            raise MessageTooLarge(
                f"a batch of {len(frames)} items, {need} bytes in the ring, can never fit at "
                f"once in a shm:// queue of capacity={seg.capacity}; split the batch, or open "
                "the queue with a larger capacity"
            )
        crcs = [zlib.crc32(data) for data in frames] if seg.checksum else [0] * len(frames)
        count = len(frames)
        maxsize = seg.maxsize
        tried = mutex_trylock(seg.mutex)
        if tried:
            seg.lock(tried)
        try:
            loaded = seg.load()
            head, tail, size, unfinished, shut = loaded[5:]
            if shut:
                raise ShutDown
            check_batch_fits(count, maxsize)
            end = deadline(block, timeout)
            while tail - head + need > seg.capacity or 0 < maxsize < size + count:
                wait = remaining(end)
                if wait == 0.0:
                    raise Full
                seg.sleep(_NOT_FULL, wait)
                self._segment()
                loaded = seg.load()
                head, tail, size, unfinished, shut = loaded[5:]
                if shut:
                    raise ShutDown
            if not count:
                return
            mm, cap, data_end, pack_frame = seg.mm, seg.capacity, seg.data_end, _FRAME.pack_into
            for data, crc in zip(frames, crcs, strict=True):
                n = len(data)
                at = _DATA_AT + tail % cap
                if at + 8 + n <= data_end:  # the usual case, written out: no wrap-around
                    pack_frame(mm, at, n, crc)
                    mm[at + 8 : at + 8 + n] = data
                    tail += 8 + ((n + 7) & ~7)
                else:
                    tail = seg.write(tail, data, crc)
            wake = seg.commit(loaded, head, tail, size + count, unfinished + count, 0, _NOT_EMPTY)
        finally:
            mutex_unlock(seg.mutex)
        if wake:
            seg.wake(wake)

    # --- get ------------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        seg = self._segment()
        # The usual case, written out: an item there, not wrapped around.
        mm = seg.mm
        tried = mutex_trylock(seg.mutex)
        if tried:
            seg.lock(tried)
        try:
            words = _ALL.unpack_from(mm, _CONTROL_AT)
            selected = words[0]
            head, tail, size, unfinished, shut = words[10:] if selected else words[5:10]
            at = _DATA_AT + head % seg.capacity
            n, crc = _FRAME.unpack_from(mm, at)
            after = head + 8 + ((n + 7) & ~7)
            if (
                not size
                or at + 8 + n > seg.data_end
                or after > tail
                or (block and timeout is not None and timeout < 0)
            ):
                data = None
            else:
                data = mm[at + 8 : at + 8 + n]
                spare = 1 - selected
                _STATE.pack_into(mm, _COPY_AT[spare], after, tail, size - 1, unfinished, shut)
                not_empty, not_full, tasks, sleeping = words[1:5]
                _CONTROL.pack_into(
                    mm,
                    _CONTROL_AT,
                    spare,
                    not_empty,
                    (not_full + 1) & 0xFFFFFFFF,
                    tasks,
                    sleeping & ~_NOT_FULL,
                )
        finally:
            mutex_unlock(seg.mutex)
        if data is None:
            item: T = self._loads(self._pop(seg, 1, block, timeout)[0])
            return item
        if sleeping & _NOT_FULL:
            seg.wake(_NOT_FULL)
        if seg.checksum and zlib.crc32(data) != crc:
            raise _corrupt(seg, data)
        item = self._loads(data)
        return item

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        seg = self._segment()
        check_max_items(max_items)
        return [self._loads(data) for data in self._pop(seg, max_items, block, timeout)]

    def _pop(
        self, seg: _Segment, max_items: int, block: bool, timeout: float | None
    ) -> list[bytes]:
        tried = mutex_trylock(seg.mutex)
        if tried:
            seg.lock(tried)
        try:
            loaded = seg.load()
            head, tail, size, unfinished, shut = loaded[5:]
            if shut and not size:
                raise ShutDown
            end = deadline(block, timeout)
            while not size:
                wait = remaining(end)
                if wait == 0.0:
                    raise Empty
                seg.sleep(_NOT_EMPTY, wait)
                self._segment()
                loaded = seg.load()
                head, tail, size, unfinished, shut = loaded[5:]
                if shut and not size:
                    raise ShutDown
            taken = min(max_items, size)
            frames: list[bytes] = []
            crcs: list[int] = []
            mm, cap, data_end, unpack_frame = seg.mm, seg.capacity, seg.data_end, _FRAME.unpack_from
            for _ in range(taken):
                at = _DATA_AT + head % cap
                n, crc = unpack_frame(mm, at)
                after = head + 8 + ((n + 7) & ~7)
                if at + 8 + n <= data_end and after <= tail:  # no wrap-around, no damage
                    frames.append(mm[at + 8 : at + 8 + n])
                    head = after
                else:
                    data, crc, head = seg.read(head, tail)
                    frames.append(data)
                crcs.append(crc)
            wake = seg.commit(loaded, head, tail, size - taken, unfinished, shut, _NOT_FULL)
        finally:
            mutex_unlock(seg.mutex)
        if wake:
            seg.wake(wake)
        if seg.checksum:
            for data, crc in zip(frames, crcs, strict=True):
                if zlib.crc32(data) != crc:
                    raise _corrupt(seg, data)
        return frames

    # --- the rest -------------------------------------------------------------------------

    def qsize(self) -> int:
        seg = self._segment()
        seg.lock()
        try:
            return seg.load()[7]
        finally:
            seg.unlock()

    def task_done(self) -> None:
        seg = self._segment()
        seg.lock()
        try:
            loaded = seg.load()
            head, tail, size, unfinished, shut = loaded[5:]
            if unfinished <= 0:
                raise ValueError("task_done() called more times than there were items put")
            changed = _TASKS if unfinished == 1 else 0
            wake = seg.commit(loaded, head, tail, size, unfinished - 1, shut, changed)
        finally:
            seg.unlock()
        if wake:
            seg.wake(wake)

    def join(self, timeout: float | None = None) -> None:
        seg = self._segment()
        seg.lock()
        try:
            end = deadline(True, timeout)
            while unfinished := seg.load()[8]:
                wait = remaining(end)
                if wait == 0.0:
                    raise JoinTimeout(f"join() timed out with {unfinished} unfinished tasks")
                seg.sleep(_TASKS, wait)
                self._segment()
        finally:
            seg.unlock()

    def shutdown(self, immediate: bool = False) -> None:
        seg = self._segment()
        seg.lock()
        try:
            loaded = seg.load()
            head, tail, size, unfinished, _ = loaded[5:]
            if immediate:
                head, unfinished, size = tail, max(0, unfinished - size), 0
            seg.commit(loaded, head, tail, size, unfinished, 1, _ALL_CONDITIONS)
        finally:
            seg.unlock()
        seg.wake(_ALL_CONDITIONS)

    def close(self) -> None:
        seg, self._seg = self._seg, None
        self._closed = True
        if seg is None:
            return
        # Wake this process's own waiters on the handle, so they see it closed. The mapping
        # goes when the last call still using it returns.
        seg.lock()
        try:
            seg.notify(_ALL_CONDITIONS)
        finally:
            seg.unlock()
        seg.wake(_ALL_CONDITIONS)
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
        seg.lock()
        try:
            head, tail, size, unfinished, shut = seg.load()[5:]
        finally:
            seg.unlock()
        return {
            "name": seg.name or "(private)",
            "path": _path(seg.name) if seg.name else "(none: private)",
            "capacity": seg.capacity,
            "bytes_used": tail - head,
            "maxsize": seg.maxsize,
            "qsize": size,
            "unfinished": unfinished,
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
