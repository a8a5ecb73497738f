"""queuekit's errors: caught by the standard exceptions callers already handle, and helpful."""

from __future__ import annotations

import importlib
import queue
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import queuekit
from queuekit import _errors

URLS = ["memory://"]
try:
    importlib.import_module("queuekit.backends.mp")
except ImportError:  # written concurrently; the memory backend still pins the contract down
    pass
else:
    URLS.append("mp://")


@pytest.fixture(params=URLS)
def url(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _open(url: str, **options: Any) -> queuekit.Queue[Any]:
    return queuekit.open(url, **options)


@pytest.fixture
def bounded(url: str) -> Iterator[queuekit.Queue[Any]]:
    q = _open(url, maxsize=1)
    yield q
    q.shutdown(immediate=True)
    q.close()


def test_stdlib_empty_catches_get_nowait(bounded: queuekit.Queue[Any]) -> None:
    with pytest.raises(queue.Empty):
        bounded.get_nowait()
    with pytest.raises(queue.Empty):
        bounded.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        bounded.get_many(3, block=False)


def test_stdlib_full_catches_put_nowait(bounded: queuekit.Queue[Any]) -> None:
    bounded.put_nowait("only room for one")
    with pytest.raises(queue.Full):
        bounded.put_nowait("one too many")
    with pytest.raises(queue.Full):
        bounded.put("one too many", timeout=0.01)
    with pytest.raises(queue.Full):
        bounded.put_many(["one too many"], block=False)
    assert bounded.get_nowait() == "only room for one"


def test_except_clauses_written_for_the_stdlib_work(bounded: queuekit.Queue[Any]) -> None:
    """The idiom of code written against queue.Queue, unchanged."""
    got: list[object] = []
    for item in ("a", "b"):
        try:
            bounded.put_nowait(item)
        except queue.Full:
            got.append("full")
    for _ in range(2):
        try:
            got.append(bounded.get_nowait())
        except queue.Empty:
            got.append("empty")
    assert got == ["full", "a", "empty"]


@pytest.mark.skipif(sys.version_info < (3, 13), reason="queue.ShutDown exists from 3.13")
def test_stdlib_shutdown_catches_shutdown(bounded: queuekit.Queue[Any]) -> None:
    assert issubclass(queuekit.ShutDown, queue.ShutDown)  # type: ignore[attr-defined,unused-ignore]
    bounded.shutdown()
    with pytest.raises(queue.ShutDown):  # type: ignore[attr-defined,unused-ignore]
        bounded.put_nowait(1)
    with pytest.raises(queue.ShutDown):  # type: ignore[attr-defined,unused-ignore]
        bounded.get_nowait()


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="before 3.13 queue has no ShutDown")
def test_shutdown_stands_alone_before_3_13(bounded: queuekit.Queue[Any]) -> None:
    assert not hasattr(queue, "ShutDown")
    assert queuekit.ShutDown.__mro__[1:] == (queuekit.QueueError, Exception, BaseException, object)
    bounded.shutdown()
    with pytest.raises(queuekit.ShutDown):
        bounded.get_nowait()


def test_closed_handle_raises_queue_closed_and_says_what_to_do(url: str) -> None:
    q = _open(url)
    q.close()
    q.close()  # idempotent
    for call in (lambda: q.put(1), q.get_nowait, q.qsize, lambda: q.join(0), q.shutdown):
        with pytest.raises(queuekit.QueueClosed, match="open the queue again") as info:
            call()
        assert isinstance(info.value, ValueError)


def test_join_timeout_is_a_timeout_error_with_the_count(url: str) -> None:
    with _open(url) as q:
        q.put_many([1, 2])
        with pytest.raises(TimeoutError, match="2 unfinished tasks") as info:
            q.join(timeout=0.01)
        assert isinstance(info.value, queuekit.JoinTimeout)


def test_batch_that_can_never_fit_says_to_split_it(url: str) -> None:
    with _open(url, maxsize=2) as q, pytest.raises(ValueError, match="split it"):
        q.put_many([1, 2, 3])


def test_too_many_task_done_is_a_value_error(url: str) -> None:
    with _open(url) as q, pytest.raises(ValueError, match="more times than there were items"):
        q.task_done()


def test_unpicklable_item_is_a_serialization_error_with_advice(url: str) -> None:
    with _open(url, serializer="pickle") as q:
        with pytest.raises(queuekit.SerializationError, match="choose another serializer="):
            q.put(lambda: None)
        assert q.qsize() == 0


def test_invalid_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="accepted: maxsize") as info:
        queuekit.open("memory://?bogus=1")
    assert isinstance(info.value, queuekit.InvalidURL)


def test_unknown_backend_is_an_invalid_url_and_a_value_error() -> None:
    with pytest.raises(ValueError, match="register_backend") as info:
        queuekit.open("nosuch://")
    assert isinstance(info.value, queuekit.UnknownBackend)
    assert isinstance(info.value, queuekit.InvalidURL)


@pytest.mark.parametrize(
    ("error", "standard"),
    [
        (queuekit.Empty, queue.Empty),
        (queuekit.Full, queue.Full),
        (queuekit.QueueClosed, ValueError),
        (queuekit.JoinTimeout, TimeoutError),
        (queuekit.InvalidURL, ValueError),
        (queuekit.UnknownBackend, queuekit.InvalidURL),
        (queuekit.MessageTooLarge, ValueError),
        (queuekit.BackendUnavailable, ConnectionError),
    ],
)
def test_each_error_derives_from_the_standard_one(error: type, standard: type) -> None:
    assert issubclass(error, standard)


def test_every_error_is_a_queue_error() -> None:
    names = _errors.__all__
    assert len(names) >= 11
    for name in names:
        error = getattr(queuekit, name)
        assert issubclass(error, queuekit.QueueError), name
        assert error.__doc__, f"{name} has no docstring saying when it is raised"


def test_queue_error_catches_every_failure_of_a_queue(url: str) -> None:
    with _open(url, maxsize=1) as q:
        q.put(1)
        for fail in (lambda: q.put_nowait(2), lambda: q.join(0)):
            with pytest.raises(queuekit.QueueError):
                fail()
        q.get()
        with pytest.raises(queuekit.QueueError):
            q.get_nowait()
        q.shutdown()
        with pytest.raises(queuekit.QueueError):
            q.put(3)
