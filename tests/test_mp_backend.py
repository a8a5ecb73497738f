"""What is particular to mp://; the contract itself is the conformance suite's business.

Children run module-level functions, so spawn and forkserver children can import them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from refusing import Refused, Refusing

import queuekit
from queuekit import (
    CorruptMessage,
    Empty,
    Full,
    InvalidURL,
    JoinTimeout,
    QueueClosed,
    SerializationError,
    ShutDown,
)
from queuekit.backends import _mp_stream
from queuekit.backends.mp import IN_FLIGHT_GRACE, MPQueue

START_METHODS = [
    m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()
]
LONG = 20.0
"""Seconds after which a child or a call is taken to hang (the machine is shared and slow)."""

BIG = 256 * 1024
"""Bytes in a 'large' item: four of them overflow a pipe's buffer many times over."""


@pytest.fixture
def opened() -> Iterator[Callable[..., MPQueue[Any]]]:
    """Opens mp:// queues and ends them after the test (shut down first, so close cannot wait)."""
    queues: list[MPQueue[Any]] = []

    def open_queue(url: str = "mp://", **options: Any) -> MPQueue[Any]:
        q = queuekit.open(url, **options)
        assert isinstance(q, MPQueue)
        queues.append(q)
        return q

    yield open_queue
    for q in queues:
        with contextlib.suppress(Exception):
            q.shutdown(immediate=True)
        with contextlib.suppress(Exception):
            q.close()


@contextlib.contextmanager
def running(method: str, target: Callable[..., None], *args: Any) -> Iterator[Any]:
    """A child process running ``target(*args)``, which must end by the end of the block."""
    ctx: Any = multiprocessing.get_context(method)  # BaseContext does not declare Process
    process = ctx.Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield process
        process.join(LONG)
        assert not process.is_alive(), f"the child process was still running after {LONG}s"
    finally:
        if process.is_alive():
            process.kill()
            process.join(LONG)


def call_within(seconds: float, func: Callable[[], None], what: str) -> None:
    """Run ``func`` in a thread; fail if it is still running after ``seconds``."""
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            func()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), f"{what} was still blocked after {seconds}s"
    if errors:
        raise errors[0]


# --- Children -----------------------------------------------------------------------------


def _worker(jobs: MPQueue[int], results: MPQueue[tuple[int, int]], n: int) -> None:
    for _ in range(n):
        job = jobs.get(timeout=LONG)
        results.put((os.getpid(), job * 10))
        jobs.task_done()
    results.close()


def _get_until_shut_down(q: MPQueue[Any], ready: Any, woke: Any) -> None:
    ready.set()
    try:
        q.get()
    except ShutDown:
        woke.set()


def _wait_in(q: MPQueue[Any], call: str, go: Any, ready: Any) -> None:
    go.wait(LONG)
    ready.set()
    if call == "get":
        q.get()
    elif call == "put":
        q.put("blocked")
    else:
        q.join()


def _put_batch(q: MPQueue[str], go: Any, started: Any, done: Any) -> None:
    go.wait(LONG)
    started.set()
    q.put_many(["x", "y"], timeout=LONG)
    done.set()


def _put_large(q: MPQueue[bytes], n: int, put_done: Any) -> None:
    for i in range(n):
        q.put(bytes([i]) * BIG)
    put_done.set()
    # Exiting now joins this process's feeder, which waits until readers make room in the pipe.


def _put_and_die(q: MPQueue[Any]) -> None:
    # The large item does not fit the pipe: its run is left to the feeder, half written, and
    # "lost" waits in the buffer behind it. Killed now, the large item is torn and the small
    # one never written, though both are counted.
    q.put(bytes(3 * BIG))
    q.put("lost")
    os.kill(os.getpid(), signal.SIGKILL)


# --- Serialization in the caller ----------------------------------------------------------


