"""The memory behind a ``shm://`` queue: its layout, and the calls on it under its locks.

The items are frames in one ring (8-byte header: the payload's length, and its CRC-32 with
``checksum=true``; a payload is split in two where it wraps around). A ``put_many`` of several
items is one batch frame: a 16-byte header (a length no single frame has, the count, the
length of every payload when they are all one size, the bytes of payloads), a table of where
each payload ends (when their sizes vary) and one of their CRC-32s (``checksum=true``), then
the payloads end to end. The get end keeps, beside the head, how many items of the batch frame
there have been got, so a get can take part of one. The queue has two robust
locks, one for each end: putters take the put lock, which guards the tail and the count of
items ever put; getters take the get lock, which guards the head and the counts of items got
and tasks done. So a putter and a getter never wait for each other. Each end's state is
written in two copies, the current one chosen by the parity of a version word written after
them: a put writes its frames into free space and then the tail; a get copies frames out and
then the head. Calls that need both ends at once (waiting, ``qsize``, ``join``, ``shutdown``)
take both locks, the put lock first. A process killed at any instant leaves each end's state
from before or after its call, never a torn frame, and the kernel releases its locks.

The usual put and get (one item in a frame of its own, no wrap-around, no checksum, no
waiting) are also compiled (``_shm_ring.c``, built by ``hatch_build.py`` where it can be),
doing exactly what the Python ones do, on the same memory: the two can share a queue. Each
compiled call hands what is not usual to the Python path, having changed nothing.

On x86 a putter reads the head (and a getter the tail) without the other lock, as the last
version committed, and only when what it saw before is not enough: the head only grows, so an
old one only understates the room, and the processor keeps the other end's copying and its
commit in order. Elsewhere those reads take both locks.
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
import sys
from array import array
from functools import lru_cache
from itertools import accumulate
from typing import Any

from .._errors import BackendUnavailable, CorruptMessage, InvalidURL
from .._shmsync import (
    MUTEX_BYTES,
    WAKE_ALL,
    futex_wait,
    futex_wake,
    mutex_at,
    mutex_init,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
)
from .._urls import as_size

__all__ = [
    "BATCH",
    "COMPILED_ENV",
    "DATA_AT",
    "FRAME",
    "GETS",
    "GET_AT",
    "MAX_FRAME",
    "NOT_EMPTY_AT",
    "NOT_FULL_AT",
    "PUTS",
    "PUT_AT",
    "SHM_DIR",
    "TASKS_AT",
    "Damaged",
    "Segment",
    "as_capacity",
    "check_name",
    "lay_out",
    "new_file",
    "pad",
    "path_of",
]

SHM_DIR = "/dev/shm"
PREFIX = "queuekit-"
MIN_CAPACITY = 64
MAX_CAPACITY = 1 << 40
SLICE = 0.5
"""The longest a waiter sleeps before it looks at the queue again by itself."""
LOCK_SPINS = 5
"""How many more times a caller tries a busy lock before it sleeps in the kernel for it. Few:
with more processes than processors the holder is often not running, and spinning only takes
the processor from it (4 producers x 4 consumers on 2 cores: 1.70x multiprocessing.Queue at 50
spins, 1.85x to 1.95x at 0 to 5; one producer and one consumer: the same)."""
SPINS = 100
"""How many times a get that finds the queue empty looks for an item before it sleeps."""
_ORDERED = platform.machine().lower() in ("x86_64", "amd64")
"""Whether one end's committed state can be read without its lock (see above)."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")

