"""What a handle holds after a get_many met a message that would not load, on the backends that
keep the rest in the handle rather than at the front of the queue: mp:// and pipe://.

The rule is the conformance suite's (bad-message-done-and-skipped); these tests cover what the
suite cannot reach from one handle: giving back on close, an immediate shutdown, a forked copy.
shm:// holds the same way and has its own tests in test_shm_backend.py.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
from refusing import Refused, Refusing

import queuekit
from queuekit import QueueClosed

FORK: Any = multiprocessing.get_context("fork")  # BaseContext does not declare Process
LONG = 20.0

pytestmark = pytest.mark.parametrize("scheme", ["mp", "pipe"])


@pytest.fixture
def opened(scheme: str) -> Iterator[Callable[..., Any]]:
    """Opens queues of ``scheme`` with a serializer that refuses the item "bad", and ends them
    after the test (shut down first, so close cannot wait)."""
    queues: list[Any] = []

    def open_queue(query: str = "") -> Any:
        q = queuekit.open(f"{scheme}://{query}", serializer=Refusing())
        queues.append(q)
        return q

    yield open_queue
    for q in queues:
        with contextlib.suppress(Exception):
            q.shutdown(immediate=True)
        with contextlib.suppress(Exception):
            q.close()


def _take_then_close(q: Any, go: Any, conn: Connection) -> None:
    conn.send(q.get_many(10, timeout=LONG))
    go.wait(LONG)
    q.close()  # gives back what it holds
    conn.send("closed")


def test_close_gives_back_what_the_handle_holds_at_the_back_of_the_queue(
    opened: Callable[..., Any],
) -> None:
    q = opened()
    q.put_many([0, "bad", 2, 3])
    go = FORK.Event()
    parent_end, child_end = FORK.Pipe()
    child = FORK.Process(target=_take_then_close, args=(q, go, child_end))
    child.start()
    assert parent_end.recv() == [0]
    q.put(9)
    go.set()
    assert parent_end.recv() == "closed"
    child.join(LONG)
    assert child.exitcode == 0
    assert q.qsize() == 4
    assert q.get(timeout=LONG) == 9
    with pytest.raises(Refused):
        q.get(timeout=LONG)
    assert q.get_many(5, timeout=LONG) == [2, 3]
    for _ in range(4):
        q.task_done()
    q.join(timeout=0)


@pytest.mark.parametrize("why", ["full", "shut down"])
def test_close_that_cannot_give_back_says_so_and_leaves_the_handle_open(
    why: str, opened: Callable[..., Any]
) -> None:
    q = opened("?maxsize=3")
    q.put_many([0, "bad", 2])
    assert q.get_many(3, timeout=LONG) == [0]
    if why == "full":
        q.put_many([7, 8, 9])
    else:
        q.shutdown()
    with pytest.raises(queuekit.QueueError, match=r"holds 2 items.*get them first"):
        q.close()
    with pytest.raises(Refused):
        q.get(timeout=LONG)
    assert q.get(timeout=LONG) == 2
    if why == "full":
        assert q.get_many(5, timeout=LONG) == [7, 8, 9]
    q.close()
    with pytest.raises(QueueClosed):
        q.get(timeout=LONG)


def test_an_immediate_shutdown_drops_what_the_handle_holds_as_done(
    opened: Callable[..., Any],
) -> None:
    q = opened()
    q.put_many([0, "bad", 2, 3])
    assert q.get_many(4, timeout=LONG) == [0]
    q.shutdown(immediate=True)
    with pytest.raises(queuekit.ShutDown):
        q.get(timeout=LONG)
    q.task_done()  # for 0
    q.join(timeout=0)
    with pytest.raises(ValueError, match="more times"):
        q.task_done()


def _try_to_get(q: Any, conn: Connection) -> None:
    try:
        conn.send(q.get_many(5, block=False))
    except queue.Empty:
        conn.send("empty")


def test_a_forked_child_s_copy_of_a_handle_holds_nothing(opened: Callable[..., Any]) -> None:
    q = opened()
    q.put_many([0, "bad", 2])
    assert q.get_many(3, timeout=LONG) == [0]
    parent_end, child_end = FORK.Pipe()
    child = FORK.Process(target=_try_to_get, args=(q, child_end))
    child.start()
    assert parent_end.recv() == "empty"  # the parent's held payloads are the parent's
    child.join(LONG)
    assert child.exitcode == 0
    with pytest.raises(Refused):
        q.get(timeout=LONG)
    assert q.get(timeout=LONG) == 2
