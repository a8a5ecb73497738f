"""``pipe://``: one kernel pipe shared by processes; a put is in the kernel when it returns.

There is no feeder thread. ``put`` serializes the item in the caller and writes it, as one
frame, into the pipe before it returns (or raises): a producer never waits at exit for data it
queued, and a full pipe is an error the producer sees, :class:`PipeFull` (a ``queue.Full``),
rather than a process that cannot be joined. Linux only.

One shared lock (see :mod:`queuekit._procstate`) covers the counts and the pipe: a put waits
for room, writes its frame (a batch: all its frames, in one ``write``) and counts it in; a get
claims items and reads exactly their frames, which are whole in the kernel, in one ``read``,
so neither call ever waits inside a system call. The shared state notes the size of every
frame in the pipe, so a get knows how many bytes its claim takes before it reads them, and
splits them after letting go of the lock. The queue is one global FIFO. A frame is a 12-byte
header (magic, version, flags, the payload's length, and a check word derived from the length)
and the payload. Bytes another program wrote into the pipe between frames show in the next
header a get reads, or, for a batch, as more bytes in the pipe than counted: the get takes them
out whole, under the lock (the count says how many), raises :class:`~queuekit.CorruptMessage`
with them, and keeps the items it claimed for the handle's next gets. A header that is still
wrong after that, a length beyond the bytes counted, or bytes missing raise ``CorruptMessage``
from then on, for every call on the queue, instead of returning garbage or waiting for bytes
that will not come. The payload itself carries no checksum: frames are written whole under
the lock, so only a foreign writer can damage the stream, and it shows in the headers (a CRC-32
per payload cost a third of the time of a small item in a batch).

Capacity. ``capacity=`` is the kernel's pipe size (``F_SETPIPE_SZ``, rounded up by the kernel
to a power-of-two number of pages; ``info()`` shows the real size). The kernel stores a pipe
in page slots, not bytes: a write that does not fit the last page's free space starts a new
page, so a full pipe may hold far fewer bytes than its size. Frames are therefore only written
while the bytes in the pipe, the new ones included, stay within the *frame budget*,
``(pages // 2) * (page_size + 1)``, about half the capacity: with Linux's ``pipe_write``,
every page but the oldest and the newest holds, together with the page after it, more than
a page of bytes, so that many bytes never need more slots than the pipe has. (Should a
kernel take only part of a write all the same, the rest is written once readers make room,
with other putters held back, and ``info()["late_writes"]`` counts it.) A batch may also go
into an empty pipe as long as it fits the whole capacity. One item may be at most the budget
less the header (``capabilities.max_message_size``); anything larger, or a batch larger than
the capacity, raises :class:`~queuekit.MessageTooLarge` at once. A frame that does not fit
now waits like any put for room, and raises ``PipeFull`` when the wait runs out. Putters
waiting for room are served oldest first: the one that has waited longest keeps the bytes it
needs from later puts, so a large item is not starved by a stream of small ones (a putter
killed while waiting keeps them for ``HOLD_STALE`` seconds).

Readers. Every handle holds both ends of the pipe, so a putter can always be read by its own
process; ``close_reader()`` gives up a handle's read end. A putter waiting for room checks
twice a second whether any read end is left, and raises
:class:`~queuekit.BackendUnavailable` (as does a write that meets a pipe nobody can read)
once every handle in every process has closed its read end or exited. Python ignores
``SIGPIPE``; a program that restores its default dies of it like any pipe writer.

Kills. The lock is robust: a process killed at any instant, even holding it, freezes no one.
Before its one ``write`` or ``read`` under the lock, a put or get notes in the shared state what
it is about to do (a journal); the next process to take the lock after a death compares the
bytes the kernel holds (``FIONREAD``) with the journal, and finishes or undoes the dead one's
call: a write the kernel took is counted in, one it did not is forgotten; frames a dead getter
did not read go back to the queue, and the rest of a read it did not finish is skipped. A write
that fits the pipe is never cut by a kill (the kernel copies it whole), so only the frames a
killed getter had read are lost. A stream that cannot be made whole again (bytes the journal
does not explain, or a putter killed while finishing a write the kernel took in part, see
below) raises ``CorruptMessage`` from then on; nothing waits for bytes that will not come.

A message whose frame is whole but which the serializer cannot load is counted as a task done
and its error raised. A ``get_many`` that meets one returns the items before it and keeps it
and the rest in the handle, as payloads, which its next gets take before the pipe: they are
not in ``qsize()``, an immediate shutdown discards them as done, and ``close()`` puts them back
at the back of the queue (or raises :class:`~queuekit.QueueError`, saying to get them first,
and stays open). A process killed holding them loses them.
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import os
import select
import struct
import threading
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
from .._errors import (
    BackendUnavailable,
    CorruptMessage,
    Full,
    InvalidURL,
    MessageTooLarge,
    QueueClosed,
    QueueError,
    ShutDown,
)
from .._pipeends import PipeEnds, bytes_in_pipe, pid_alive
from .._procstate import (
    COUNT,
    FIRST_FREE,
    IMMEDIATE,
    PROCESS_PARAMS,
    SHUTDOWN,
    UNFINISHED,
    ProcessSharedState,
    RobustLock,
    SharedStateHandle,
    primitives_context,
    view_of,
)
from .._protocol import Capabilities
from .._serializers import Serializer, dumps_many, get_serializer, loads_many
from .._shmsync import UNAVAILABLE, mutex_trylock
from .._urls import Param, QueueURL, as_size, bind_params

__all__ = ["DEFAULT_CAPACITY", "PipeFull", "PipeQueue", "frame_budget"]

T = TypeVar("T")

DEFAULT_CAPACITY = 1024 * 1024
"""Bytes asked for when ``capacity`` is not given (less if ``pipe-max-size`` is lower)."""

PAGE = os.sysconf("SC_PAGE_SIZE")
MAX_SIZE_FILE = "/proc/sys/fs/pipe-max-size"

# A frame header: magic (2 bytes), version, flags, the payload's length, and that length again
# xor _CHECK, little-endian. The first four bytes are read as one number, the tag.
_HEADER = struct.Struct("<III")
_MAGIC = 0x4B51
_VERSION = 2
_TAG = _MAGIC | _VERSION << 16  # flags 0
_CHECK = 0xA5C3_5A3C
_HEAD = _HEADER.size

# Below this, a put joins header and payload (a small copy) rather than passing both to writev.
_JOIN_BELOW = 16 * 1024

# Slots of the shared array beyond the common ones.
_BYTES = FIRST_FREE  # bytes of counted frames in the pipe
_TORN = FIRST_FREE + 1  # pid of a putter finishing a write outside the lock; other putters wait
_CORRUPT = FIRST_FREE + 2  # _BROKEN: the stream is corrupt; _SKIPPING: see _SKIP
_LATE = FIRST_FREE + 3  # writes the kernel took only in part (see _finish_write)
# The longest-waiting putter keeps the bytes it needs from later putters (see has_room): how
# many, whose (a thread id, unique on the system), since when it waits, and when it last
# checked (monotonic milliseconds).
_HOLD, _HOLDER, _HOLD_SINCE, _HOLD_SEEN = (FIRST_FREE + i for i in range(4, 8))
# Frames read and frames written since the queue was made: the frame numbered i has its
# payload's length in the ring of lengths (``_Pipe.sizes``) at i % ring.
_READ, _WRITTEN = FIRST_FREE + 8, FIRST_FREE + 9
# The journal of the call under the lock, for the repair after a death (see _Pipe.repair):
# _OP is frames * _PER_OP + bytes, positive for a put and negative for a get, 0 for none;
# then the values it changes, as they were before it.
_OP, _OP_SEQ, _OP_BYTES, _OP_UNFINISHED = (FIRST_FREE + i for i in range(10, 14))
# Bytes at the front of the pipe that the next get skips: the rest of a read a killed getter
# did not finish, when the process that repaired the queue had no read end.
_SKIP = FIRST_FREE + 14
_EXTRA_SLOTS = 15
_PER_OP = 1 << 32  # more than the bytes a pipe holds
_BROKEN, _SKIPPING = 1, 2

HOLD_STALE = 3.0
"""Seconds after which a hold whose owner stopped checking (a killed putter) is void."""


class _Foreign(CorruptMessage):
    """Bytes another program wrote into the pipe, taken out of it; ``payloads`` are the items
    the get had claimed, which its handle keeps for its next gets."""

    def __init__(self, data: bytes, payloads: list[bytes]) -> None:
        super().__init__(
            f"pipe://: {len(data)} bytes in the pipe were not written by this queue (another "
            "program wrote into it); they are in this error's .data, and the queue goes on "
            "with the next item",
            data=data,
        )
        self.payloads = payloads


class PipeFull(Full):
    """A frame did not fit the pipe in time (a ``queue.Full``); the message says why and what
    to do."""


def frame_budget(capacity: int) -> int:
    """The bytes a pipe of ``capacity`` may hold with no write ever waiting for a page slot."""
    return (capacity // PAGE // 2) * (PAGE + 1)


def _kernel_size(requested: int) -> int:
    pages = -(-requested // PAGE)
    return PAGE * (1 << (pages - 1).bit_length())


def _pipe_max_size() -> int | None:
    try:
        with open(MAX_SIZE_FILE) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _set_capacity(fd: int, capacity: object) -> int:
    """Give the pipe ``capacity`` bytes (None: the default); the size the kernel made."""
    limit = _pipe_max_size()
    if capacity is None:
        want = min(DEFAULT_CAPACITY, limit or DEFAULT_CAPACITY)
    else:
        try:
            want = as_size(capacity)
        except (TypeError, ValueError) as exc:
            raise InvalidURL(f"bad value {capacity!r} for 'capacity': {exc}") from None
    if not PAGE < want < 1 << 31:
        raise InvalidURL(
            f"capacity={want}: a pipe:// capacity must be more than one page ({PAGE} bytes) and "
            "less than 2GiB; ask for 64KiB or more, like capacity=1MiB"
        )
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, want)
    except PermissionError:
        size = _kernel_size(want)
        if limit is not None and size > limit:
            raise InvalidURL(
                f"capacity={want} makes a pipe of {size} bytes (the kernel rounds up to a "
                f"power-of-two number of pages), above the limit for unprivileged processes, "
                f"{MAX_SIZE_FILE} = {limit}; ask for at most capacity={limit}, or have an "
                "administrator raise fs.pipe-max-size"
            ) from None
        raise BackendUnavailable(
            f"the kernel refused a pipe of {size} bytes: this user's pipes hold more pages "
            "than /proc/sys/fs/pipe-user-pages-soft allows; close queues no longer used, or "
            "ask for a smaller capacity="
        ) from None
    made: int = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    return made


def _corrupt(what: str) -> CorruptMessage:
    return CorruptMessage(
        f"pipe://: the byte stream in the pipe is corrupt ({what}): something other than this "
        "queue read from or wrote into the pipe. The items in it cannot be recovered: shut the "
        "queue down and open a new one."
    )


class _Headers(dict[int, bytes]):
    """Frame headers by payload length, each packed once: a batch looks them up in C."""

    def __missing__(self, length: int) -> bytes:
        if len(self) >= 4096:
            self.clear()
        head = self[length] = _HEADER.pack(_TAG, length, length ^ _CHECK)
        return head


_HEADERS = _Headers()


class _Frames(dict[int, struct.Struct]):
    """The layout of a frame by payload length: header and payload, as two byte strings."""

    def __missing__(self, length: int) -> struct.Struct:
        if len(self) >= 256:
            self.clear()
        layout = self[length] = struct.Struct(f"<{_HEAD}s{length}s")
        return layout


_FRAMES = _Frames()

_Head = tuple[int, int, int]
"""A frame header as read: (tag, payload length, check)."""


def _check(head: _Head, left: int) -> int:
    """The payload length of ``head``; ``CorruptMessage`` unless it is a frame header whose
    payload fits the ``left`` bytes counted in the pipe after it."""
    tag, length, check = head
    if tag != _TAG or check != length ^ _CHECK:
        raise _corrupt(f"a frame header reads {_HEADER.pack(tag, length, check).hex()}")
    if length > left:
        raise _corrupt(f"a frame claims {length} bytes where {left} remain")
    return length


def _split(data: bytes, head: _Head | None, k: int) -> list[bytes]:
    """The payloads of the ``k`` frames that make up ``data`` exactly (the first one's header
    already read, if ``head`` is given)."""
    offset, end = 0, len(data)
    if head is None and k > 1 and not end % k:
        # Frames of one size (items of one shape) are split and checked in C: every header
        # must be the one for that size.
        length = end // k - _HEAD
        if length >= 0:
            heads, bodies = zip(*_FRAMES[length].iter_unpack(data), strict=True)
            if heads.count(_HEADERS[length]) == k:
                return list(bodies)
    payloads: list[bytes] = []
    if head is not None:
        length = _check(head, end)
        payloads.append(data[:length])
        offset, k = length, k - 1
    unpack, append = _HEADER.unpack_from, payloads.append  # the loop is get_many's
    try:
        for _ in range(k):
            tag, length, check = unpack(data, offset)
            offset += _HEAD
            if tag != _TAG or check != length ^ _CHECK or length > end - offset:
                _check((tag, length, check), end - offset)  # raises; repeated here for speed
            append(data[offset : offset + length])
            offset += length
    except struct.error:
        raise _corrupt(f"a frame header is cut short at {end - offset} bytes") from None
    if offset != end:
        raise _corrupt(f"{end - offset} bytes are left over after the counted frames")
    return payloads


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _poll(fd: int, events: int, timeout_ms: int) -> int:
    poller = select.poll()
    poller.register(fd, events)
    found = 0
    for _, mask in poller.poll(timeout_ms):
        found |= mask
    return found


class _Pipe(PipeEnds, ProcessSharedState):
    """The kernel pipe and the queue's shared state; this process's ends of the pipe."""

    PROBE_EVERY = 0.5

    def __init__(self, maxsize: int, context: str | None, capacity: object) -> None:
        # The pipe first: a capacity the kernel refuses costs no semaphores.
        self.rfd, self.wfd = os.pipe2(os.O_CLOEXEC)
        try:
            self.capacity = _set_capacity(self.wfd, capacity)
            # Non-blocking, so that a stream short of bytes is an error and not a hang, and a
            # write the budget misjudged comes back (see _finish_write) instead of blocking.
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)
            self.budget = frame_budget(self.capacity)
            # A frame takes at least a header, and the pipe never holds more than its capacity.
            self.ring = self.capacity // _HEAD + 2
            super().__init__(maxsize, context, extra_slots=_EXTRA_SLOTS)
            if not isinstance(self.lock, RobustLock):
                raise BackendUnavailable(
                    f"pipe:// needs robust process-shared mutexes and memfd_create: {UNAVAILABLE}"
                )
            self.robust: RobustLock = self.lock
            self.sizes = primitives_context(self.context).RawArray(ctypes.c_uint32, self.ring)
            self._view()
        except BaseException:
            self.close_fds()
            raise

    def _view(self) -> None:
        self.sizes_view = view_of(self.sizes)

    def __getstate__(self) -> dict[str, Any]:
        # Only while a child process is being started (the handle checked): the child gets
        # its own copies of the ends.
        state = {**super().__getstate__(), **self.ends_state()}
        del state["sizes_view"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.restore_ends(state)
        super().__setstate__(state)
        self._view()

    def close_reader(self) -> None:
        if self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1

    # --- Putting ----------------------------------------------------------------------------

    def fits(self, waiting: int, nbytes: int) -> bool:
        return waiting + nbytes <= self.budget or (not waiting and nbytes <= self.capacity)

    def has_room(self, n: int, nbytes: int, since: float | None) -> bool:
        # Fair shares: frames only go in beside the bytes held for the longest-waiting putter,
        # so the pipe drains until that one fits, and a large frame is not starved by a stream
        # of smaller ones.
        s = self.slots
        if 0 < self.maxsize < s[COUNT] + n or s[_WRITTEN] - s[_READ] + n >= self.ring:
            return False
        torn = s[_TORN]
        if torn:
            if pid_alive(torn):
                return False
            s[_TORN], s[_CORRUPT] = 0, _BROKEN
            raise _corrupt("a putter was killed while it finished a write the kernel took in part")
        waiting, hold = s[_BYTES], s[_HOLD]
        if not hold:
            return self.fits(waiting, nbytes) or self._hold(nbytes, since)
        now = _ms(time.monotonic())
        if s[_HOLDER] == threading.get_native_id():
            if self.fits(waiting, nbytes):
                s[_HOLD] = 0
                self.made_room()  # older waiters than the next putter may take the hold
                return True
            s[_HOLD_SEEN] = now
            return False
        if now - s[_HOLD_SEEN] >= HOLD_STALE * 1000:  # its owner died or stopped waiting
            s[_HOLD] = 0
            return self.fits(waiting, nbytes) or self._hold(nbytes, since)
        if waiting + nbytes + hold <= self.budget:
            return True
        if (now if since is None else _ms(since)) < s[_HOLD_SINCE]:
            self._hold(nbytes, since)
        return False

    def _hold(self, nbytes: int, since: float | None) -> bool:
        s = self.slots
        now = _ms(time.monotonic())
        s[_HOLD], s[_HOLDER] = nbytes, threading.get_native_id()
        s[_HOLD_SINCE] = now if since is None else _ms(since)
        s[_HOLD_SEEN] = now
        return False

    def release_hold(self) -> None:
        """Give up this thread's hold, if it has one (its put failed)."""
        s = self.slots
        if s[_HOLD] and s[_HOLDER] == threading.get_native_id():
            s[_HOLD] = 0
            self.made_room()

    def no_room(self, n: int, nbytes: int) -> Full:
        if 0 < self.maxsize < self.slots[COUNT] + n:
            return Full()
        s = self.slots
        held = ""
        if s[_HOLD] and s[_HOLDER] != threading.get_native_id():
            held = f" and the {s[_HOLD]} bytes kept for a put that has waited longer"
        return PipeFull(
            f"pipe:// is full: a frame of {nbytes} bytes does not fit beside the {s[_BYTES]} "
            f"bytes waiting in the pipe{held} (capacity {self.capacity} bytes, of which frames "
            f"fill at most {self.budget} at once). Let consumers drain the queue (get from it "
            "before joining its producers), raise capacity=, or use shm:// or redis:// to hold "
            "more"
        )

    def probe(self) -> None:
        if _poll(self.wfd, 0, 0) & select.POLLERR:
            raise self._unreadable()

    def _unreadable(self) -> BackendUnavailable:
        return BackendUnavailable(
            "pipe://: no process can read the pipe any more (every handle has exited or called "
            "close_reader()), so no put can complete; get from a handle that keeps its read "
            "end, or open a new queue"
        )

    def send(
        self,
        frames: bytes | list[bytes],
        lengths: int | array.array[int],
        nbytes: int,
        block: bool,
        timeout: float | None,
        given_back: bool = False,
    ) -> None:
        """Write frames whose payloads have ``lengths`` (one frame's, or an array of them),
        ``nbytes`` in all with their headers, once they fit, and count them in; as unfinished
        tasks too, unless they are ``given_back`` (got, and unfinished already)."""
        s = self.slots
        n = 1 if isinstance(lengths, int) else len(lengths)
        tried = mutex_trylock(self.mutex)
        if tried:
            self.robust.locked(tried)
        try:
            # The usual case, room now and nobody waiting for it first, is told apart from the
            # rest with the fewest looks at the shared state; the rest (and a timeout, to be
            # checked) take the full rules.
            if (
                timeout is not None
                or s[_BYTES] + nbytes > self.budget
                or s[_HOLD]
                or s[_TORN]
                or s[SHUTDOWN]
                or s[_CORRUPT] == _BROKEN
                or 0 < self.maxsize < s[COUNT] + n
            ):
                if s[_CORRUPT] == _BROKEN:
                    raise _corrupt("found by an earlier get")
                try:
                    self.wait_for_room(n, nbytes, block, timeout)
                except BaseException:
                    self.release_hold()
                    raise
            if not n:
                return
            seq = s[_WRITTEN]
            at, ring = seq % self.ring, self.ring
            if isinstance(lengths, int):
                self.sizes_view[at] = lengths
            elif at + n <= ring:
                self.sizes_view[at : at + n] = lengths
            else:
                self.sizes_view[at:] = lengths[: ring - at]
                self.sizes_view[: at + n - ring] = lengths[ring - at :]
            # A repair counts a write it finds done in: as tasks, for frames given back, from
            # what the count will be once they leave it.
            unfinished = s[UNFINISHED] - n if given_back else s[UNFINISHED]
            s[_OP_SEQ], s[_OP_BYTES], s[_OP_UNFINISHED] = seq, s[_BYTES], unfinished
            s[_OP] = n * _PER_OP + nbytes
            if not self._write(frames, nbytes):
                s[_OP] = 0
                if given_back:  # discarded by an immediate shutdown: done
                    self.count_done(n)
                return
            s[_WRITTEN] = seq + n
            s[_BYTES] += nbytes
            self.added(n)
            if given_back:
                s[_OP_UNFINISHED] = s[UNFINISHED] - n  # _finish_write may have reset it
                s[UNFINISHED] -= n
            s[_OP] = 0
        finally:
            self.release()

    def _write(self, frames: bytes | list[bytes], nbytes: int) -> bool:
        """Write the frames whole; False if an immediate shutdown discarded them meanwhile."""
        try:
            if isinstance(frames, bytes):
                written = os.write(self.wfd, frames)
            else:
                written = os.writev(self.wfd, frames)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:
            raise self._unreadable() from None
        return written == nbytes or self._finish_write(frames, written)

    def _finish_write(self, frames: bytes | list[bytes], written: int) -> bool:
        """The budget said the frames fit, and the kernel took only ``written`` bytes.

        Never seen on Linux; if a kernel packs pipes otherwise, the rest of the frame is
        written once readers make room, with the lock released (readers only read counted
        frames, which come before this one) and other putters held back, so no frame tears.
        A putter killed meanwhile leaves the stream torn: the next putter finds it dead.
        """
        rest = memoryview(frames if isinstance(frames, bytes) else b"".join(frames))[written:]
        s = self.slots
        op = s[_OP]
        s[_OP] = 0  # not a call under the lock any more, until it is taken again
        s[_TORN] = os.getpid()
        s[_LATE] += 1
        self.lock.release()
        try:
            while rest:
                if _poll(self.wfd, select.POLLOUT, 500) & select.POLLERR:
                    raise self._unreadable()
                try:
                    rest = rest[os.write(self.wfd, rest) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise self._unreadable() from None
        finally:
            self.lock.acquire()
            s[_TORN] = 0
            self.made_room()
        if s[SHUTDOWN] == IMMEDIATE:
            return False
        # Readers took frames meanwhile; the write is whole in the kernel, beside them.
        s[_OP_BYTES], s[_OP_UNFINISHED] = s[_BYTES], s[UNFINISHED]
        s[_OP] = op
        return True

    def count_done(self, n: int) -> None:
        """With the lock held: ``n`` tasks are done (never below zero: task_done() may have run
        ahead of get())."""
        s = self.slots
        s[UNFINISHED] = max(0, s[UNFINISHED] - n)
        if not s[UNFINISHED]:
            self.all_tasks_done.notify_all()

    def tasks_done(self, n: int = 1) -> None:
        """``n`` tasks are done: messages that will not load, or payloads a handle dropped."""
        with self.lock:
            self.count_done(n)

    # --- Getting ----------------------------------------------------------------------------

    def receive(self, max_items: int, block: bool, timeout: float | None) -> list[bytes]:
        """The payloads of between 1 and ``max_items`` frames, front first."""
        if self.rfd < 0:
            raise QueueClosed(
                "this pipe:// handle gave up its read end (close_reader()); get from a handle "
                "that kept it, or open the queue again"
            )
        s = self.slots
        tried = mutex_trylock(self.mutex)
        if tried:
            self.robust.locked(tried)
        try:
            count = s[COUNT]
            if count and timeout is None and not s[_CORRUPT]:
                # Items there and no timeout to check: claimed at once (see wait_for_items).
                claimed = min(max_items, count)
                s[COUNT] = count - claimed
            else:
                if s[_CORRUPT] == _SKIPPING:
                    self._skip()
                if s[_CORRUPT]:
                    raise _corrupt("found by an earlier get")
                claimed = self.wait_for_items(max_items, block, timeout)
            seq = s[_READ]
            at, ring = seq % self.ring, self.ring
            waiting = s[_BYTES]
            if claimed == 1:
                nbytes = self.sizes_view[at] + _HEAD
            elif seq + claimed == s[_WRITTEN]:  # every frame there
                nbytes = waiting
            elif at + claimed <= ring:
                nbytes = sum(self.sizes_view[at : at + claimed]) + claimed * _HEAD
            else:
                sizes = self.sizes_view
                nbytes = sum(sizes[at:]) + sum(sizes[: at + claimed - ring]) + claimed * _HEAD
            s[_OP_SEQ], s[_OP_BYTES], s[_OP] = seq, waiting, -(claimed * _PER_OP + nbytes)
            s[_READ], s[_BYTES] = seq + claimed, waiting - nbytes
            try:
                data = self._read_exactly(nbytes)
            except CorruptMessage:
                s[_CORRUPT] = _BROKEN
                raise
            finally:
                s[_OP] = 0
            foreign = None
            # A foreign writer shows in the first header read, or, for a batch, as bytes in the
            # pipe beyond those counted (one ioctl a batch): take them out while still alone.
            if (claimed == 1 and data[:_HEAD] != _HEADERS[nbytes - _HEAD]) or (
                claimed > 1 and bytes_in_pipe(self.rfd) > s[_BYTES]
            ):
                data, foreign = self._take_out_foreign(data, seq, claimed)
            self.made_room()
        finally:
            self.release()
        # Split without holding up other processes.
        try:
            if claimed > 1:
                payloads = _split(data, None, claimed)
            elif data[:_HEAD] != _HEADERS[nbytes - _HEAD]:
                length = _check(_HEADER.unpack_from(data), nbytes - _HEAD)  # raises, or:
                raise _corrupt(f"a frame of {length} bytes was counted as {nbytes - _HEAD}")
            else:
                payloads = [data[_HEAD:]]
        except CorruptMessage:
            with self.lock:
                s[_CORRUPT] = _BROKEN
            raise
        if foreign is not None:
            raise _Foreign(foreign, payloads)
        return payloads

    def _take_out_foreign(self, data: bytes, seq: int, k: int) -> tuple[bytes, bytes | None]:
        """The ``k`` frames from ``seq`` that ``data`` should hold, with the bytes of a foreign
        writer that came before one of them taken out (read as many more as the pipe holds
        beyond the counted ones), and those bytes; None if ``data`` holds none. What cannot be
        explained so breaks the stream."""
        s, ring, sizes = self.slots, self.ring, self.sizes_view
        at = 0
        for i in range(seq, seq + k):
            size = sizes[i % ring]
            if data[at : at + _HEAD] != _HEADERS[size]:
                break
            at += _HEAD + size
        else:
            return data, None  # they are further on: a later get finds them
        extra = bytes_in_pipe(self.rfd) - s[_BYTES]
        try:
            more = os.read(self.rfd, extra) if extra > 0 else b""
        except BlockingIOError:
            more = b""
        whole = data[at:] + more
        if not more or len(more) != extra or whole[extra : extra + _HEAD] != _HEADERS[size]:
            s[_CORRUPT] = _BROKEN
            raise _corrupt(f"a frame header reads {data[at : at + _HEAD].hex()}")
        return data[:at] + whole[extra:], whole[:extra]

    def _read_exactly(self, n: int) -> bytes:
        # Every counted frame is whole in the kernel: one read gets it all, or bytes are gone.
        try:
            data = os.read(self.rfd, n)
        except BlockingIOError:
            data = b""
        if len(data) != n:
            raise _corrupt(f"{n} bytes were counted in the pipe, {len(data)} were there")
        return data

    def _skip(self) -> None:
        """Read and drop the rest of a killed getter's read (see :meth:`repair`)."""
        s = self.slots
        # Bytes beyond the counted ones, not the number noted: a getter killed while skipping
        # may have skipped some.
        extra = min(s[_SKIP], bytes_in_pipe(self.rfd) - s[_BYTES])
        if extra > 0:
            self._read_exactly(extra)
        s[_SKIP], s[_CORRUPT] = 0, 0

    # --- After a death ------------------------------------------------------------------------

    def repair(self) -> None:
        """Finish or undo the call of the process that died holding the lock (its journal),
        from what the kernel holds; then count the frames, and wake everyone."""
        s = self.slots
        op = s[_OP]
        if op and s[SHUTDOWN] != IMMEDIATE and s[_CORRUPT] != _BROKEN:
            self._replay(op)
        s[_OP] = 0
        if s[SHUTDOWN] != IMMEDIATE:
            s[COUNT] = s[_WRITTEN] - s[_READ]
        super().repair()

    def _replay(self, op: int) -> None:
        s = self.slots
        skipping = s[_SKIP] if s[_CORRUPT] == _SKIPPING else 0
        there = bytes_in_pipe(self.wfd) - skipping
        before, seq = s[_OP_BYTES], s[_OP_SEQ]
        if op > 0:  # a put: did its write happen?
            n, nbytes = divmod(op, _PER_OP)
            if there not in (before, before + nbytes):
                s[_CORRUPT] = _BROKEN  # a write cut short: nothing after it can be read
                return
            done = n if there > before else 0
            s[_WRITTEN], s[UNFINISHED], s[_BYTES] = seq + done, s[_OP_UNFINISHED] + done, there
            return
        k, nbytes = divmod(-op, _PER_OP)
        if there == before:  # a get that read nothing: its frames go back to the queue
            s[_READ], s[_BYTES] = seq, before
            return
        after = before - nbytes
        if not after <= there < before:
            s[_CORRUPT] = _BROKEN
            return
        s[_READ], s[_BYTES] = seq + k, after
        if there > after:  # a read cut short: the rest of its frames are skipped
            s[_SKIP], s[_CORRUPT] = skipping + there - after, _SKIPPING
            if self.rfd >= 0:
                self._skip()

    def snapshot(self) -> dict[str, Any]:
        facts = super().snapshot()
        with self.lock:
            waiting, late = self.slots[_BYTES], self.slots[_LATE]
        return {**facts, "bytes_waiting": waiting, "late_writes": late}


class PipeQueue(SharedStateHandle[T]):
    SCHEME = "pipe"
    _shared: _Pipe
    PARAMS: ClassVar[list[Param]] = [
        Param(
            "capacity",
            as_size,
            None,
            "kernel pipe size, like 64KiB or 1MiB, rounded up to a power-of-two number of "
            f"pages; default {DEFAULT_CAPACITY // 1024}KiB, or {MAX_SIZE_FILE} if lower",
        ),
        *PROCESS_PARAMS,
    ]

    def __init__(
        self,
        *,
        capacity: int | str | None = None,
        maxsize: int = 0,
        serializer: Serializer | str = "pickle",
        context: str | None = None,
    ) -> None:
        if not hasattr(os, "pipe2") or not hasattr(fcntl, "F_SETPIPE_SZ"):
            raise BackendUnavailable("pipe:// needs Linux (pipe2 and F_SETPIPE_SZ); use mp://")
        self._serializer = get_serializer(serializer)
        self._shared = _Pipe(maxsize, context, capacity)
        self._limit = self._shared.budget - _HEAD
        self._held: deque[bytes] = deque()
        """Payloads a get_many took and did not return, front first (see load_batch)."""

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_held"] = deque()  # this handle's own, not its copy's
        return state

    @classmethod
    def from_url(cls, url: QueueURL, **options: Any) -> PipeQueue[Any]:
        if url.location or url.path or url.username is not None or url.password is not None:
            raise InvalidURL(
                f"{url}: pipe:// takes no host, name or path; write pipe:// with parameters "
                "only, as in pipe://?capacity=1MiB&maxsize=100"
            )
        return cls(**bind_params(url, cls.PARAMS, options))

    def __repr__(self) -> str:
        if self._closed:
            return "<PipeQueue pipe:// closed>"
        return f"<PipeQueue pipe:// capacity={self._shared.capacity} maxsize={self.maxsize}>"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities(ordering="fifo", max_message_size=self._limit)

    def _too_large(self, size: int) -> MessageTooLarge:
        return MessageTooLarge(
            f"a serialized item of {size} bytes can never fit pipe://: in a pipe of "
            f"capacity={self._shared.capacity} an item may take at most {self._limit} bytes "
            "(frames fill at most about half the pipe, so that no write waits half-way). "
            "Raise capacity=, or use shm:// or redis:// for larger items"
        )

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self._check_open()
        data = self._serializer.dumps(item)
        size = _HEAD + len(data)
        if size > self._shared.budget:
            raise self._too_large(len(data))
        head = _HEADERS[len(data)]
        # Small frames are joined (a cheap copy); large ones go as two buffers of one writev.
        self._shared.send(
            head + data if size < _JOIN_BELOW else [head, data], len(data), size, block, timeout
        )

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        self._check_open()
        payloads = dumps_many(self._serializer, list(items))
        lengths = list(map(len, payloads))
        longest = max(lengths, default=0)
        if longest > self._limit:
            raise self._too_large(longest)
        n = len(payloads)
        parts = [b""] * (2 * n)
        parts[::2] = map(_HEADERS.__getitem__, lengths)
        parts[1::2] = payloads
        frames = b"".join(parts)
        if len(frames) > self._shared.capacity:
            raise MessageTooLarge(
                f"a batch of {n} items takes {len(frames)} bytes, more than a pipe of "
                f"capacity={self._shared.capacity} holds at once; split it into smaller "
                "put_many calls, or raise capacity="
            )
        self._shared.send(frames, array.array("I", lengths), len(frames), block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        self._check_open()
        if self._held and (taken := self._take_held(1)):
            data = taken[0]
        else:
            data = self._receive(1, block, timeout)[0]
        try:
            item: T = self._serializer.loads(data)
        except Exception:
            self._shared.tasks_done()
            raise
        return item

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        self._check_open()
        check_max_items(max_items)
        if not (self._held and (payloads := self._take_held(max_items))):
            payloads = self._receive(max_items, block, timeout)
        try:
            return loads_many(self._serializer, payloads)
        except Exception:
            pass  # a message that will not load: load_batch starts over and sorts it out
        try:
            return load_batch(
                self._loads_many,
                self._serializer.loads,
                payloads,
                self._held,
                self._shared.tasks_done,
            )
        finally:
            if self._held:
                forget_held_in_children(self)

    def _receive(self, max_items: int, block: bool, timeout: float | None) -> list[bytes]:
        try:
            return self._shared.receive(max_items, block, timeout)
        except _Foreign as exc:
            # Items claimed behind bytes that were never an item: served by the next gets.
            self._held.extend(exc.payloads)
            exc.payloads = []
            if self._held:
                forget_held_in_children(self)
            raise

    def _loads_many(self, payloads: Sequence[bytes]) -> list[T]:
        return loads_many(self._serializer, payloads)

    def _take_held(self, max_items: int) -> list[bytes]:
        """Up to ``max_items`` of the payloads this handle holds, front first."""
        if self._shared.slots[SHUTDOWN] == IMMEDIATE:
            self._drop_held()
            raise ShutDown
        return take_held(self._held, max_items)

    def _drop_held(self) -> None:
        """Discard the payloads this handle holds, as done, as an immediate shutdown does."""
        if dropped := drop_held(self._held):
            self._shared.tasks_done(dropped)

    def shutdown(self, immediate: bool = False) -> None:
        # Discarded frames stay in the pipe, never read: after an immediate shutdown no get
        # takes a frame and no put adds one.
        self._check_open()
        self._shared.shutdown(immediate)
        if immediate:
            self._drop_held()

    def close_reader(self) -> None:
        """Give up this handle's read end: its gets raise ``QueueClosed`` from now on.

        Once no handle in any process has a read end, puts raise ``BackendUnavailable``
        instead of waiting for room that no reader can make. Call it in producer processes.
        """
        self._check_open()
        self._shared.close_reader()

    def close(self) -> None:
        if not self._closed:
            if self._held:
                self._give_back()
            self._closed = True
            self._shared.close_fds()

    def _give_back(self) -> None:
        if self._shared.slots[SHUTDOWN] == IMMEDIATE:
            self._drop_held()
            return
        held = list(self._held)
        lengths = list(map(len, held))
        parts = [b""] * (2 * len(held))
        parts[::2] = map(_HEADERS.__getitem__, lengths)
        parts[1::2] = held
        frames = b"".join(parts)
        try:
            self._shared.send(
                frames, array.array("I", lengths), len(frames), False, None, given_back=True
            )
        except Exception as exc:
            raise QueueError(
                f"pipe://: this handle holds {len(held)} items that a get_many took after a "
                f"message that would not load, and cannot put them back ({exc!r:.200}); get "
                "them first (get or get_many on this handle), then close it. The handle is "
                "still open"
            ) from exc
        for _ in held:
            self._held.popleft()

    def info(self) -> dict[str, Any]:
        """Facts for ``queuekit info``."""
        self._check_open()
        return {
            **self._shared.snapshot(),
            "serializer": self._serializer.name,
            "capacity": self._shared.capacity,
            "frame_budget": self._shared.budget,
            "max_message_size": self._limit,
            "reader": self._shared.rfd >= 0,
        }