# --- The segment's layout ---------------------------------------------------------------------
_MAGIC = b"queuekit-shm\x00\x00\x00\x00"
_VERSION = 3
_CHECKSUM = 1  # flag
_HEADER = struct.Struct("<16sIIQq")  # magic, version, flags, capacity, maxsize
_PUT_MUTEX_AT, _GET_MUTEX_AT = 128, 256
# Each end's state on cache lines of its own, so that the two ends write to different lines.
# The put end: two copies of (tail, items ever put), then the version that chooses one; the
# not-empty counter, bumped by every put (getters sleep on its low 32 bits, a futex word);
# how many sleep on it; shutdown. Tail and head are byte positions that only grow.
PUT_AT = 512
PUTS = struct.Struct("<6Q2I")
_PUT_COPIES = struct.Struct("<5Q")  # the copies and the version, for a reader without the lock
NOT_EMPTY_AT = PUT_AT + 40
# The get end: two copies of (head, items got of the batch frame at the head, items ever got,
# tasks done), the version; the not-full counter and the tasks counter (bumped when none are
# left); the sleepers on each.
GET_AT = 640
GETS = struct.Struct("<11Q2I")
_GET_COPIES = struct.Struct("<9Q")
NOT_FULL_AT, TASKS_AT = GET_AT + 72, GET_AT + 80
_SHUTDOWN_AT = PUT_AT + 52
_SLEEPERS_AT = {NOT_EMPTY_AT: PUT_AT + 48, NOT_FULL_AT: GET_AT + 88, TASKS_AT: GET_AT + 92}
assert _GET_MUTEX_AT + MUTEX_BYTES <= PUT_AT
assert PUT_AT + PUTS.size <= GET_AT
assert GET_AT + GETS.size <= 4096

_WORD = struct.Struct("<Q")
_PAIR = struct.Struct("<2Q")
_QUAD = struct.Struct("<4Q")
_SLEEPERS = struct.Struct("<I")
DATA_AT = 4096
FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload (0 without checksums)
MAX_FRAME = 0xFFFFFFFE
BATCH = 0xFFFFFFFF
"""The length word of a batch frame's header."""
_BATCH_HEAD = struct.Struct("<IIII")  # BATCH, count, each payload's length (or VARIED), bytes
_VARIED = 0xFFFFFFFF
_MAX_AREA = 0xFFFFFFFF
_SPLIT = 1024  # the most payloads one cached struct splits
_PADS = [bytes(-k & 7) for k in range(8)]  # the zeros after a payload, by its length's last bits
_MASK32 = 0xFFFFFFFF

COMPILED_ENV = "QUEUEKIT_SHM_COMPILED"
"""Set to 0, it keeps the handles this process opens on the Python path of put and get."""
_RING: type[Ring] | None
try:
    from ._shm_ring import LAYOUT, Ring
except ImportError:  # not built here: see hatch_build.py
    _RING = None
else:  # not if built from another version of the layout
    _RING = Ring if LAYOUT == (_PUT_MUTEX_AT, _GET_MUTEX_AT, PUT_AT, GET_AT, DATA_AT) else None


def pad(n: int) -> int:
    return (n + 7) & ~7