def test_unserializable_item_is_refused_by_put_where_the_stdlib_drops_it(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    q.put("before")
    with pytest.raises(SerializationError):
        q.put(lambda: None)
    with pytest.raises(SerializationError):
        q.put_many(["a", threading.Lock(), "b"])
    assert q.qsize() == 1
    assert q.info()["unfinished"] == 1
    assert q.get(timeout=LONG) == "before"
    assert q.empty()

    # The stdlib pickles in its feeder thread: put returns, and the item is silently lost.
    raw = multiprocessing.get_context("spawn").Queue()
    try:
        raw.put(lambda: None)
        raw.put("after")
        assert raw.get(timeout=LONG) == "after"
        with pytest.raises(queue.Empty):
            raw.get(timeout=0.5)
    finally:
        raw.close()
        raw.join_thread()


# --- Handles travel -------------------------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_handle_travels_to_a_child_and_works_both_ways(
    method: str, opened: Callable[..., MPQueue[Any]]
) -> None:
    jobs = opened("mp://?maxsize=2")
    results = opened()
    assert method in jobs.capabilities.start_methods
    with running(method, _worker, jobs, results, 5) as child:
        for job in range(5):
            jobs.put(job, timeout=LONG)  # the bound makes the parent wait for the child's gets
        jobs.join(timeout=LONG)
        assert results.qsize() == 5, "each result is counted before its task_done"
        got = [results.get(timeout=LONG) for _ in range(5)]
    assert child.exitcode == 0
    assert got == [(child.pid, job * 10) for job in range(5)]
    assert jobs.info()["unfinished"] == 0
    assert jobs.empty()
    assert results.empty()


