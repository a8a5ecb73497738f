"""What is particular to pipe://; the contract itself is the conformance suite's business.

Some tests reach the pipe's file descriptors (``q._shared.rfd``/``wfd``) to do what another
program could: write garbage into the pipe, read from it behind the queue's back, exec.
Children run module-level functions, so spawn and forkserver children can import them.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import pickle
import queue
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
from refusing import Refused, Refusing

import queuekit
from queuekit import (
    BackendUnavailable,
    CorruptMessage,
    InvalidURL,
    MessageTooLarge,
    QueueClosed,
    SerializationError,
)
from queuekit.backends.pipe import (
    HOLD_STALE,
    MAX_SIZE_FILE,
    PAGE,
    PipeFull,
    PipeQueue,
    frame_budget,
)

START_METHODS = [
    m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()
]
FORK: Any = multiprocessing.get_context("fork")  # BaseContext does not declare Process
LONG = 20.0
"""Seconds after which a child or a call is taken to hang (the machine is shared and slow)."""
HEAD = 12
"""Bytes of a frame's header."""


@pytest.fixture
def opened() -> Iterator[Callable[..., PipeQueue[Any]]]:
    """Opens pipe:// queues and closes them after the test."""
    queues: list[PipeQueue[Any]] = []

    def open_queue(url: str = "pipe://", **options: Any) -> PipeQueue[Any]:
        q = queuekit.open(url, **options)
        assert isinstance(q, PipeQueue)
        queues.append(q)
        return q

    yield open_queue
    for q in queues:
        with contextlib.suppress(Exception):
            q.shutdown(immediate=True)
        q.close()