class Segment:
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
        "ring",
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
        if size < DATA_AT + MIN_CAPACITY:
            raise InvalidURL(
                f"{shown}: {path_of(name)} is not a queuekit shm:// segment (only {size} bytes); "
                "remove it (queuekit.backends.shm.unlink) or choose another name"
            )
        self.mm = mmap.mmap(fd, size)
        magic, version, flags, capacity, maxsize = _HEADER.unpack_from(self.mm, 0)
        if magic != _MAGIC or version != _VERSION or DATA_AT + capacity > size:
            self.mm.close()
            raise InvalidURL(
                f"{shown}: {path_of(name)} is not a queuekit shm:// segment of this version; "
                "remove it (queuekit.backends.shm.unlink) or choose another name"
            )
        self.capacity = capacity
        self.maxsize = maxsize
        self.checksum = bool(flags & _CHECKSUM)
        self.data_end = DATA_AT + capacity
        # The mutexes and the futex words are used by address; a view pins the mapping.
        self.pin = ctypes.c_char.from_buffer(self.mm)
        self.addr = ctypes.addressof(self.pin)
        self.put_mutex = mutex_at(self.addr + _PUT_MUTEX_AT)
        self.get_mutex = mutex_at(self.addr + _GET_MUTEX_AT)
        # What this process last saw of the other end: never ahead of it, as both only grow.
        self.tail_seen = self.head_seen = self.gets_seen = 0
        # The usual put and get, compiled, where that was built (not for checksums).
        self.ring: Ring | None = None
        ring = _RING if _ORDERED and os.environ.get(COMPILED_ENV) != "0" else None
        if ring is not None and not self.checksum:
            self.ring = ring(
                self.pin, self.addr, capacity, maxsize, min(capacity - 8, MAX_FRAME),
                LOCK_SPINS, SPINS,
            )  # fmt: skip

    @staticmethod
    def initialize(fd: int, capacity: int, maxsize: int, checksum: bool) -> None:
        # Reserved now: a ring that outgrew a full /dev/shm would crash a put with SIGBUS.
        try:
            os.posix_fallocate(fd, 0, DATA_AT + capacity)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                raise
            raise BackendUnavailable(
                f"{SHM_DIR} has no room for a shm:// queue of capacity={capacity} "
                f"({exc.strerror}); choose a smaller capacity, or free or enlarge {SHM_DIR}"
            ) from None
        with mmap.mmap(fd, DATA_AT) as mm:
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
            for at in (NOT_EMPTY_AT,) if mutex is self.put_mutex else (NOT_FULL_AT, TASKS_AT):
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
        words = PUTS.unpack_from(self.mm, PUT_AT)
        tail, puts = words[2:4] if words[4] & 1 else words[:2]
        return words, tail, puts, words[7]

    def get_end(self) -> tuple[tuple[int, ...], int, int, int, int]:
        """The get end's words, then its head, items got of the frame there, items got and
        tasks done."""
        words = GETS.unpack_from(self.mm, GET_AT)
        head, sub, gets, done = words[4:8] if words[8] & 1 else words[:4]
        return words, head, sub, gets, done

    def commit_put(self, words: tuple[int, ...], tail: int, puts: int, shutdown: int) -> None:
        """Make (tail, puts) the put end's state and tell the getters: the other copy, then the
        version that makes it current, then the not-empty word. Each is written whole, and
        never with struct's ``pack_into``, which zeroes its bytes before it writes them: a
        process killed there, or a reader without the lock, would see a state the queue
        never had (its counts at 0)."""
        mm, version = self.mm, words[4]
        at = PUT_AT + 16 * ((version + 1) & 1)
        mm[at : at + 16] = _PAIR.pack(tail, puts)
        mm[PUT_AT + 32 : PUT_AT + 40] = _WORD.pack(version + 1)
        mm[NOT_EMPTY_AT : NOT_EMPTY_AT + 8] = _WORD.pack(words[5] + 1)
        if shutdown != words[7]:
            mm[_SHUTDOWN_AT : _SHUTDOWN_AT + 4] = _SLEEPERS.pack(shutdown)

    def commit_get(
        self,
        words: tuple[int, ...],
        head: int,
        sub: int,
        gets: int,
        done: int,
        tell: bool,
        tasks: bool,
    ) -> None:
        """Make (head, sub, gets, done) the get end's state, as ``commit_put`` does; ``tell``
        the putters (the not-full word) and the joiners (``tasks``)."""
        mm, version = self.mm, words[8]
        at = GET_AT + 32 * ((version + 1) & 1)
        mm[at : at + 32] = _QUAD.pack(head, sub, gets, done)
        mm[GET_AT + 64 : GET_AT + 72] = _WORD.pack(version + 1)
        if tell:
            mm[NOT_FULL_AT : NOT_FULL_AT + 8] = _WORD.pack(words[9] + 1)
        if tasks:
            mm[TASKS_AT : TASKS_AT + 8] = _WORD.pack(words[10] + 1)

    # The other end, without its lock -----------------------------------------------------------

    def see_tail(self) -> int:
        """The tail as last committed (getters), without the put lock where that is safe."""
        if _ORDERED:
            mm = self.mm
            while True:  # until no commit came between reading the version and the copies
                version = _WORD.unpack_from(mm, PUT_AT + 32)[0]
                t0, _, t1, _, again = _PUT_COPIES.unpack_from(mm, PUT_AT)
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
                version = _WORD.unpack_from(mm, GET_AT + 64)[0]
                h0, _, g0, _, h1, _, g1, _, again = _GET_COPIES.unpack_from(mm, GET_AT)
                if version == again:
                    self.head_seen, self.gets_seen = (h1, g1) if version & 1 else (h0, g0)
                    return

    def puts_seen(self) -> int:
        """Items put, as last committed, or 0 where that cannot be read without the lock."""
        if not _ORDERED:
            return 0
        mm = self.mm
        while True:
            version = _WORD.unpack_from(mm, PUT_AT + 32)[0]
            _, p0, _, p1, again = _PUT_COPIES.unpack_from(mm, PUT_AT)
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
        self.mm[at : at + 8] = _WORD.pack(_WORD.unpack_from(self.mm, at)[0] + 1)

    def sleep(self, at: int, timeout: float | None) -> None:
        """Holding both locks: release them, sleep until the futex word at ``at`` changes (or
        ``timeout``), take them again. Sleepers are counted, so a change with none costs no
        system call."""
        mm, count_at = self.mm, _SLEEPERS_AT[at]
        expected = _WORD.unpack_from(mm, at)[0] & _MASK32
        mm[count_at : count_at + 4] = _SLEEPERS.pack(_SLEEPERS.unpack_from(mm, count_at)[0] + 1)
        self.release_both()
        try:
            futex_wait(self.addr + at, expected, SLICE if timeout is None else min(timeout, SLICE))
        finally:
            self.take_both()
            # Never below 0: a count left by a sleeper that was killed is not paid back.
            sleepers = _SLEEPERS.unpack_from(mm, count_at)[0]
            mm[count_at : count_at + 4] = _SLEEPERS.pack(max(sleepers - 1, 0))

    def wake(self, at: int, count: int = WAKE_ALL) -> None:
        futex_wake(self.addr + at, count)

    def tell_everyone(self, shut: bool = False, drain: bool = False, held: int = 0) -> None:
        """Wake every sleeper, after marking the queue shut down (and emptying it, each item
        counting as done, with the ``held`` items a handle drops) when asked."""
        self.take_both()
        try:
            put_words, tail, puts, was_shut = self.put_end()
            words, head, sub, gets, done = self.get_end()
            self.commit_put(put_words, tail, puts, 1 if shut else was_shut)
            if drain:
                done += min(puts - gets + held, puts - done)
                head, sub, gets = tail, 0, puts
            self.commit_get(words, head, sub, gets, done, True, True)
        finally:
            self.release_both()
        for at in (NOT_EMPTY_AT, NOT_FULL_AT, TASKS_AT):
            self.wake(at)

    # Frames --------------------------------------------------------------------------------

    def write(self, pos: int, payload: bytes, crc: int) -> int:
        """Write a frame at byte position ``pos``; the position after it."""
        FRAME.pack_into(self.mm, DATA_AT + pos % self.capacity, len(payload), crc)
        self.write_span(pos + 8, payload)
        return pos + 8 + pad(len(payload))

    def write_span(self, pos: int, data: bytes) -> int:
        """Write ``data`` at byte position ``pos``, going on at the start of the ring where it
        reaches the end; the position after it."""
        mm, at = self.mm, DATA_AT + pos % self.capacity
        first = self.data_end - at
        if len(data) <= first:
            mm[at : at + len(data)] = data
        else:
            view = memoryview(data)
            mm[at : self.data_end] = view[:first]
            mm[DATA_AT : DATA_AT + len(data) - first] = view[first:]
        return pos + len(data)

    def span(self, pos: int, length: int) -> bytes:
        """The ``length`` bytes at byte position ``pos``, across the end of the ring."""
        mm, start = self.mm, DATA_AT + pos % self.capacity
        end = start + length
        if end <= self.data_end:
            return mm[start:end]
        return mm[start : self.data_end] + mm[DATA_AT : end - self.capacity]

    def read(self, pos: int, sub: int, limit: int) -> tuple[bytes, int, int, int]:
        """The next item at ``pos`` (its ``sub``-th if a batch frame is there): payload, CRC,
        and the position and sub after it. ``Damaged`` when the frame does not end by
        ``limit`` (the tail)."""
        length, crc = FRAME.unpack_from(self.mm, DATA_AT + pos % self.capacity)
        if length == BATCH:
            payloads, crcs, pos, sub = self.take_batch(pos, sub, limit, 1)
            return payloads[0], crcs[0] if crcs else 0, pos, sub
        after = pos + 8 + pad(length)
        if after > limit or sub:
            raise Damaged(pos, f"a frame of {length} bytes at position {pos}", limit)
        return self.span(pos + 8, length), crc, after, 0

    def take_batch(
        self, pos: int, sub: int, limit: int, most: int
    ) -> tuple[list[bytes], list[int], int, int]:
        """Up to ``most`` items of the batch frame at ``pos``, from its ``sub``-th on: their
        payloads, CRCs, and the position and sub after them."""
        mm: Any = self.mm
        at, checksum = DATA_AT + pos % self.capacity, self.checksum
        if at + 16 <= self.data_end:
            _, count, each, area = _BATCH_HEAD.unpack_from(mm, at)
        else:
            _, count, each, area = _BATCH_HEAD.unpack(self.span(pos, 16))
        varied = each == _VARIED
        tables = 4 * count * (varied + checksum)
        size = 16 + tables + area
        after = pos + pad(size)
        if after > limit or count < 2 or sub >= count or not (varied or each * count == area):
            raise Damaged(pos, f"a batch frame of {count} items, {area} bytes", limit)
        if at + size > self.data_end:
            mm, at = self.span(pos, size), 0  # it wraps around: one copy, read from there
        take = min(most, count - sub)
        payloads_at = at + 16 + tables
        if varied:
            first = sub - 1 if sub else 0
            ends = struct.unpack_from(f"<{take + (sub > 0)}I", mm, at + 16 + 4 * first)
            starts = ends[:-1] if sub else (0, *ends[:-1])
            if sub:
                ends = ends[1:]
            if max(ends) > area:
                raise Damaged(pos, f"a batch frame of {count} items, {area} bytes", limit)
            payloads = [
                mm[payloads_at + start : payloads_at + end]
                for start, end in zip(starts, ends, strict=True)
            ]
        else:
            payloads = _split_uniform(mm, payloads_at + sub * each, each, take)
        crcs: list[int] = []
        if checksum:
            crcs_at = at + 16 + 4 * count * varied + 4 * sub
            crcs = list(struct.unpack_from(f"<{take}I", mm, crcs_at))
        sub += take
        if sub == count:
            return payloads, crcs, after, 0
        return payloads, crcs, pos, sub

    def frames(
        self, pos: int, sub: int, limit: int, max_items: int
    ) -> tuple[list[bytes], list[int], int, int]:
        """Up to ``max_items`` items from ``pos`` and ``sub`` (at least one is there), reading
        the tail again when ``limit`` is reached: their payloads, CRCs, and the position and
        sub after them. They stop before a damaged frame; ``Damaged`` if it is the first."""
        mm, cap, data_end, unpack_frame = self.mm, self.capacity, self.data_end, FRAME.unpack_from
        frames: list[bytes] = []
        crcs: list[int] = []
        add_frame, add_crc = frames.append, crcs.append
        left = max_items
        while left:
            if pos >= limit and pos >= (limit := self.see_tail()):
                break
            # The usual case, written out: whole frames up to the tail or the ring's end.
            start = at = DATA_AT + pos % cap
            stop = min(data_end, at + limit - pos)
            while at < stop:
                n, crc = unpack_frame(mm, at)
                after = at + 8 + ((n + 7) & ~7)
                if after > stop or n == BATCH or sub:
                    break
                add_frame(mm[at + 8 : at + 8 + n])
                add_crc(crc)
                at = after
                left -= 1
                if not left:
                    break
            pos += at - start
            if left and at < stop:  # a batch frame, one that wraps around, or a damaged one
                try:
                    if unpack_frame(mm, at)[0] == BATCH:
                        payloads, more, pos, sub = self.take_batch(pos, sub, limit, left)
                        frames += payloads
                        crcs += more
                        left -= len(payloads)
                    else:
                        data, crc, pos, sub = self.read(pos, sub, limit)
                        add_frame(data)
                        add_crc(crc)
                        left -= 1
                except Damaged:
                    if frames:
                        break  # the next get meets it
                    raise
        return frames, crcs, pos, sub

    def drop(self) -> tuple[int, bytes]:
        """Holding both locks: drop every item in the ring, counting them done, when no frame
        can be found from the head (the frame there is damaged, or the head has reached the
        tail short of the items counted put); how many, and the bytes dropped. (0, b"") when
        frames can be found (another get dropped them already)."""
        _, tail, puts, _ = self.put_end()
        words, head, sub, gets, done = self.get_end()
        if head < tail:
            try:
                self.read(head, sub, tail)
            except Damaged:
                pass
            else:
                return 0, b""
        elif gets >= puts:
            return 0, b""
        dropped = puts - gets
        data = self.span(head, tail - head)
        done += min(dropped, puts - done)
        self.commit_get(words, tail, 0, puts, done, True, done == puts)
        return dropped, data


