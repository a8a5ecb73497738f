"""The byte stream under ``mp://``: one kernel pipe that a process killed at any instant leaves
usable, and this process's feeder thread.

The stdlib's ``multiprocessing.Queue`` cannot be that: its reader's and writer's locks are not
robust, and its stream (a length, then the bytes) cannot be found again once a process dies
half-way through a message. Here:

* Every system call on the pipe is non-blocking and made under one robust lock, the *I/O
  lock*, after a note of what kind of call it is. The next process to take the lock after a
  death asks the kernel how many bytes the pipe holds (``FIONREAD``) and so knows exactly what
  the dead call moved.
* A writer enters the length of each frame it is about to write in a shared ring first, so a
  reader knows where every frame ends before reading it: it reads whole frames, several in one
  call, and the rest of a dead reader's frames can be skipped.
* Puts are written into the pipe at once when it has room and no earlier put of the process is
  waiting; the rest wait in the process's buffer for its feeder thread, as with the stdlib.
  A run of frames the pipe cannot take at once is written in pieces, and a frame not yet whole
  in the pipe is read in pieces; between pieces the writer (or reader) owns its end of the
  stream.
  A process found dead owning an end: the frame it was writing is completed with zeros and
  marked void (readers drop it, counted), frames it had not begun are forgotten, and what is
  left of the frames it was reading is read and dropped.
* Every frame starts with its length and a check word. Bytes another program wrote into the
  pipe between frames are found by that check and taken out whole (the stream's own count
  says how many there are), to be raised in a :class:`~queuekit.CorruptMessage`; what cannot
  be explained so breaks the stream for good, and every later call says so.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.util import Finalize
from typing import Any

from .._errors import BackendUnavailable, CorruptMessage
from .._pipeends import PipeEnds, bytes_in_pipe, pid_alive
from .._procstate import RobustLock, make_lock, primitives_context, view_of
from .._shmsync import UNAVAILABLE

__all__ = ["RING", "FramePipe"]

_HEAD = struct.Struct("<II")  # the payload's length, and the length xor _MAGIC
_HEAD_BYTES = _HEAD.size
_MAGIC = 0x716B6D70
RING = 8192
"""Frames the pipe may hold at once (a put waits in the buffer beyond that)."""
_RUN_BYTES = 256 * 1024
"""The most bytes one run (a write of buffered frames) or one read of whole frames takes."""
_ZEROS = memoryview(bytes(64 * 1024))
_REAP_EVERY = 0.05
"""Seconds between looks for a dead owner of the stream, while waiting on it."""
_IDLE = 0.1
"""Seconds an idle feeder thread lingers before it ends."""
_PENDING = 128
"""Processes that can be known at once to have items counted in and not yet in the ring."""

# Slots of the shared array, under the I/O lock. Offsets count the queue's own bytes since the
# pipe was made: written and read; the pipe holds W_OFF - R_OFF of them.
(
    _W_OFF, _R_OFF, _FRAMES_W, _FRAMES_R,
    _WRITER, _RUN_START, _RUN_FIRST, _RUN_END,
    _READER, _READ_END, _READ_FRAMES,
    _OP, _BROKEN, _REPAIRS, _VOIDED, _SKIPS, _FOREIGN, _UNTRACKED,
) = range(18)  # fmt: skip
_SLOTS = 18
_WRITE, _READ, _FOREIGN_READ = 1, 2, 3  # values of _OP: the system call under way
_FILLER = -1  # _WRITER: the zeros that complete a dead writer's frame are being written
_SKIPPER = -1  # _READER: the rest of a dead reader's frames are being read and dropped


def _length(entry: int) -> int:
    return entry if entry >= 0 else ~entry


def _poll(fd: int, events: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _frames(payloads: Sequence[bytes]) -> bytes:
    parts: list[bytes] = []
    for payload in payloads:
        parts.append(_HEAD.pack(len(payload), len(payload) ^ _MAGIC))
        parts.append(payload)
    return b"".join(parts)


_LIVE: weakref.WeakSet[FramePipe] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for stream in list(_LIVE):
        stream._start_local()


os.register_at_fork(after_in_child=_after_fork_in_child)


class FramePipe(PipeEnds):
    """The pipe, its I/O lock and shared slots, and this process's buffer and feeder."""

    def __init__(self, context: str) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            # The kernel's default size, as the stdlib's: where a full pipe starts to show.
            self.capacity: int = fcntl.fcntl(self.wfd, fcntl.F_GETPIPE_SZ)
            ctx = primitives_context(context)
            lock = make_lock(ctx)
            if not isinstance(lock, RobustLock):
                raise BackendUnavailable(
                    f"mp:// needs robust process-shared mutexes and memfd_create: {UNAVAILABLE}"
                )
            self.lock = lock
            self._raw = ctx.RawArray(ctypes.c_int64, _SLOTS)
            self._ring_raw = ctx.RawArray(ctypes.c_int64, RING)
            # Pairs (pid, items): what each process announced and has not yet written.
            self._pending_raw = ctx.RawArray(ctypes.c_int64, 2 * _PENDING)
        except BaseException:
            self.close_fds()
            raise
        self._start_local()

    def _start_local(self) -> None:
        """This process's side: views of the shared arrays, and an empty buffer, no feeder."""
        self.slots = view_of(self._raw)
        self.ring = view_of(self._ring_raw)
        self.pending = view_of(self._pending_raw)
        self._pending_at = -1
        self.lock.on_owner_dead = self._repair
        self._pid = os.getpid()
        self._wlock = threading.Lock()  # this process's writers: put and the feeder
        self._wcond = threading.Condition(self._wlock)
        self._rlock = threading.Lock()  # this process's readers
        self._buffer: deque[bytes] = deque()
        self._run: memoryview | None = None  # the rest of the run this process is writing
        self._part: bytearray | None = None  # the frame this process is reading in pieces
        self._part_index = 0
        self.moved = 0.0  # when a piece of the frame being read in pieces last came
        self._feeder: threading.Thread | None = None
        self._stop = threading.Event()
        self._reaped = 0.0
        _LIVE.add(self)

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.ends_state(),
            "capacity": self.capacity,
            "lock": self.lock,
            "_raw": self._raw,
            "_ring_raw": self._ring_raw,
            "_pending_raw": self._pending_raw,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.restore_ends(state)
        self.__dict__.update(state)
        self._start_local()

    # --- Under the I/O lock -----------------------------------------------------------------

    def _acquire(self) -> None:
        self.lock.acquire()
        if self.slots[_BROKEN]:
            self.lock.release()
            raise self._broken()

    def _broken(self) -> CorruptMessage:
        return CorruptMessage(
            "mp://: the byte stream in the queue's pipe is broken: something other than this "
            "queue read from it, or wrote into it in the middle of a frame. The items in it "
            "cannot be recovered: shut the queue down and open a new one."
        )

    def _write(self, data: bytes | memoryview) -> int:
        s = self.slots
        s[_OP] = _WRITE
        try:
            n = os.write(self.wfd, data)
        except BlockingIOError:
            n = 0
        except BrokenPipeError:
            s[_OP] = 0
            raise BackendUnavailable(
                "mp://: no process holds the queue's pipe open for reading any more"
            ) from None
        s[_W_OFF] += n
        s[_OP] = 0
        return n

    def _read(self, n: int) -> bytes:
        s = self.slots
        s[_OP] = _READ
        try:
            data = os.read(self.rfd, n)
        except BlockingIOError:
            data = b""
        s[_R_OFF] += len(data)
        s[_OP] = 0
        return data

    def _repair(self) -> None:
        """The lock came from a process that died holding it: finish the count of its system
        call from what the kernel holds, then free the ends of the stream it owned."""
        s = self.slots
        if s[_OP] == _FOREIGN_READ:  # a second fault inside the first: give up on the stream
            s[_BROKEN] = 1
        elif s[_OP]:
            there = bytes_in_pipe(self.wfd)
            if s[_OP] == _WRITE:
                s[_W_OFF] = s[_R_OFF] + there
            else:
                s[_R_OFF] = s[_W_OFF] - there
        s[_OP] = 0
        s[_REPAIRS] += 1
        self._reap()

    def _reap(self) -> None:
        """Free the ends of the stream that dead processes own."""
        s = self.slots
        self._reaped = time.monotonic()
        writer = s[_WRITER]
        if writer > 0 and writer != self._pid and not pid_alive(writer):
            self._tear()
        reader = s[_READER]
        if reader > 0 and reader != self._pid and not pid_alive(reader):
            s[_READER] = _SKIPPER
            s[_SKIPS] += 1
            self._skip()

    def _tear(self) -> None:
        """End a dead writer's run where the kernel cut it: frames before the cut stay, the
        frame it cuts is void and completed with zeros, frames after it are forgotten."""
        s, ring = self.slots, self.ring
        cut, start, i, last = s[_W_OFF], s[_RUN_START], s[_RUN_FIRST], s[_FRAMES_W]
        size = 0
        while i < last:
            size = _HEAD_BYTES + _length(ring[i % RING])
            if start + size > cut:
                break
            start, i = start + size, i + 1
        if i == last or start == cut:
            s[_FRAMES_W], s[_WRITER] = i, 0
            return
        ring[i % RING] = ~_length(ring[i % RING])
        s[_FRAMES_W], s[_RUN_END], s[_WRITER] = i + 1, start + size, _FILLER
        s[_VOIDED] += 1
        self._fill()

    def _fill(self) -> None:
        s = self.slots
        while (left := s[_RUN_END] - s[_W_OFF]) > 0:
            if not self._write(_ZEROS[: min(left, len(_ZEROS))]):
                return
        s[_WRITER] = 0

    def _skip(self) -> None:
        s = self.slots
        while (left := min(s[_READ_END], s[_W_OFF]) - s[_R_OFF]) > 0:
            if not self._read(min(left, _RUN_BYTES)):
                return
        if s[_R_OFF] >= s[_READ_END]:
            s[_FRAMES_R] = max(s[_FRAMES_R], s[_READ_FRAMES])
            s[_READER] = 0

    def _tidy(self) -> None:
        """Move on what dead processes left half done, and look for them now and then."""
        s = self.slots
        if s[_WRITER] == _FILLER:
            self._fill()
        if s[_READER] == _SKIPPER:
            self._skip()
        if time.monotonic() - self._reaped > _REAP_EVERY:
            self._reap()

    # --- Items on their way -------------------------------------------------------------------

    def announce(self, n: int) -> None:
        """``n`` items will be counted in and sent by this process (negative: will not, after
        all), so a getter that claims one of them waits for it while this process lives."""
        self._acquire()
        try:
            self._expect(n)
        finally:
            self.lock.release()

    def _expect(self, n: int) -> None:
        pending, at, pid = self.pending, self._pending_at, self._pid
        if at < 0 or pending[2 * at] != pid:
            at = self._pending_slot()
            if at < 0:
                return
        pending[2 * at + 1] = max(0, pending[2 * at + 1] + n)

    def _pending_slot(self) -> int:
        """This process's pair, or a free one made its own; -1 (and getters wait the full
        grace from then on) when all are taken."""
        pending, pid, free = self.pending, self._pid, -1
        for at in range(_PENDING):
            owner = pending[2 * at]
            if owner == pid:
                self._pending_at = at
                return at
            if free < 0 and (not owner or not pending[2 * at + 1] or not pid_alive(owner)):
                free = at
        if free < 0:
            self.slots[_UNTRACKED] = 1
        else:
            pending[2 * free], pending[2 * free + 1] = pid, 0
        self._pending_at = free
        return free

    def in_flight(self) -> bool:
        """Whether items may still come: a frame half written, or a living process with
        announced items not yet sent."""
        with self.lock:
            s, pending = self.slots, self.pending
            if s[_WRITER] or s[_UNTRACKED]:
                return True
            return any(pending[2 * at + 1] and pid_alive(pending[2 * at]) for at in range(_PENDING))

    # --- Writing ----------------------------------------------------------------------------

    def send(self, payloads: Sequence[bytes]) -> None:
        """Write ``payloads`` into the pipe now if they fit, else leave them to the feeder."""
        with self._wlock:
            if self._buffer or self._run is not None or not self._begin(payloads):
                self._buffer.extend(payloads)
                self._wake_feeder()
            elif self._run is not None:  # begun, and left half written
                self._wake_feeder()

    def _begin(self, payloads: Sequence[bytes]) -> bool:
        """Begin a run of ``payloads`` (this process's write lock held): False if the stream is
        another's or the pipe has no room; else its frames are in, or ``_run`` holds the rest."""
        run = _frames(payloads)
        self._acquire()
        try:
            s, ring = self.slots, self.ring
            self._tidy()
            first, k = s[_FRAMES_W], len(payloads)
            if s[_WRITER] or first - s[_FRAMES_R] + k > RING:
                return False
            s[_RUN_START], s[_RUN_FIRST], s[_RUN_END] = s[_W_OFF], first, s[_W_OFF] + len(run)
            for j, payload in enumerate(payloads):
                ring[(first + j) % RING] = len(payload)
            s[_WRITER] = self._pid
            s[_FRAMES_W] = first + k
            self._expect(-k)
            n = self._write(run)
            if n == len(run):
                s[_WRITER] = 0
            elif n == 0:
                s[_FRAMES_W], s[_WRITER] = first, 0
                self._expect(k)
                return False
            else:
                self._run = memoryview(run)[n:]
            return True
        finally:
            self.lock.release()

    def _go_on(self) -> bool:
        """Write more of this process's run; whether any went in."""
        assert self._run is not None
        self._acquire()
        try:
            if self.slots[_WRITER] != self._pid:  # declared dead: cannot happen while we live
                self._run = None
                return True
            n = self._write(self._run)
            if n == len(self._run):
                self.slots[_WRITER] = 0
                self._run = None
            elif n:
                self._run = self._run[n:]
            return n > 0
        finally:
            self.lock.release()

    def _wake_feeder(self) -> None:
        self._wcond.notify()
        if self._feeder is None:
            self._stop.clear()
            feeder = threading.Thread(target=self._feed, name="queuekit-mp-feeder", daemon=True)
            self._feeder = feeder
            # As the stdlib's: a process's exit waits until its feeder has written everything.
            self._at_exit = Finalize(self, _join_feeder, args=(feeder, self._stop), exitpriority=10)
            feeder.start()

    def _feed(self) -> None:
        idle_since: float | None = None
        while True:
            with self._wlock:
                if not self._buffer and self._run is None:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if self._stop.is_set() or now - idle_since > _IDLE:
                        self._feeder = None
                        self._at_exit.cancel()
                        return
                    self._wcond.wait(_IDLE / 2)
                    continue
                idle_since = None
                try:
                    moved = self._go_on() if self._run is not None else self._feed_buffered()
                except (BackendUnavailable, CorruptMessage):
                    # Nobody can ever read these: drop them (their gets raise or time out).
                    self._buffer.clear()
                    self._run = None
                    continue
            if not moved:
                self._wait_writable()

    def _feed_buffered(self) -> bool:
        buffer, take, size = self._buffer, 0, 0
        while take < len(buffer) and (not take or size + len(buffer[take]) < _RUN_BYTES):
            size += len(buffer[take])
            take += 1
        batch = [buffer[j] for j in range(take)]
        if not self._begin(batch):
            return False
        for _ in range(take):
            buffer.popleft()
        return True

    def _wait_writable(self) -> None:
        if self._run is not None:
            _poll(self.wfd, select.POLLOUT, _REAP_EVERY)
        else:  # another process writes, or the ring is full: look again shortly
            time.sleep(0.001)

    def flush(self) -> None:
        """Wait until the feeder has written everything this process put (as the stdlib's
        ``join_thread``: for good, if nobody reads)."""
        feeder = self._feeder
        if feeder is not None:
            _join_feeder(feeder, self._stop)

    # --- Reading ----------------------------------------------------------------------------

    def receive(
        self, max_frames: int, end: float | None
    ) -> tuple[list[bytes], int, CorruptMessage | None]:
        """Up to ``max_frames`` payloads from the front of the pipe, waiting until ``end``
        (``time.monotonic()``; None: for good) for the first; also how many void frames were
        dropped on the way, and bytes a foreign writer left there (at most one of them)."""
        wait = None if end is None else max(0.0, end - time.monotonic())
        if not self._rlock.acquire(True, -1 if wait is None else wait):
            return [], 0, None
        try:
            pause = 0.0001
            while True:
                self._acquire()
                try:
                    got = self._take(max_frames)
                    empty = self.slots[_W_OFF] == self.slots[_R_OFF]
                finally:
                    self.lock.release()
                if got is not None:
                    return got
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return [], 0, None
                step = _REAP_EVERY if left is None else min(left, _REAP_EVERY)
                if empty:
                    _poll(self.rfd, select.POLLIN, step)
                else:  # a frame still being written, or another reader's: look again soon
                    time.sleep(min(step, pause))
                    pause = min(pause * 2, 0.005)
        finally:
            self._rlock.release()

    def _take(self, max_frames: int) -> tuple[list[bytes], int, CorruptMessage | None] | None:
        s, ring = self.slots, self.ring
        self._tidy()
        if s[_READER] == self._pid:
            return self._read_on()
        if s[_READER]:
            return None
        first, last = s[_FRAMES_R], s[_FRAMES_W]
        there = s[_W_OFF] - s[_R_OFF]
        k = size = 0
        while first + k < last and k < max_frames:
            n = _HEAD_BYTES + _length(ring[(first + k) % RING])
            if size + n > there or (k and size + n > _RUN_BYTES):
                break
            size, k = size + n, k + 1
        if k:
            self._claim(size, first + k)
            data = self._read(size)
            s[_READER] = 0
            if len(data) != size:
                s[_BROKEN] = 1
                raise self._broken()
            return self._split(data, first, k)
        if first == last or not there:
            return None
        # A frame not yet whole (being written, or larger than the pipe): read it in pieces,
        # owning the reading end, so that its writer finds room and this reader can sleep
        # until more comes.
        n = _HEAD_BYTES + _length(ring[first % RING])
        self._claim(n, first + 1)
        self._part = bytearray()
        self._part_index = first
        return self._read_on()

    def _claim(self, size: int, frames_end: int) -> None:
        """Own the reading end for the next ``size`` bytes, the frames up to ``frames_end``.
        Where they end is noted before the owner, the owner before the frames are counted out:
        a death between any two steps leaves nothing claimed, or a claim the reaper skips."""
        s = self.slots
        s[_READ_END], s[_READ_FRAMES] = s[_R_OFF] + size, frames_end
        s[_READER] = self._pid
        s[_FRAMES_R] = frames_end

    def _read_on(self) -> tuple[list[bytes], int, CorruptMessage | None] | None:
        s = self.slots
        assert self._part is not None
        left = min(s[_READ_END], s[_W_OFF]) - s[_R_OFF]
        if left > 0:
            self._part += self._read(left)
            self.moved = time.monotonic()
        if s[_R_OFF] < s[_READ_END]:
            return None
        s[_READER] = 0
        data, self._part = bytes(self._part), None
        return self._split(data, self._part_index, 1)

    def _split(
        self, data: bytes, first: int, k: int
    ) -> tuple[list[bytes], int, CorruptMessage | None]:
        """The payloads of frames ``first`` .. ``first + k - 1``, read whole as ``data``."""
        ring, payloads, void, at = self.ring, [], 0, 0
        for i in range(first, first + k):
            entry = ring[i % RING]
            n = _length(entry)
            if entry < 0:
                void += 1
            elif _HEAD.unpack_from(data, at) == (n, n ^ _MAGIC):
                payloads.append(data[at + _HEAD_BYTES : at + _HEAD_BYTES + n])
            else:
                rest, foreign = self._take_out_foreign(data[at:])
                more, more_void, _ = self._split(rest, i, first + k - i)
                return payloads + more, void + more_void, foreign
            at += _HEAD_BYTES + n
        return payloads, void, None

    def _take_out_foreign(self, data: bytes) -> tuple[bytes, CorruptMessage]:
        """``data`` should have started with a frame and does not: bytes that are not the
        queue's came first. Read as many more as the pipe holds beyond the queue's own, and
        split them off; the stream is whole again if the queue's frame follows them."""
        s = self.slots
        extra = bytes_in_pipe(self.rfd) - (s[_W_OFF] - s[_R_OFF])
        if extra <= 0:
            s[_BROKEN] = 1
            raise self._broken()
        s[_OP] = _FOREIGN_READ  # not the queue's bytes: the read offset stays
        try:
            more = os.read(self.rfd, extra)
        except BlockingIOError:
            more = b""
        s[_OP] = 0
        whole = data + more
        foreign, rest = whole[:extra], whole[extra:]
        length, check = _HEAD.unpack_from(rest) if len(rest) >= _HEAD_BYTES else (0, -1)
        if len(more) != extra or check != length ^ _MAGIC:
            s[_BROKEN] = 1
            raise self._broken()
        s[_FOREIGN] += 1
        error = CorruptMessage(
            f"mp://: {extra} bytes in the queue's pipe were not written by this queue (another "
            "program wrote into it); they are in this error's .data, and the queue goes on with "
            "the next item",
            data=foreign,
        )
        return rest, error

    def abandon(self) -> bool:
        """Give up the frame this process is reading in pieces (its writer stalled): the rest
        is skipped, and the item lost. Whether there was one."""
        if self._part is None:
            return False
        self._acquire()
        try:
            s = self.slots
            if s[_READER] == self._pid:
                s[_READER] = _SKIPPER
                s[_SKIPS] += 1
                self._skip()
        finally:
            self.lock.release()
        self._part = None
        return True

    def facts(self) -> dict[str, Any]:
        with self.lock:
            s = self.slots
            return {
                "pipe_capacity": self.capacity,
                "bytes_waiting": s[_W_OFF] - s[_R_OFF],
                "frames_waiting": s[_FRAMES_W] - s[_FRAMES_R],
                "stream_repairs": s[_REPAIRS],
                "frames_voided": s[_VOIDED],
                "reads_skipped": s[_SKIPS],
                "foreign_writes": s[_FOREIGN],
                "broken": bool(s[_BROKEN]),
            }


def _join_feeder(feeder: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    if feeder is not threading.current_thread():
        feeder.join()