def within(seconds: float, func: Callable[[], Any], what: str) -> Any:
    """``func()`` in a thread; fail if it is still running after ``seconds``."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"{what} was still blocked after {seconds}s"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def fill(q: PipeQueue[Any], item: Any) -> int:
    """Put ``item`` until the pipe refuses it; how many went in."""
    n = 0
    while True:
        try:
            q.put(item, block=False)
        except PipeFull:
            return n
        n += 1


# --- Children -------------------------------------------------------------------------------


def _echo(jobs: PipeQueue[int], results: PipeQueue[tuple[int, int]], n: int) -> None:
    for _ in range(n):
        job = jobs.get(timeout=LONG)
        results.put((os.getpid(), job * 10))
        jobs.task_done()


def _report_fds(q: PipeQueue[Any], conn: Connection) -> None:
    ends = (q._shared.rfd, q._shared.wfd)
    flags = [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in ends]
    conn.send((flags, _reachable_after_exec(ends[0])))
    conn.close()


def _reachable_after_exec(fd: int) -> bool:
    """Whether a program this process runs (not closing fds itself) has the pipe of ``fd``."""
    code = (
        "import os\n"
        "def link(n):\n"
        "    try:\n"
        "        return os.readlink('/proc/self/fd/' + n)\n"
        "    except OSError:\n"
        "        return ''\n"
        f"pipe = 'pipe:[{os.fstat(fd).st_ino}]'\n"
        "print(any(link(n) == pipe for n in os.listdir('/proc/self/fd')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], close_fds=False, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() in ("True", "False"), out.stderr
    return out.stdout.strip() == "True"


def _put_and_exit(q: Any, items: list[bytes]) -> None:
    for data in items:
        q.put(data)


def _wait_then_exit(go: Any) -> None:
    go.wait(LONG)


def _open_as_nobody(url: str, conn: Connection) -> None:
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError as exc:
        conn.send(("skip", f"cannot become an unprivileged user: {exc}"))
        return
    try:
        q = queuekit.open(url)
    except Exception as exc:
        conn.send((type(exc).__name__, str(exc)))
    else:
        conn.send(("opened", repr(q)))
        q.close()


# --- A full pipe, and items that never fit --------------------------------------------------


def test_a_frame_that_does_not_fit_raises_pipe_full_at_once(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://?capacity=64KiB&serializer=raw")
    budget = q.info()["frame_budget"]
    item = b"x" * 10_000
    accepted = fill(q, item)
    assert accepted == budget // (HEAD + len(item))
    start = time.monotonic()
    with pytest.raises(queue.Full) as info:  # what code written for the stdlib catches
        q.put(item, block=False)
    assert time.monotonic() - start < 1.0, "put(block=False) on a full pipe waited"
    assert isinstance(info.value, PipeFull)
    assert isinstance(info.value, queuekit.Full)
    message = str(info.value)
    waiting = accepted * (HEAD + len(item))
    for fact in ("capacity 65536", f"{waiting} bytes waiting", f"frame of {HEAD + len(item)}"):
        assert fact in message, f"PipeFull does not say {fact!r}: {message}"
    for remedy in ("drain", "capacity=", "shm://", "redis://"):
        assert remedy in message, f"PipeFull does not suggest {remedy!r}: {message}"
    assert q.qsize() == accepted
    assert q.info()["bytes_waiting"] == waiting

    # The budget is exact: a frame that fills it goes in, then not even an empty one.
    q.put(b"y" * (budget - waiting - HEAD), block=False)  # fills the budget to the byte
    with pytest.raises(PipeFull):
        q.put(b"", block=False)
    rest = b"y" * (budget - waiting - HEAD)
    assert q.get_many(accepted + 1, timeout=LONG) == [item] * accepted + [rest]
    assert q.info()["late_writes"] == 0


def test_put_with_a_timeout_waits_for_room_then_raises_pipe_full(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://?capacity=64KiB&serializer=raw")
    item = b"x" * 10_000
    accepted = fill(q, item)
    start = time.monotonic()
    with pytest.raises(PipeFull):
        q.put(item, timeout=0.5)
    assert time.monotonic() - start >= 0.5, "put(timeout=0.5) gave up early"

    # A waiting put goes through once a get makes room in the pipe (bytes, not maxsize).
    done = threading.Event()
    late = b"L" * len(item)
    putter = threading.Thread(target=lambda: (q.put(late, timeout=LONG), done.set()))
    putter.start()
    assert not done.wait(0.3), "a put that does not fit returned"
    assert q.get(timeout=LONG) == item
    assert done.wait(LONG), "a put waiting for room in the pipe was not woken by a get"
    putter.join(LONG)
    assert q.get_many(accepted + 1, timeout=LONG) == [item] * (accepted - 1) + [late]


def test_an_item_or_batch_that_can_never_fit_is_refused_at_once(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://?capacity=64KiB&serializer=raw")
    limit = q.capabilities.max_message_size
    assert limit == q.info()["max_message_size"] == frame_budget(65536) - HEAD
    q.put(b"a" * limit)
    assert q.get(timeout=LONG) == b"a" * limit

    start = time.monotonic()
    with pytest.raises(MessageTooLarge) as info:
        q.put(b"a" * (limit + 1), timeout=LONG)
    assert time.monotonic() - start < 1.0, "an item that can never fit waited"
    assert isinstance(info.value, ValueError)
    for fact in (str(limit + 1), str(limit), "capacity=65536", "Raise capacity="):
        assert fact in str(info.value), f"MessageTooLarge does not say {fact!r}: {info.value}"

    # A batch larger than the budget waits for an empty pipe, then goes in whole...
    batch = [b"b" * 20_000] * 3
    q.put(b"first")
    with pytest.raises(PipeFull):
        q.put_many(batch, block=False)
    assert q.get(timeout=LONG) == b"first"
    q.put_many(batch, block=False)
    assert q.get_many(5, timeout=LONG) == batch
    # ...and one larger than the whole pipe can never fit.
    with pytest.raises(MessageTooLarge, match="split it"):
        q.put_many([b"c" * 20_000] * 4)
    with pytest.raises(MessageTooLarge):
        q.put_many([b"d", b"e" * (limit + 1)])
    assert q.qsize() == 0
    assert q.info()["unfinished"] == 5


def test_a_waiting_large_put_keeps_its_room_from_later_small_ones(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://?capacity=64KiB&serializer=raw")
    small, large = b"s" * 1000, b"L" * 20_000
    accepted = fill(q, small)
    done = threading.Event()
    putter = threading.Thread(target=lambda: (q.put(large, timeout=LONG), done.set()))
    putter.start()
    time.sleep(0.3)  # let it wait
    got = 0
    while not done.is_set() and got < accepted:
        assert q.get(timeout=LONG) == small
        got += 1
        # Room for a small item appears at every get, but it is kept for the large one.
        with pytest.raises(PipeFull, match="kept for a put that has waited longer"):
            q.put(small, block=False)
        done.wait(0.05)
    assert done.wait(LONG), "the large put never got in"
    putter.join(LONG)
    assert got < accepted, "the large put waited for an empty pipe"
    assert q.get_many(accepted, timeout=LONG) == [small] * (accepted - got) + [large]


def _put_and_wait(q: PipeQueue[bytes], item: bytes) -> None:
    q.put(item)


def test_a_putter_killed_while_waiting_keeps_room_only_for_a_while(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://?capacity=64KiB&serializer=raw")
    small = b"s" * 1000
    fill(q, small)
    child = FORK.Process(target=_put_and_wait, args=(q, b"L" * 20_000), daemon=True)
    child.start()

    def attempt() -> str:
        try:
            q.put(small, block=False)
        except PipeFull as exc:
            return "kept" if "kept for" in str(exc) else "full"
        return "put"

    end = time.monotonic() + LONG
    while attempt() == "full":
        assert time.monotonic() < end, "the child's put never waited"
        time.sleep(0.01)
    q.get(timeout=LONG)  # room for one small item, were it not kept for the child
    assert attempt() == "kept", "a small put took the room a waiting large one needs"
    # Killed while waiting, not while it holds the queue's lock (which it takes twice a second
    # to look again): that case is the repair's (see the kills below), not the hold's.
    q._shared.lock.acquire()
    try:
        child.kill()
        child.join(LONG)
    finally:
        q._shared.lock.release()
    killed = time.monotonic()
    assert attempt() == "kept", "a dead putter's room was given up at once"
    while (outcome := attempt()) == "kept":
        assert time.monotonic() - killed < HOLD_STALE + LONG / 2, "a dead putter's room stays kept"
        time.sleep(0.05)
    assert outcome == "put"


# --- Capacity -------------------------------------------------------------------------------


def _pages(size: int) -> int:
    return size // PAGE


@pytest.mark.parametrize(
    ("asked", "made"),
    [("5000", 2 * PAGE), ("64KiB", 65536), ("100KiB", 128 * 1024), ("1MiB", 1024 * 1024)],
)
def test_capacity_is_rounded_as_the_kernel_does_and_shown(
    asked: str, made: int, opened: Callable[..., PipeQueue[Any]]
) -> None:
    q = opened(f"pipe://?capacity={asked}")
    info = q.info()
    assert info["capacity"] == made
    assert fcntl.fcntl(q._shared.wfd, fcntl.F_GETPIPE_SZ) == made
    assert info["frame_budget"] == _pages(made) // 2 * (PAGE + 1)
    assert q.capabilities.max_message_size == info["frame_budget"] - HEAD
    assert f"capacity={made}" in repr(q)


def test_default_capacity_is_a_mebibyte_or_the_limit(opened: Callable[..., PipeQueue[Any]]) -> None:
    with open(MAX_SIZE_FILE) as f:
        limit = int(f.read())
    assert opened().info()["capacity"] == min(1024 * 1024, limit)


@pytest.mark.parametrize("capacity", ["1", str(PAGE), "lots", "4GiB"])
def test_a_capacity_no_pipe_can_have_is_invalid(capacity: str) -> None:
    with pytest.raises(InvalidURL, match="capacity"):
        queuekit.open(f"pipe://?capacity={capacity}")


def test_capacity_above_pipe_max_size_needs_privilege() -> None:
    with open(MAX_SIZE_FILE) as f:
        limit = int(f.read())
    url = f"pipe://?capacity={2 * limit}"
    if os.geteuid() != 0:
        with pytest.raises(InvalidURL) as info:
            queuekit.open(url)
        kind, message = "InvalidURL", str(info.value)
    else:
        # Root may exceed the limit: ask as an unprivileged user, in a forked child.
        receive, send = FORK.Pipe(duplex=False)
        child = FORK.Process(target=_open_as_nobody, args=(url, send), daemon=True)
        child.start()
        send.close()
        assert receive.poll(LONG), "the unprivileged child did not report"
        kind, message = receive.recv()
        child.join(LONG)
        if kind == "skip":
            pytest.skip(message)
    assert kind == "InvalidURL", f"{kind}: {message}"
    assert MAX_SIZE_FILE in message
    assert str(limit) in message
    assert f"capacity={limit}" in message, "the error should say what may be asked for"


def test_the_kernel_holds_far_fewer_bytes_than_its_size_when_writes_straddle_pages() -> None:
    """Why frames fill only half the pipe: page-sized writes and small ones alternating take
    a page slot each, so a 64 KiB pipe is full at about half its bytes."""
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 65536)
        held = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                held += os.write(w, b"p" * PAGE)
                held += os.write(w, b"s" * HEAD)
        assert held <= frame_budget(65536) + PAGE, f"the pipe took {held} bytes"
        assert held > frame_budget(65536) - 2 * PAGE, "the budget is much smaller than needed"
    finally:
        os.close(r)
        os.close(w)


# --- Handles travel; file descriptors -------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_handle_travels_to_a_child_and_works_both_ways(
    method: str, opened: Callable[..., PipeQueue[Any]]
) -> None:
    jobs = opened("pipe://?maxsize=2")
    results = opened("pipe://?capacity=64KiB")
    assert method in jobs.capabilities.start_methods
    ctx: Any = multiprocessing.get_context(method)
    child = ctx.Process(target=_echo, args=(jobs, results, 5), daemon=True)
    child.start()
    try:
        for job in range(5):
            jobs.put(job, timeout=LONG)
        jobs.join(timeout=LONG)
        got = [results.get(timeout=LONG) for _ in range(5)]
        child.join(LONG)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
    assert got == [(child.pid, job * 10) for job in range(5)]
    assert jobs.info()["unfinished"] == 0


@pytest.mark.parametrize("method", START_METHODS)
def test_pipe_ends_are_close_on_exec_in_every_process(
    method: str, opened: Callable[..., PipeQueue[Any]]
) -> None:
    q = opened()
    assert not _reachable_after_exec(q._shared.rfd), "a program run by the parent gets the pipe"
    ctx: Any = multiprocessing.get_context(method)
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_report_fds, args=(q, send), daemon=True)
    child.start()
    send.close()
    assert receive.poll(LONG), "the child did not report"
    flags, reachable = receive.recv()
    child.join(LONG)
    assert flags == [True, True], f"under {method}, the child's pipe ends lack FD_CLOEXEC"
    assert not reachable, f"under {method}, a program the child runs gets the pipe"


def test_pickling_a_handle_outside_process_start_says_how_to_share_it(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened()
    with pytest.raises(RuntimeError, match="argument of Process"):
        pickle.dumps(q)
    with pytest.raises(SerializationError, match="argument of Process"):
        opened().put(q)


# --- Producers never wait at exit -----------------------------------------------------------


def test_a_producer_exits_at_once_where_an_mp_producer_waits_for_a_reader(
    opened: Callable[..., Any],
) -> None:
    items = [bytes([i]) * 65536 for i in range(6)]  # 384 KiB: six times the stdlib's pipe
    pipe_q, mp_q = opened(), queuekit.open("mp://")
    try:
        children = [
            FORK.Process(target=_put_and_exit, args=(q, items), daemon=True) for q in (pipe_q, mp_q)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(3.0)
        pipe_child, mp_child = children
        assert pipe_child.exitcode == 0, "the pipe:// producer could not exit within 3s"
        assert mp_child.is_alive(), "expected the mp:// producer to wait for its feeder"
        assert pipe_q.qsize() == len(items)
        assert [pipe_q.get(timeout=LONG) for _ in items] == items
        assert [mp_q.get(timeout=LONG) for _ in items] == items  # which lets it go
        mp_child.join(LONG)
        assert mp_child.exitcode == 0
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
        mp_q.shutdown(immediate=True)
        mp_q.close()


# --- No reader left -------------------------------------------------------------------------


def test_put_raises_once_no_process_can_read_the_pipe(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://?capacity=64KiB&serializer=raw")
    go = FORK.Event()
    reader = FORK.Process(target=_wait_then_exit, args=(go,), daemon=True)
    reader.start()  # holds a read end it inherited, until it exits
    item = b"x" * 10_000
    fill(q, item)
    q.close_reader()
    with pytest.raises(QueueClosed, match="close_reader"):
        q.get_nowait()
    assert q.info()["reader"] is False

    outcome: list[BaseException] = []

    def put() -> None:
        try:
            q.put(item)
        except BaseException as exc:
            outcome.append(exc)

    putter = threading.Thread(target=put, daemon=True)
    putter.start()
    putter.join(1.0)
    assert putter.is_alive(), f"the put did not wait while a child could still read: {outcome}"
    go.set()
    reader.join(LONG)
    putter.join(LONG)
    assert not putter.is_alive(), "a put on a pipe nobody can read still waits"
    assert isinstance(outcome[0], BackendUnavailable), outcome
    assert "no process can read" in str(outcome[0])

    # With room, the write itself finds nobody to read it.
    alone = opened("pipe://?serializer=raw")
    alone.close_reader()
    with pytest.raises(BackendUnavailable, match="close_reader"):
        alone.put(b"nobody will read this")
    assert alone.qsize() == 0


# --- Killed at a chosen instant -------------------------------------------------------------
#
# The child runs a real put or get and SIGKILLs itself at one point of it, holding the lock:
# the step named is replaced, in the child only, by a step that kills the process.


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _killed_at(q: PipeQueue[bytes], step: str, call: str) -> None:
    shared = type(q._shared)
    if step == "holding the lock":
        q._shared.acquire()
        _die()
    if step == "before the write":
        shared._write = lambda self, frames, nbytes: _die()  # type: ignore[method-assign]
    elif step == "after the write":
        shared.added = lambda self, n: _die()  # type: ignore[method-assign]
    elif step == "before the read":
        shared._read_exactly = lambda self, n: _die()  # type: ignore[method-assign]
    elif step == "half-way through the read":

        def half(self: Any, n: int) -> bytes:
            os.read(self.rfd, n // 2)
            _die()
            return b""

        shared._read_exactly = half  # type: ignore[method-assign]
    elif step == "after the read":
        shared.made_room = lambda self: _die()  # type: ignore[method-assign]
    if call == "put":
        q.put(b"from the child")
    elif call == "put_many":
        q.put_many([b"child one", b"child two"])
    else:
        q.get_many(2)


@pytest.mark.parametrize(
    ("step", "call", "then"),
    [
        ("holding the lock", "", ["a", "b", "c"]),
        ("before the write", "put", ["a", "b", "c"]),
        ("after the write", "put", ["a", "b", "c", "from the child"]),
        ("after the write", "put_many", ["a", "b", "c", "child one", "child two"]),
        ("before the read", "get_many", ["a", "b", "c"]),
        ("half-way through the read", "get_many", ["c"]),
        ("after the read", "get_many", ["c"]),
    ],
)
@pytest.mark.parametrize("reader", [True, False], ids=["repaired-by-reader", "by-writer"])
def test_a_process_killed_holding_the_lock_is_repaired_after(
    step: str, call: str, then: list[str], reader: bool, opened: Callable[..., PipeQueue[bytes]]
) -> None:
    """Nobody hangs; a write the kernel took is counted, one it did not take is not; frames a
    killed getter did not read go back to the queue, and only those it read are lost, even when
    its read stopped half-way (the rest is skipped, by the next get if the repairer has no
    read end)."""
    q = opened("pipe://?serializer=raw&maxsize=10")
    q.put_many([b"a", b"b", b"c"])
    child = FORK.Process(target=_killed_at, args=(q, step, call))
    child.start()
    child.join(LONG)
    assert child.exitcode == -signal.SIGKILL
    if not reader:  # the repair, by a process that can only write
        writer = FORK.Process(target=_put_without_reader, args=(q,))
        writer.start()
        writer.join(LONG)
        assert writer.exitcode == 0
    assert within(LONG, q.qsize, "qsize() after the kill") == len(then) + (not reader)
    got = within(LONG, lambda: q.get_many(10, timeout=LONG), "get_many() after the kill")
    expected = [item.encode() for item in then] + ([b"from the writer"] if not reader else [])
    assert got == expected
    assert q.info()["repairs"] == 1
    assert q.info()["bytes_waiting"] == 0
    q.put(b"after")
    assert q.get(timeout=LONG) == b"after"


def _put_without_reader(q: PipeQueue[bytes]) -> None:
    q.close_reader()
    q.put(b"from the writer", timeout=LONG)


# --- A corrupt stream -----------------------------------------------------------------------


def _fake_frame(payload: bytes, *, length: int | None = None, check: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    word = size ^ 0xA5C3_5A3C if check is None else check
    return struct.pack("<HBBII", 0x4B51, 2, 0, size, word) + payload


@pytest.mark.parametrize(
    "foreign",
    [
        b"this is not a frame at all",
        _fake_frame(b"", length=1 << 30),  # a header that claims a gigabyte
        _fake_frame(b"hello", check=0),  # a header whose check word is wrong
        b"x" * HEAD,  # exactly a header's size
    ],
)
@pytest.mark.parametrize("where", ["first", "between", "inside a batch"])
def test_bytes_a_foreign_program_wrote_are_raised_and_the_queue_goes_on(
    foreign: bytes, where: str, opened: Callable[..., PipeQueue[Any]]
) -> None:
    q = opened("pipe://?serializer=raw")
    w = q._shared.wfd
    if where == "first":
        os.write(w, foreign)
    q.put(b"hello")
    if where != "first":
        os.write(w, foreign)
    q.put_many([b"world", b"again"])
    if where == "between":
        assert q.get(timeout=LONG) == b"hello", "a frame before the garbage is intact"
    with pytest.raises(CorruptMessage, match="not written by this queue") as info:
        within(
            LONG,
            lambda: q.get_many(3, timeout=LONG) if where == "inside a batch" else q.get(),
            "a get that meets foreign bytes",
        )
    assert info.value.data == foreign
    rest = [b"world", b"again"] if where == "between" else [b"hello", b"world", b"again"]
    got: list[bytes] = []
    while len(got) < len(rest):  # what the get held first, then the pipe
        got += q.get_many(5, timeout=LONG)
    assert got == rest
    q.put(b"after")
    assert q.get(timeout=LONG) == b"after"
    assert q.info()["bytes_waiting"] == 0


def test_bytes_taken_from_the_pipe_behind_its_back_break_it_for_good(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://?serializer=raw")
    q.put(b"hello")
    os.read(q._shared.rfd, 3)
    with pytest.raises(CorruptMessage, match="were counted in the pipe") as info:
        within(LONG, lambda: q.get(timeout=LONG), "get() from a corrupt pipe")
    assert "open a new one" in str(info.value)
    # From then on every get and put says so, at once; shutdown still works.
    with pytest.raises(CorruptMessage):
        within(LONG, q.get_nowait, "get_nowait() after corruption")
    with pytest.raises(CorruptMessage):
        q.put(b"more")
    q.shutdown(immediate=True)


@pytest.mark.parametrize("sizes", ["one size", "mixed sizes"])
@pytest.mark.parametrize("damage", ["check", "length", "magic"])
def test_a_damaged_header_inside_a_batch_is_found(
    sizes: str, damage: str, opened: Callable[..., PipeQueue[bytes]]
) -> None:
    """A batch of frames of one size is split in one go; a header in it that is not that size's
    header is still found, as it is among frames of mixed sizes."""
    q = opened("pipe://?serializer=raw")
    items = [bytes([i]) * (8 if sizes == "one size" else 8 + i % 3) for i in range(10)]
    q.put_many(items)
    r, w = q._shared.rfd, q._shared.wfd
    data = bytearray(os.read(r, 1 << 16))
    at = sum(HEAD + len(item) for item in items[:6])  # the seventh frame's header
    field = {"magic": 0, "length": 4, "check": 8}[damage]
    data[at + field] ^= 0x01
    os.write(w, bytes(data))
    with pytest.raises(CorruptMessage, match="frame header reads"):
        within(LONG, lambda: q.get_many(10, timeout=LONG), "get_many() of a damaged batch")


# --- Frames stay whole ----------------------------------------------------------------------

TAG = struct.Struct("<III")  # producer, seq, CRC-32 of the rest
BIGGEST = 256 * 1024


def _tagged(producer: int, seq: int, size: int) -> bytes:
    body = random.Random(producer * 100_003 + seq).randbytes(size)
    return TAG.pack(producer, seq, zlib.crc32(body)) + body


def _hammer_producer(q: PipeQueue[bytes], producer: int, count: int) -> None:
    rng = random.Random(producer)
    seq = 0
    while seq < count:
        if rng.random() < 0.3:
            sizes = [rng.randint(100, 64 * 1024) for _ in range(min(4, count - seq))]
            q.put_many([_tagged(producer, seq + k, n) for k, n in enumerate(sizes)], timeout=LONG)
            seq += len(sizes)
        else:
            size = rng.choice([rng.randint(100, 4096), rng.randint(100, BIGGEST)])
            q.put(_tagged(producer, seq, size), timeout=LONG)
            seq += 1


def _hammer_consumer(q: PipeQueue[bytes], go: Any, conn: Connection) -> None:
    go.wait(LONG)
    rng = random.Random(os.getpid())
    got = []
    while True:
        batch = q.get_many(rng.randint(1, 5), timeout=LONG) if rng.random() < 0.5 else [q.get()]
        time.sleep(0.001)  # slower than the producers, so that they keep the pipe full
        for data in batch:
            if data:
                producer, seq, crc = TAG.unpack_from(data)
                got.append((producer, seq, zlib.crc32(data[TAG.size :]) == crc))
        stops = batch.count(b"")
        if stops:
            # One empty item stops each consumer: hand back those taken for the other.
            if stops > 1:
                q.put_many([b""] * (stops - 1))
            conn.send(got)
            return


@pytest.mark.parametrize("overcommit", [False, True], ids=["budget", "budget-overcommitted"])
def test_mixed_sizes_from_many_producers_arrive_whole(
    overcommit: bool, opened: Callable[..., PipeQueue[bytes]]
) -> None:
    """Frames of 100 B to 256 KiB, from three producers, through a pipe that holds two of the
    largest. Overcommitted, the budget is wrong on purpose: the kernel takes only part of some
    writes, and the guard must finish them without tearing a frame or blocking."""
    q = opened("pipe://?capacity=512KiB&serializer=raw")
    assert q.capabilities.max_message_size >= TAG.size + BIGGEST
    budget = q.info()["frame_budget"]
    if overcommit:
        q._shared.budget = 4 * q._shared.capacity
    go = FORK.Event()
    count = 200
    consumers, reports = [], []
    for _ in range(2):
        receive, send = FORK.Pipe(duplex=False)
        consumers.append(FORK.Process(target=_hammer_consumer, args=(q, go, send), daemon=True))
        reports.append(receive)
    producers = [
        FORK.Process(target=_hammer_producer, args=(q, p, count), daemon=True) for p in range(3)
    ]
    children = consumers + producers
    try:
        for child in children:
            child.start()
        # Let the producers fill the pipe (overfill it, overcommitted) before anyone reads.
        end = time.monotonic() + LONG
        while time.monotonic() < end and not (
            q.info()["late_writes"] if overcommit else q.info()["bytes_waiting"] > budget // 2
        ):
            time.sleep(0.01)
        go.set()
        for child in producers:
            child.join(LONG)
            assert child.exitcode == 0, "a producer failed or hung"
        q.put_many([b"", b""])
        results = [r.recv() if r.poll(LONG) else None for r in reports]
        assert None not in results, "a consumer did not finish"
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
    got = [record for records in results if records for record in records]
    assert all(intact for _, _, intact in got), "a frame arrived damaged"
    seen = Counter((producer, seq) for producer, seq, _ in got)
    assert seen == Counter((p, s) for p in range(3) for s in range(count)), "lost or repeated"
    for records in results:
        assert records is not None
        for p in range(3):
            seqs = [seq for producer, seq, _ in records if producer == p]
            assert seqs == sorted(seqs), "a producer's frames came out of order"
    late = q.info()["late_writes"]
    if overcommit:
        assert late > 0, "the overcommitted budget never made the kernel take part of a write"
    else:
        assert late == 0, f"within the budget the kernel still took only part of {late} writes"


# --- URLs, info, repr -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("pipe://somewhere", {}, "pipe://"),
        ("pipe:///tmp/fifo", {}, "pipe://"),
        ("pipe://?capacity=big", {}, "capacity"),
        ("pipe://", {"capacity": -1}, "capacity"),
        ("pipe://?context=bogus", {}, "context"),
        ("pipe://?nope=1", {}, "nope"),
        ("pipe://?maxsize=lots", {}, "maxsize"),
    ],
)
def test_bad_urls_and_options_are_invalid(url: str, options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidURL, match=named):
        queuekit.open(url, **options)


def test_info_repr_and_close(opened: Callable[..., PipeQueue[Any]]) -> None:
    q = opened("pipe://?maxsize=4&capacity=64KiB", context="spawn")
    q.put_many([1, 2])
    frame = HEAD + len(pickle.dumps(1, protocol=5))
    assert q.info() == {
        "maxsize": 4,
        "qsize": 2,
        "unfinished": 2,
        "shutdown": False,
        "repairs": 0,
        "context": "spawn",
        "start_methods": START_METHODS,
        "bytes_waiting": 2 * frame,
        "late_writes": 0,
        "serializer": "pickle",
        "capacity": 65536,
        "frame_budget": frame_budget(65536),
        "max_message_size": frame_budget(65536) - HEAD,
        "reader": True,
    }
    assert q.get(timeout=LONG) == 1
    assert (q.info()["qsize"], q.info()["unfinished"]) == (1, 2)
    assert q.capabilities.ordering == "fifo"
    ends = (q._shared.rfd, q._shared.wfd)
    q.close()
    q.close()
    assert "closed" in repr(q)
    for fd in ends:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
    for call in (q.info, q.qsize, q.get_nowait, lambda: q.put(3), q.close_reader, q.shutdown):
        with pytest.raises(QueueClosed):
            call()


# --- Reading whole writes, parts of writes, and thousands of writes at once -----------------


@pytest.mark.parametrize("seed", range(4))
def test_gets_of_any_size_take_frames_in_order_across_writes(
    seed: int, opened: Callable[..., PipeQueue[bytes]]
) -> None:
    """Puts and batches of mixed sizes (some frames of 70 KiB), and rounds of thousands of the
    smallest writes, drained by gets and get_many calls that claim whole writes, parts of writes
    and several writes at once."""
    rng = random.Random(seed)
    q = opened("pipe://?capacity=1MiB&serializer=raw")
    # Half a pipe of the smallest frames (16 bytes each).
    many = q.info()["frame_budget"] // 16 // 2

    def item(i: int, size: int) -> bytes:
        return i.to_bytes(4, "little") + bytes([i % 251]) * size

    def small() -> int:
        return rng.choice([0, 1, rng.randint(2, 300)])

    put: list[bytes] = []
    got: list[bytes] = []
    rounds = most = 0
    while rounds < 12:
        writes, overflow = 0, rounds % 4 == 1
        if overflow and len(got) < len(put):  # room for them
            got += q.get_many(len(put), timeout=LONG)
        while writes < (many if overflow else rng.choice([5, 200])):
            if overflow:  # the smallest frames
                put.append(item(len(put), 0))
                q.put(put[-1], block=False)
            elif rng.random() < 0.5:
                batch = [item(len(put) + k, 70 * 1024 if k == 3 else small()) for k in range(40)]
                batch = batch[: rng.randint(1, 40)]
                q.put_many(batch, block=False)
                put += batch
            else:
                put.append(item(len(put), 70 * 1024 if rng.random() < 0.1 else small()))
                q.put(put[-1], block=False)
            writes += 1
            if q.info()["bytes_waiting"] > 300_000 and not overflow:
                break
        most = max(most, writes)
        while len(got) < len(put) - rng.choice([0, 0, 7, 300]):
            if rng.random() < 0.3:
                got.append(q.get(timeout=LONG))
            else:
                got += q.get_many(rng.choice([1, 2, 5, 39, 40, 41, 1000]), timeout=LONG)
        assert got == put[: len(got)], f"round {rounds}: frames came out wrong or out of order"
        rounds += 1
    got += q.get_many(len(put), timeout=LONG) if len(got) < len(put) else []
    assert got == put
    assert q.qsize() == 0
    assert q.info()["bytes_waiting"] == 0
    assert most >= many, "never thousands of writes in the pipe at once"


# --- Batches through the serializer ---------------------------------------------------------


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not today")


class _Upper:
    """A serializer without batch calls: put_many and get_many call dumps and loads per item."""

    name = "upper"

    def __init__(self) -> None:
        self.calls = Counter[str]()

    def dumps(self, item: str) -> bytes:
        self.calls["dumps"] += 1
        return item.upper().encode()

    def loads(self, data: bytes) -> str:
        self.calls["loads"] += 1
        return data.decode().lower()


def test_batches_use_a_serializer_with_or_without_batch_calls(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    upper = _Upper()
    q = opened("pipe://", serializer=upper)
    q.put_many(iter(["ab", "cd", "ef"]))  # any iterable
    assert q.get_many(5, timeout=LONG) == ["ab", "cd", "ef"]
    assert upper.calls == {"dumps": 3, "loads": 3}

    p = opened("pipe://")
    big = b"b" * (200 * 1024)  # pickled apart from the small ones (see PickleSerializer)
    items: list[Any] = [("job", 1), big, "text", ("job", 2)]
    p.put_many(items)
    assert p.get_many(10, timeout=LONG) == items


def test_a_batch_that_cannot_be_pickled_names_the_item_and_puts_nothing(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://")
    with pytest.raises(SerializationError, match=r"cannot pickle '_Unpicklable'.*not today"):
        q.put_many([1, 2, _Unpicklable(), 4])
    assert q.qsize() == 0
    assert q.info()["bytes_waiting"] == 0


# --- A message that will not load ----------------------------------------------------------


def test_a_batch_with_a_frame_that_will_not_load_returns_what_comes_before_it(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://")
    raw = opened("pipe://?serializer=raw")
    # Frames written by a raw handle of the same pipe are whole, but not all are pickles.
    raw._shared = q._shared
    raw.put_many([pickle.dumps(1), b"not a pickle", pickle.dumps(3)])
    raw.put(pickle.dumps(4))
    assert q.get_many(3, timeout=LONG) == [1]
    assert q.qsize() == 1  # the two this handle holds are not in the queue
    with pytest.raises(SerializationError, match="cannot unpickle a 12-byte message"):
        q.get(timeout=LONG)
    assert q.get_many(5, timeout=LONG) == [3]  # what the handle holds comes first, alone
    assert q.get(timeout=LONG) == 4
    for _ in range(3):
        q.task_done()
    q.join(timeout=0)  # the bad message was counted done by the get that raised


def test_a_message_without_the_authkey_s_tag_is_refused_done_and_skipped(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://", authkey=b"k" * 32)
    foreign = opened("pipe://")
    foreign._shared = q._shared
    foreign.put("forged")
    q.put("signed")
    with pytest.raises(queuekit.AuthenticationError) as info:
        q.get(timeout=LONG)
    assert info.value.data == pickle.dumps("forged", protocol=5)
    assert q.get(timeout=LONG) == "signed"
    q.task_done()
    q.join(timeout=0)


def test_a_batch_whose_first_message_will_not_load_raises_and_holds_the_rest(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://", serializer=Refusing())
    q.put_many(["bad", 1, 2])
    q.put(3)
    with pytest.raises(Refused):
        q.get_many(3, timeout=LONG)
    assert q.qsize() == 1
    assert q.get(timeout=LONG) == 1
    assert q.get_many(5, timeout=LONG) == [2]
    assert q.get_many(5, timeout=LONG) == [3]
    for _ in range(3):
        q.task_done()
    q.join(timeout=0)


def _hold_then_die_giving_back(q: PipeQueue[Any]) -> None:
    q.get_many(3, timeout=LONG)
    type(q._shared).added = lambda self, n: _die()  # type: ignore[method-assign]
    q.close()


def test_a_process_killed_giving_back_what_it_held_leaves_the_counts_right(
    opened: Callable[..., PipeQueue[Any]],
) -> None:
    q = opened("pipe://", serializer=Refusing())
    q.put_many([0, "bad", 2])
    child = FORK.Process(target=_hold_then_die_giving_back, args=(q,))
    child.start()
    child.join(LONG)
    assert child.exitcode == -signal.SIGKILL
    # Its write went in: the repair counts it in the queue, not again as a task.
    assert within(LONG, q.qsize, "qsize() after the kill") == 2
    with pytest.raises(Refused):
        q.get(timeout=LONG)
    assert q.get(timeout=LONG) == 2
    q.task_done()
    assert q.info()["unfinished"] == 1  # 0, which the killed process had got