class Damaged(CorruptMessage):
    """The frame at ``pos`` runs past the last one written, or contradicts itself."""

    def __init__(self, pos: int, what: str, limit: int) -> None:
        super().__init__(
            f"the shm:// ring is damaged: {what} at position {pos} runs past the last frame "
            f"written ({limit}) or contradicts itself. Something other than queuekit wrote "
            "into the segment"
        )
        self.pos = pos


@lru_cache(maxsize=64)
def _splitter(each: int, count: int) -> struct.Struct:
    return struct.Struct(f"{each}s" * count)


def _split_uniform(buf: Any, at: int, each: int, count: int) -> list[bytes]:
    """``count`` payloads of ``each`` bytes, end to end from ``at``: split in C."""
    payloads: list[bytes] = []
    while count > _SPLIT:
        payloads += _splitter(each, _SPLIT).unpack_from(buf, at)
        at += each * _SPLIT
        count -= _SPLIT
    payloads += _splitter(each, count).unpack_from(buf, at)
    return payloads


_HEADERS = [FRAME.pack(n, 0) for n in range(1024)]
"""The headers of small frames without checksums, made once."""


def _words(values: Any) -> bytes:
    table = array("I", values)
    if sys.byteorder == "big":
        table.byteswap()
    return table.tobytes()