def test_pickling_a_handle_outside_process_start_says_how_to_share_it(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    with pytest.raises(RuntimeError, match="argument of Process"):
        pickle.dumps(q)
    # Put through another queue, the same refusal arrives as a SerializationError in the caller.
    with pytest.raises(SerializationError, match="argument of Process"):
        opened().put(q)


@pytest.mark.skipif("spawn" not in START_METHODS, reason="needs the spawn start method")
def test_fork_context_handle_refuses_to_travel_to_a_spawn_child() -> None:
    q: MPQueue[Any] = MPQueue(context="fork")
    try:
        assert q.capabilities.start_methods == ("fork",)
        process = multiprocessing.get_context("spawn").Process(target=_worker, args=(q, q, 0))
        with pytest.raises(RuntimeError, match="context=fork"):
            process.start()
    finally:
        q.close()


# --- Waking and waiting across processes ----------------------------------------------------


def test_shutdown_wakes_a_getter_blocked_in_another_process(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    ctx = multiprocessing.get_context("fork")
    q = opened()
    ready, woke = ctx.Event(), ctx.Event()
    with running("fork", _get_until_shut_down, q, ready, woke):
        assert ready.wait(LONG)
        time.sleep(0.3)  # let the child block in get()
        start = time.monotonic()
        q.shutdown()
        assert woke.wait(LONG), "the blocked getter never raised ShutDown"
        assert time.monotonic() - start < 5.0, "the blocked getter took over 5s to wake"


@pytest.mark.parametrize("call", ["get", "put", "join"])
def test_a_waiter_killed_while_blocked_does_not_wedge_the_queue(call: str) -> None:
    # multiprocessing.Condition would hang the next notify forever, with the lock held.
    ctx = multiprocessing.get_context("fork")
    q: MPQueue[Any] = MPQueue(maxsize=1)
    go, ready = ctx.Event(), ctx.Event()
    # Children are forked before the parent's first put starts a feeder thread, as forking a
    # process with threads is unsafe (and Python 3.12+ warns about it).
    with running("fork", _wait_in, q, call, go, ready) as child:
        if call in ("put", "join"):
            q.put("held")
        go.set()
        assert ready.wait(LONG)
        time.sleep(0.3)  # let the child block
        child.kill()

    def carry_on() -> None:
        while q.qsize():
            q.get(timeout=LONG)
            q.task_done()
        q.put("next", timeout=LONG)
        assert q.get(timeout=LONG) == "next"
        q.task_done()
        q.join(timeout=LONG)
        q.shutdown(immediate=True)

    call_within(LONG, carry_on, f"the queue, after a child was killed blocked in {call}(),")
    q.close()


def _die_holding_the_lock(q: MPQueue[Any]) -> None:
    q._shared.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("method", START_METHODS)
def test_a_process_killed_holding_the_lock_wedges_nothing(
    method: str, opened: Callable[..., MPQueue[Any]]
) -> None:
    """The shared counts are under a robust lock: the next process to take it carries on (and
    wakes every waiter, in case the dead one owed a wake-up)."""
    q = opened("mp://?maxsize=2")
    ctx: Any = multiprocessing.get_context(method)
    child = ctx.Process(target=_die_holding_the_lock, args=(q,))
    child.start()
    child.join(LONG)
    assert child.exitcode == -signal.SIGKILL

    def carry_on() -> None:
        assert q.qsize() == 0
        q.put("before", timeout=LONG)
        q.put("after", timeout=LONG)
        assert [q.get(timeout=LONG), q.get(timeout=LONG)] == ["before", "after"]
        q.task_done()
        q.task_done()
        q.join(timeout=LONG)

    call_within(LONG, carry_on, "the queue, after a child died holding its lock,")
    assert q.info()["repairs"] == 1


def test_a_batch_is_all_or_nothing_while_it_waits_in_another_process(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    ctx = multiprocessing.get_context("fork")
    q = opened("mp://?maxsize=3")
    go, started, done = ctx.Event(), ctx.Event(), ctx.Event()
    with running("fork", _put_batch, q, go, started, done):
        q.put_many(["a", "b"])
        go.set()
        assert started.wait(LONG)
        time.sleep(0.3)  # let the child block in put_many: one free slot, two items
        assert not done.is_set(), "put_many returned although its batch did not fit"
        assert q.qsize() == 2, "part of a waiting batch was enqueued"
        with pytest.raises(Full):
            q.put_many([1, 2], block=False)
        with pytest.raises(ValueError, match="never fit"):
            q.put_many([1, 2, 3, 4])
        assert q.get(timeout=LONG) == "a"
        assert done.wait(LONG), "the waiting batch did not go in once there was room"
    assert q.qsize() == 3
    rest = [q.get(timeout=LONG) for _ in range(3)]
    assert sorted(rest) == ["b", "x", "y"]
    assert rest.index("x") < rest.index("y")


# --- Immediate shutdown and losses ----------------------------------------------------------


def test_immediate_shutdown_discards_items_and_frees_their_producer(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    ctx = multiprocessing.get_context("fork")
    q = opened()
    put_done = ctx.Event()
    with running("fork", _put_large, q, 4, put_done) as child:
        assert put_done.wait(LONG)
        assert q.qsize() == 4
        assert q.get(timeout=LONG) == bytes([0]) * BIG
        child.join(0.5)
        assert child.is_alive(), "expected the producer to wait for its unread items to be sent"
        q.shutdown(immediate=True)
        assert q.qsize() == 0
        with pytest.raises(ShutDown):
            q.get_nowait()
        with pytest.raises(JoinTimeout):
            q.join(timeout=0.3)  # the item got above is not done yet
        q.task_done()
        q.join(timeout=LONG)
        assert q.info()["unfinished"] == 0
    assert child.exitcode == 0, "the producer could not exit: its discarded items stayed unread"


def test_an_item_whose_producer_was_killed_before_sending_it_is_lost_not_hung(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    with running("fork", _put_and_die, q) as child:
        pass
    assert child.exitcode == -signal.SIGKILL
    assert q.qsize() == 2, "the items are counted when put returns"

    def get_torn() -> None:
        with pytest.raises(Empty):
            q.get_nowait()

    call_within(LONG, get_torn, "get_nowait() of an item whose producer died writing it")
    facts = q.info()
    assert (facts["qsize"], facts["frames_voided"]) == (1, 1), facts
    assert facts["unfinished"] == 1, "the torn item is counted done; the unsent one is not"
    start = time.monotonic()

    def get_lost() -> None:
        with pytest.raises(Empty):
            q.get_nowait()

    call_within(LONG, get_lost, "get_nowait() of an item that will never arrive")
    assert time.monotonic() - start < IN_FLIGHT_GRACE / 2, "waited for a dead producer's item"
    assert q.qsize() == 0
    assert q.info()["unfinished"] == 1, "a lost item stays an unfinished task"
    q.put("next")
    assert q.get(timeout=LONG) == "next"


def _put_slowly_then_wait(q: MPQueue[Any], go: Any) -> None:
    send = q._stream.send

    def send_late(payloads: Any) -> None:
        time.sleep(0.5)  # counted in, and still on its way for half a second
        send(payloads)

    q._stream.send = send_late  # type: ignore[method-assign]
    q.put("slow")
    go.wait(LONG)


def test_get_nowait_waits_for_an_item_a_living_producer_is_still_sending(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    go: Any = multiprocessing.get_context("fork").Event()
    with running("fork", _put_slowly_then_wait, q, go):
        end = time.monotonic() + LONG
        while not q.qsize() and time.monotonic() < end:
            time.sleep(0.001)
        start = time.monotonic()
        assert q.get_nowait() == "slow"
        assert time.monotonic() - start > 0.2, "the item was there at once: this tested nothing"
        go.set()


# --- The stream after a kill, and bytes that are not the queue's ----------------------------


def _die_at(call: str, after: bool, q: MPQueue[Any], action: Callable[[], object]) -> None:
    """Run ``action`` and die (SIGKILL) at its first ``os.<call>``: before it or after it
    returns, with the queue's I/O lock held and its note of the call not yet closed."""
    real = getattr(os, call)

    def dying(*args: Any) -> Any:
        if after:
            real(*args)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(os, call, dying)
    action()


@pytest.mark.parametrize(
    ("call", "after", "expect"),
    [
        ("write", False, "lost"),  # counted, never in the pipe: forgotten, no one waits for it
        ("write", True, "got"),  # in the pipe: the repair counts it in
        ("read", False, "lost"),  # claimed by the dead one: its frame is skipped
        ("read", True, "lost"),  # read by the dead one
    ],
)
def test_a_process_killed_inside_a_system_call_on_the_pipe_leaves_it_usable(
    call: str, after: bool, expect: str, opened: Callable[..., MPQueue[Any]]
) -> None:
    q = opened()
    if call == "read":
        q.put("held by the dead")
    action = (lambda: q.put("put by the dead")) if call == "write" else q.get
    with running("fork", _die_at, call, after, q, action) as child:
        pass
    assert child.exitcode == -signal.SIGKILL
    start = time.monotonic()
    if expect == "got":
        assert q.get(timeout=LONG) == "put by the dead"
    elif call == "write":
        with pytest.raises(Empty):
            q.get(timeout=0.2)
        assert time.monotonic() - start < 0.2 + IN_FLIGHT_GRACE / 2, "waited for a dead one"
    q.put("next")
    assert q.get(timeout=LONG) == "next"
    facts = q.info()
    assert facts["stream_repairs"] == 1, facts
    assert (facts["bytes_waiting"], facts["frames_waiting"], facts["qsize"]) == (0, 0, 0), facts


def _claim_half_and_die(q: MPQueue[Any]) -> None:
    stream = q._stream

    def claim(size: int, frames_end: int) -> None:
        # The first steps of a claim, then a death before the frames are counted out.
        s = stream.slots
        s[_mp_stream._READ_END] = s[_mp_stream._R_OFF] + size
        s[_mp_stream._READ_FRAMES] = frames_end
        s[_mp_stream._READER] = os.getpid()
        os.kill(os.getpid(), signal.SIGKILL)

    stream._claim = claim  # type: ignore[method-assign]
    q.get()


def test_a_consumer_killed_half_way_through_claiming_frames_leaves_the_stream_aligned(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    q.put("claimed by the dead")
    with running("fork", _claim_half_and_die, q) as child:
        pass
    assert child.exitcode == -signal.SIGKILL
    q.put_many(["next", "and the next"])
    assert q.get_many(2, timeout=LONG) == ["next", "and the next"]
    facts = q.info()
    assert (facts["reads_skipped"], facts["broken"], facts["frames_waiting"]) == (1, False, 0)


def _read_a_piece_and_die(q: MPQueue[Any]) -> None:
    real = os.read
    reads: list[int] = []

    def read(fd: int, n: int) -> bytes:
        if reads:  # the second piece of the large frame: die between pieces
            os.kill(os.getpid(), signal.SIGKILL)
        reads.append(n)
        return real(fd, n)

    os.read = read
    q.get()


def test_a_consumer_killed_half_way_through_a_large_item_loses_only_that_item(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    q.put(bytes(3 * BIG))  # more than the pipe holds: read in pieces
    q.put("after")
    with running("fork", _read_a_piece_and_die, q) as child:
        pass
    assert child.exitcode == -signal.SIGKILL
    assert q.get(timeout=LONG) == "after"
    assert q.info()["reads_skipped"] == 1


def test_bytes_a_foreign_program_wrote_into_the_pipe_are_raised_and_the_queue_goes_on(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    q.put_many(["a", "b"])
    os.write(q._stream.wfd, b"not a frame of this queue")
    q.put_many(["c", "d"])
    assert q.get_many(2, timeout=LONG) == ["a", "b"]
    with pytest.raises(CorruptMessage, match="not written by this queue") as caught:
        q.get_many(2, timeout=LONG)
    assert caught.value.data == b"not a frame of this queue"
    assert q.qsize() == 0, "c and d were claimed by the get_many that raised; it holds them"
    assert q.get_many(5, timeout=LONG) == ["c", "d"]
    q.put("e")
    assert q.get(timeout=LONG) == "e"
    assert q.info()["foreign_writes"] == 1


def test_bytes_taken_from_the_pipe_behind_the_queue_s_back_break_it_for_good(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    q.put_many(["a", "b"])
    os.read(q._stream.rfd, 3)
    for call in (lambda: q.get(timeout=LONG), lambda: q.get(timeout=LONG), lambda: q.put("c")):
        with pytest.raises(CorruptMessage, match=r"broken.*open a new one"):
            call()


# --- URL, construction, repr ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("mp://?context=bogus", {}, "context"),
        ("mp://", {"context": 42}, "context"),
        ("mp://?nope=1", {}, "nope"),
        ("mp://", {"nope": 1}, "nope"),
        ("mp://?maxsize=lots", {}, "maxsize"),
        ("mp://?serializer=yaml", {}, "serializer"),
        ("mp://somewhere", {}, "mp://"),
        ("mp:///jobs", {}, "mp://"),
        ("mp://user:secret@", {}, "mp://"),
    ],
)
def test_bad_urls_and_options_are_invalid(url: str, options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidURL, match=named) as info:
        queuekit.open(url, **options)
    assert "secret" not in str(info.value)


def test_url_parameters_and_keyword_options(opened: Callable[..., MPQueue[Any]]) -> None:
    q = opened("mp://?maxsize=3&serializer=json&context=spawn", maxsize=5)
    assert q.maxsize == 5
    assert q.info()["serializer"] == "json"
    assert q.info()["context"] == "spawn"
    assert set(q.capabilities.start_methods) == set(START_METHODS)
    with pytest.raises(SerializationError):
        q.put({1, 2})
    q.put((1, "a"))
    assert q.get(timeout=LONG) == [1, "a"]
    with pytest.raises(InvalidURL, match="context"):
        MPQueue(context="bogus")


def test_repr_info_and_close(opened: Callable[..., MPQueue[Any]]) -> None:
    q = opened("mp://?maxsize=4")
    q.put_many([1, 2])
    assert q.get(timeout=LONG) == 1
    assert "mp://" in repr(q)
    assert "maxsize=4" in repr(q)
    assert q.info() == {
        "maxsize": 4,
        "qsize": 1,
        "unfinished": 2,
        "shutdown": False,
        "repairs": 0,
        "serializer": "pickle",
        "context": "any",
        "start_methods": START_METHODS,
        "pipe_capacity": q._stream.capacity,
        "bytes_waiting": 8 + len(pickle.dumps(2)),
        "frames_waiting": 1,
        "stream_repairs": 0,
        "frames_voided": 0,
        "reads_skipped": 0,
        "foreign_writes": 0,
        "broken": False,
    }
    q.close()
    q.close()
    assert "closed" in repr(q)
    for call in (q.info, q.qsize, q.get_nowait, lambda: q.put(3), q.task_done, q.shutdown):
        with pytest.raises(QueueClosed):
            call()


# --- A message that will not load ----------------------------------------------------------


def test_a_batch_with_a_message_that_will_not_load_returns_what_comes_before_it(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened(serializer=Refusing())
    q.put_many([0, 1, "bad", 3])
    q.put(4)
    assert q.get_many(4, timeout=LONG) == [0, 1]
    assert q.qsize() == 1  # the two this handle holds are not in the queue
    with pytest.raises(Refused):
        q.get(timeout=LONG)
    assert q.get_many(5, timeout=LONG) == [3]  # what the handle holds comes first, alone
    assert q.get(timeout=LONG) == 4
    for _ in range(4):
        q.task_done()
    q.join(timeout=0)  # the bad message was counted done by the get that raised


def test_a_batch_whose_first_message_will_not_load_raises_and_holds_the_rest(
    opened: Callable[..., MPQueue[Any]],
) -> None:
    q = opened()
    raw = opened("mp://?serializer=raw")
    raw._shared, raw._stream = q._shared, q._stream  # a handle of the same queue that writes bytes
    raw.put_many([b"not a pickle", pickle.dumps(1)])
    with pytest.raises(SerializationError, match="cannot unpickle"):
        q.get_many(2, timeout=LONG)
    assert q.qsize() == 0
    assert q.get(timeout=LONG) == 1
    q.task_done()
    q.join(timeout=0)
