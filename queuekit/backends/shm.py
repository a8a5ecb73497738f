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

A process killed at any instant leaves the queue's memory whole (``_shm_segment`` tells how).
What a killed process can lose: the items of a put it was inside (all or none of a batch, and
none are visible before they all are), and the items it had got, in a get that was returning or
held for processing (with any that a ``get_many`` held back in its handle, below). Items it got
but had not marked with ``task_done()`` stay unfinished, so ``join()`` without a timeout would
wait for them forever. A wake-up it was about to send when killed is made up by the waiters
themselves within half a second. One killed while asleep in a call stays in the count of
sleepers: each later change at the other end then makes one wake-up system call more than it
needs (slower, never wrong).

An item that will not load (its bytes fail their CRC-32 check with ``checksum=true``, or the
serializer refuses them) is off the queue once got: ``get`` counts it as a task done and raises,
and ``get_many`` stops before it, the rest waiting in the handle (unfinished tasks; ``close()``
gives them back at the back of the queue, or raises ``QueueError`` if it is full or shut down;
``shutdown(immediate=True)`` drops them as done). Bytes written into the segment by another
program can also break a frame's length, and then no frame after it can be found: the get that
meets such a frame drops every item published until then, counts them as tasks done, and raises
``CorruptMessage`` saying how many (their bytes in its ``data``); the items put after that are
served as usual.
"""

from __future__ import annotations

import contextlib
import functools
import os
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from multiprocessing.context import get_spawning_popen
from multiprocessing.reduction import DupFd
from typing import Any, ClassVar, TypeVar

from .._base import (
    QueueBase,
    check_batch_fits,
    check_max_items,
    deadline,
    load_batch,
    remaining,
)
from .._errors import (
    BackendUnavailable,
    CorruptMessage,
    Empty,
    Full,
    InvalidURL,
    JoinTimeout,
    MessageTooLarge,
    QueueClosed,
    QueueError,
    ShutDown,
)
from .._protocol import Capabilities
from .._serializers import Serializer, dumps_many, get_serializer, loads_many
from .._shmsync import UNAVAILABLE, mutex_trylock, mutex_unlock
from .._urls import Param, QueueURL, as_bool, as_int, as_serializer, bind_params
from ._shm_segment import (
    BATCH,
    DATA_AT,
    FRAME,
    GET_AT,
    GETS,
    MAX_FRAME,
    NOT_EMPTY_AT,
    NOT_FULL_AT,
    PUT_AT,
    PUTS,
    SHM_DIR,
    TASKS_AT,
    Damaged,
    Segment,
    as_capacity,
    check_name,
    lay_out,
    new_file,
    pad,
    path_of,
)

__all__ = ["DEFAULT_CAPACITY", "SHM_DIR", "ShmQueue", "unlink"]

T = TypeVar("T")

DEFAULT_CAPACITY = 16 * 1024 * 1024
_START_METHODS = ("fork", "spawn", "forkserver")

# Bound once for put and get: since Python 3.11 a method of a name bound by an import is called
# through a bound method made on every call (no LOAD_METHOD for imported names), 7-10% of a put.
_unpack_puts, _unpack_gets = PUTS.unpack_from, GETS.unpack_from
_unpack_frame, _pack_frame = FRAME.unpack_from, FRAME.pack_into


def _as_create(value: object) -> str:
    if value in ("auto", "new", "never"):
        return str(value)
    raise ValueError("expected auto (attach or create), new (create only) or never (attach only)")


class ShmQueue(QueueBase[T]):
    PARAMS: ClassVar[list[Param]] = [
        Param("maxsize", as_int, 0, "most items held; 0 for unbounded"),
        Param(
            "capacity",
            as_capacity,
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
        self._loads_many = functools.partial(loads_many, self._serializer)
        # Payloads got by a get_many that stopped before one that would not load: the next
        # calls take them first. They are the process's that got them: a forked copy of the
        # handle holds none.
        self._held: deque[Any] = deque()
        self._held_by = os.getpid()
        self._seg: Segment | None = None
        if capacity is not None:
            capacity = as_capacity(capacity)
        if _fd is not None:
            try:
                self._seg = Segment(_fd, name)
            except BaseException:
                os.close(_fd)
                raise
        else:
            if name:
                check_name(name)
            elif create == "never":
                raise InvalidURL("shm:// with create=never needs a NAME to attach to")
            wanted = {"maxsize": maxsize, "capacity": capacity, "checksum": checksum}
            self._seg = self._open(name, create, wanted)
        seg = self._seg
        self._max_item = min(seg.capacity - 8, MAX_FRAME)

    @staticmethod
    def _open(name: str, create: str, wanted: dict[str, Any]) -> Segment:
        def make() -> int:
            return new_file(
                wanted["capacity"] or DEFAULT_CAPACITY,
                wanted["maxsize"] or 0,
                bool(wanted["checksum"]),
                name,
            )

        if not name:
            return Segment(make(), "")
        while True:
            if create != "new":
                try:
                    fd = os.open(path_of(name), os.O_RDWR | os.O_CLOEXEC)
                except PermissionError:
                    raise InvalidURL(
                        f"shm://{name}: {path_of(name)} belongs to another user (queues are "
                        "owner-only); choose another name"
                    ) from None
                except FileNotFoundError:
                    if create == "never":
                        raise InvalidURL(
                            f"shm://{name} does not exist ({path_of(name)} is missing) and "
                            "create=never: open it with create=auto, or create it first"
                        ) from None
                else:
                    try:
                        seg = Segment(fd, name)
                    except BaseException:
                        os.close(fd)
                        raise
                    _check_settings(seg, wanted)
                    return seg
            try:
                return Segment(make(), name)
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

    def _segment(self) -> Segment:
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
        ring = seg.ring
        if ring is not None:  # the usual case, compiled (no checksums there)
            if (timeout is None or timeout >= 0 or not block) and ring.put(data):
                return
            self._push(seg, [data], None, block, timeout)
            return
        # The usual case, written out: room, no waiting, no wrap-around.
        n = len(data)
        crc = zlib.crc32(data) if seg.checksum else 0
        mm, mutex = seg.mm, seg.put_mutex
        tried = mutex_trylock(mutex)
        if tried:
            seg.take(mutex, tried)
        try:
            words = _unpack_puts(mm, PUT_AT)
            t0, p0, t1, p1, version, _, sleepers, shut = words
            tail, puts = (t1, p1) if version & 1 else (t0, p0)
            at = DATA_AT + tail % seg.capacity
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
                _pack_frame(mm, at, n, crc)
                mm[at + 8 : at + 8 + n] = data
                seg.commit_put(words, after, puts + 1, 0)
        finally:
            mutex_unlock(mutex)
        if not done:
            self._push(seg, [data], [crc], block, timeout)
        elif sleepers:
            seg.wake(NOT_EMPTY_AT, 1)

    def put_many(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        seg = self._segment()
        frames = dumps_many(self._serializer, items if isinstance(items, list) else list(items))
        crcs = [zlib.crc32(data) for data in frames] if seg.checksum else None
        self._push(seg, frames, crcs, block, timeout)

    def _push(
        self,
        seg: Segment,
        frames: list[bytes],
        crcs: list[int] | None,
        block: bool,
        timeout: float | None,
    ) -> None:
        count = len(frames)
        lengths = list(map(len, frames))
        largest = max(lengths, default=0)
        if largest > self._max_item:
            raise MessageTooLarge(
                f"an item of {largest} bytes serialized can never fit a shm:// queue of "
                f"capacity={seg.capacity} (at most {self._max_item} bytes per item); "
                "open the queue with a larger capacity"
            )
        if count == 1:
            need = 8 + pad(largest)
            span = b""
        else:
            span = lay_out(frames, crcs, lengths)
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
            seg.wake(NOT_EMPTY_AT, count)

    def _wait_room(
        self, seg: Segment, need: int, count: int, end: float | None
    ) -> tuple[tuple[int, ...], int, int]:
        """Holding the put lock: wait, with the get lock too, until ``count`` items of ``need``
        bytes fit; the put end's words, tail and items put then."""
        seg.take(seg.get_mutex)
        try:
            while True:
                words, tail, puts, shut = seg.put_end()
                if shut:
                    raise ShutDown
                _, seg.head_seen, _, seg.gets_seen, _ = seg.get_end()
                if seg.fits(tail, puts, need, count):
                    return words, tail, puts
                wait = remaining(end)
                if wait == 0.0:
                    raise Full
                seg.sleep(NOT_FULL_AT, wait)
                self._segment()
        finally:
            mutex_unlock(seg.get_mutex)

    # --- get ------------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        seg = self._seg
        if seg is None:
            seg = self._segment()
        if self._held and self._holds():
            return self._from_held(1)[0]
        spin = True
        ring = seg.ring
        if ring is not None and (timeout is None or timeout >= 0 or not block):
            # The usual case, compiled; it watches an empty queue for a while itself.
            data = ring.get(block and (timeout is None or timeout > 0))
            if data is not None:
                try:
                    got: T = self._loads(data)
                except Exception:
                    self._count_done()
                    raise
                return got
            spin = False
        # The usual case, written out: an item there, in a frame of its own, not wrapped around.
        mm, mutex = seg.mm, seg.get_mutex
        damaged = False
        while True:
            tried = mutex_trylock(mutex)
            if tried:
                seg.take(mutex, tried)
            try:
                words = _unpack_gets(mm, GET_AT)
                version, sleepers = words[8], words[11]
                head, sub, gets, done = words[4:8] if version & 1 else words[:4]
                limit = seg.tail_seen
                if (head >= limit and head >= (limit := seg.see_tail())) or (
                    timeout is not None and block and timeout < 0
                ):
                    data = None
                else:
                    at = DATA_AT + head % seg.capacity
                    n, crc = _unpack_frame(mm, at)
                    after = head + 8 + ((n + 7) & ~7)
                    if at + 8 + n <= seg.data_end and after <= limit and n != BATCH and not sub:
                        data = mm[at + 8 : at + 8 + n]
                    else:
                        data, crc, after, sub = seg.read(head, sub, limit)
                    seg.commit_get(words, after, sub, gets + 1, done, True, False)
            except Damaged:
                data, damaged = None, True
            finally:
                mutex_unlock(mutex)
            if data is not None or damaged or not spin or not seg.spin(head, block, timeout):
                break
            spin = False
        if data is None:
            if damaged:
                self._drop_damaged(seg)
                return self.get(block, timeout)
            return self._load(seg, *self._wait_pop(seg, 1, block, timeout))[0]
        if sleepers:
            seg.wake(NOT_FULL_AT)
        if seg.checksum and zlib.crc32(data) != crc:
            self._count_done()
            raise _corrupt(seg, data)
        try:
            item: T = self._loads(data)
        except Exception:
            self._count_done()
            raise
        return item

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[T]:
        seg = self._segment()
        check_max_items(max_items)
        if self._held and self._holds():
            return self._from_held(max_items)
        frames: list[bytes] | None = None
        spin = True
        damaged = False
        while True:
            seg.take(seg.get_mutex)
            try:
                words, head, sub, gets, done = seg.get_end()
                if (head < seg.tail_seen or head < seg.see_tail()) and not (
                    block and timeout is not None and timeout < 0
                ):
                    frames, crcs, head, sub = seg.frames(head, sub, seg.tail_seen, max_items)
                    seg.commit_get(words, head, sub, gets + len(frames), done, True, False)
            except Damaged:
                damaged = True
            finally:
                mutex_unlock(seg.get_mutex)
            if frames is not None or damaged or not spin or not seg.spin(head, block, timeout):
                break
            spin = False
        if frames is None:
            if damaged:
                self._drop_damaged(seg)
                return self.get_many(max_items, block, timeout)
            frames, crcs = self._wait_pop(seg, max_items, block, timeout)
        elif words[11]:
            seg.wake(NOT_FULL_AT)
        return self._load(seg, frames, crcs)

    def _wait_pop(
        self, seg: Segment, max_items: int, block: bool, timeout: float | None
    ) -> tuple[list[bytes], list[int]]:
        """Up to ``max_items`` payloads and their CRCs, once there is one: with both locks,
        waiting per ``block`` and ``timeout``."""
        seg.take_both()
        try:
            _, tail, puts, shut = seg.put_end()
            words, head, sub, gets, done = seg.get_end()
            # Empty: no bytes, and no more items counted put than got (which would mean that
            # the bytes were damaged so as to hide frames: dropped below).
            if shut and head == tail and gets >= puts:
                raise ShutDown
            end = deadline(block, timeout)
            while head == tail and gets >= puts:
                wait = remaining(end)
                if wait == 0.0:
                    raise Empty
                seg.sleep(NOT_EMPTY_AT, wait)
                self._segment()
                _, tail, puts, shut = seg.put_end()
                words, head, sub, gets, done = seg.get_end()
                if shut and head == tail and gets >= puts:
                    raise ShutDown
            seg.tail_seen = tail
            dropped: tuple[int, bytes] | None = None
            try:
                if head == tail:
                    raise Damaged(head, "the last frame", tail)
                frames, crcs, head, sub = seg.frames(head, sub, tail, max_items)
            except Damaged:
                dropped = seg.drop()
            else:
                seg.commit_get(words, head, sub, gets + len(frames), done, True, False)
        finally:
            seg.release_both()
        if dropped is not None:
            raise self._dropped(seg, *dropped)
        if words[11]:
            seg.wake(NOT_FULL_AT)
        return frames, crcs

    def _drop_damaged(self, seg: Segment) -> None:
        """After a get found the frame at the head damaged: drop what the ring holds (if no
        other get did already) and raise; return if there is nothing to drop now."""
        seg.take_both()
        try:
            dropped, data = seg.drop()
        finally:
            seg.release_both()
        if dropped:
            raise self._dropped(seg, dropped, data)

    @staticmethod
    def _dropped(seg: Segment, dropped: int, data: bytes) -> CorruptMessage:
        seg.wake(NOT_FULL_AT)
        seg.wake(TASKS_AT)
        return CorruptMessage(
            f"the ring of shm://{seg.name} is damaged (something other than queuekit wrote into "
            "the segment): a frame at its head runs past the last one written or contradicts "
            "itself, or the frames ran out before the items counted, so where the next frame "
            f"starts cannot be found. The {dropped} items put until now are dropped, counted as "
            "tasks done, and their bytes are in this error's data; the queue goes on with the "
            "items put from now on",
            data=data,
        )

    def _load(self, seg: Segment, frames: list[bytes], crcs: list[int]) -> list[T]:
        """The items of payloads just got, per the rule of ``get_many``."""
        payloads: list[Any] = frames
        bad = False
        if seg.checksum:
            for i, (data, crc) in enumerate(zip(frames, crcs, strict=True)):
                if zlib.crc32(data) != crc:
                    payloads[i] = _Bad(data, crc, _corrupt(seg, data))
                    bad = True
        try:
            if bad:
                return load_batch(
                    self._checked_many, self._checked, payloads, self._held, self._count_done
                )
            return load_batch(self._loads_many, self._loads, frames, self._held, self._count_done)
        finally:
            if self._held:
                self._held_by = os.getpid()

    def _holds(self) -> bool:
        """Whether this handle holds payloads in this process (a forked copy holds none)."""
        if self._held_by != os.getpid():
            self._held.clear()
            return False
        return True

    def _from_held(self, max_items: int) -> list[T]:
        held = self._held
        payloads = [held.popleft() for _ in range(min(max_items, len(held)))]
        return load_batch(self._checked_many, self._checked, payloads, held, self._count_done)

    def _checked(self, payload: Any) -> T:
        if type(payload) is _Bad:
            raise payload.error
        item: T = self._loads(payload)
        return item

    def _checked_many(self, payloads: Sequence[Any]) -> list[T]:
        for payload in payloads:
            if type(payload) is _Bad:
                raise payload.error
        return self._loads_many(payloads)

    def _count_done(self) -> None:
        """A task done for an item got that would not load: its taker has none to mark."""
        with contextlib.suppress(ValueError):  # counted done already by a drain
            self.task_done()

    # --- the rest -------------------------------------------------------------------------

    def qsize(self) -> int:
        seg = self._segment()
        seg.take_both()
        try:
            return seg.put_end()[2] - seg.get_end()[3]
        finally:
            seg.release_both()

    def task_done(self) -> None:
        seg = self._segment()
        seg.take(seg.get_mutex)
        try:
            words, head, sub, gets, done = seg.get_end()
            # With more than one task left, this one changes nothing anyone waits for.
            quick = seg.puts_seen() - done > 1
            if quick:
                seg.commit_get(words, head, sub, gets, done + 1, False, False)
        finally:
            mutex_unlock(seg.get_mutex)
        if quick:
            return
        seg.take_both()
        try:
            puts = seg.put_end()[2]
            words, head, sub, gets, done = seg.get_end()
            if puts <= done:
                raise ValueError("task_done() called more times than there were items put")
            last = puts - done == 1
            seg.commit_get(words, head, sub, gets, done + 1, False, last)
        finally:
            seg.release_both()
        if last and words[12]:
            seg.wake(TASKS_AT)

    def join(self, timeout: float | None = None) -> None:
        seg = self._segment()
        seg.take_both()
        try:
            end = deadline(True, timeout)
            while unfinished := seg.put_end()[2] - seg.get_end()[4]:
                wait = remaining(end)
                if wait == 0.0:
                    raise JoinTimeout(f"join() timed out with {unfinished} unfinished tasks")
                seg.sleep(TASKS_AT, wait)
                self._segment()
        finally:
            seg.release_both()

    def shutdown(self, immediate: bool = False) -> None:
        seg = self._segment()
        held = self._held
        if held:
            self._holds()
        seg.tell_everyone(shut=True, drain=immediate, held=len(held) if immediate else 0)
        if immediate:
            held.clear()

    def close(self) -> None:
        seg = self._seg
        if seg is not None and self._held and self._holds():
            self._give_back(seg)
        self._seg = None
        self._closed = True
        if seg is None:
            return
        # Wake this process's own waiters on the handle, so they see it closed. The mapping
        # goes when the last call still using it returns.
        seg.tell_everyone()
        with contextlib.suppress(OSError):
            os.close(seg.fd)

    def _give_back(self, seg: Segment) -> None:
        """Put the payloads this handle holds back at the back of the queue, at once, without
        waiting; they stay unfinished tasks (counted done as got, and again put)."""
        held = self._held
        count = len(held)
        frames = [p.data if type(p) is _Bad else p for p in held]
        crcs = None
        if seg.checksum:
            crcs = [p.crc if type(p) is _Bad else zlib.crc32(p) for p in held]
        span = lay_out(frames, crcs)
        seg.take_both()
        try:
            put_words, tail, puts, shut = seg.put_end()
            words, head, sub, gets, done = seg.get_end()
            seg.head_seen, seg.gets_seen = head, gets
            if shut or not seg.fits(tail, puts, len(span), count):
                raise QueueError(
                    f"close() cannot give back the {count} items this handle holds (a get_many "
                    "stopped before one that would not load, and they wait here): the queue is "
                    f"{'shut down' if shut else 'full'}. Get them first (get and get_many take "
                    "them before the queue's), then close the handle"
                )
            tail = seg.write_span(tail, span)
            # Done first: a kill between the two loses these items, it never counts them twice.
            seg.commit_get(words, head, sub, gets, done + count, False, False)
            seg.commit_put(put_words, tail, puts + count, shut)
        finally:
            seg.release_both()
        held.clear()
        seg.wake(NOT_EMPTY_AT, count)

    def unlink(self) -> bool:
        """Remove the queue's name, if it has one and it still names this queue.

        Handles open now keep working; the next open of the name makes a new queue, and the
        memory is freed once the last handle closes. Whether a name was removed.
        """
        seg = self._segment()
        if not seg.name:
            return False
        with contextlib.suppress(FileNotFoundError):
            ours, named = os.fstat(seg.fd), os.stat(path_of(seg.name))
            if (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino):
                os.unlink(path_of(seg.name))
                return True
        return False

    def info(self) -> dict[str, Any]:
        """Facts for ``queuekit info``."""
        seg = self._segment()
        seg.take_both()
        try:
            _, tail, puts, shut = seg.put_end()
            _, head, _, gets, done = seg.get_end()
        finally:
            seg.release_both()
        return {
            "name": seg.name or "(private)",
            "path": path_of(seg.name) if seg.name else "(none: private)",
            "capacity": seg.capacity,
            "bytes_used": tail - head,
            "maxsize": seg.maxsize,
            "qsize": puts - gets,
            "unfinished": puts - done,
            "held": len(self._held) if self._held and self._holds() else 0,
            "shutdown": bool(shut),
            "checksum": seg.checksum,
            "compiled": seg.ring is not None,
            "serializer": self._serializer.name,
        }


def _corrupt(seg: Segment, data: bytes) -> CorruptMessage:
    return CorruptMessage(
        f"an item of {len(data)} bytes read from shm://{seg.name} fails its CRC-32 check: the "
        "segment was written to by something other than queuekit. The item is off the queue "
        "and counted as a task done; its bytes are in this error's data",
        data=data,
    )


class _Bad:
    """A payload that failed its CRC-32 check, waiting in a handle to raise when met."""

    __slots__ = ("crc", "data", "error")

    def __init__(self, data: bytes, crc: int, error: CorruptMessage) -> None:
        self.data, self.crc, self.error = data, crc, error


def _check_settings(seg: Segment, wanted: dict[str, Any]) -> None:
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
    check_name(parsed.location)
    try:
        os.unlink(path_of(parsed.location))
    except FileNotFoundError:
        return False
    return True