def lay_out(frames: list[bytes], crcs: list[int] | None, lengths: list[int] | None = None) -> bytes:
    """Items as the ring holds them: made outside the lock, copied into the ring at once under
    it. Several are one batch frame (but for more than 4 GiB of payloads: frames end to end)."""
    if lengths is None:
        lengths = list(map(len, frames))
    count, area = len(lengths), sum(lengths)
    if count < 2 or area > _MAX_AREA:
        return _lay_out_frames(frames, crcs)
    each = lengths[0]
    parts = [b"", b""]
    if lengths.count(each) != count:
        each = _VARIED
        parts.append(_words(accumulate(lengths)))
    if crcs is not None:
        parts.append(_words(crcs))
    size = 16 + area + 4 * count * ((each == _VARIED) + (crcs is not None))
    parts[0] = _BATCH_HEAD.pack(BATCH, count, each, area)
    parts += frames
    parts.append(_PADS[size & 7])
    return b"".join(parts)


def _lay_out_frames(frames: list[bytes], crcs: list[int] | None) -> bytes:
    parts: list[bytes] = []
    add, pads = parts.extend, _PADS
    if crcs is None:
        header, headers = FRAME.pack, _HEADERS
        for data in frames:
            n = len(data)
            add((headers[n] if n < 1024 else header(n, 0), data, pads[n & 7]))
    else:
        for data, crc in zip(frames, crcs, strict=True):
            add((FRAME.pack(len(data), crc), data, pads[len(data) & 7]))
    return b"".join(parts)


def path_of(name: str) -> str:
    return f"{SHM_DIR}/{PREFIX}{name}"


def new_file(capacity: int, maxsize: int, checksum: bool, name: str = "") -> int:
    """A new, initialized segment: its descriptor. A private one (no ``name``) never has a
    name; a named one is made under a temporary name and linked to ``name`` only once
    initialized, so that no process ever attaches to one half made. ``FileExistsError`` when
    ``name`` is taken."""
    fd = -1
    if not name:
        with contextlib.suppress(AttributeError, OSError):
            fd = os.open(SHM_DIR, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    temporary = path_of(f"{name or 'private'}.{secrets.token_hex(6)}.tmp")
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
        Segment.initialize(fd, capacity, maxsize, checksum)
        if name:
            os.link(temporary, path_of(name))
    except BaseException:
        os.close(fd)
        raise
    finally:
        if temporary:
            os.unlink(temporary)
    return fd


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidURL(
            f"shm://{name}: a queue name is 1 to 200 letters, digits, '_', '.' or '-', not "
            "starting with '.' or '-'"
        )


def as_capacity(value: object) -> int:
    size = as_size(value)
    if not MIN_CAPACITY <= size <= MAX_CAPACITY:
        raise ValueError(f"expected a size from {MIN_CAPACITY} to {MAX_CAPACITY} bytes (1 TiB)")
    return pad(size)  # frames are 8-byte aligned
