"""What the cross-process checks' child processes run.

Only the standard library and queuekit's core here: a spawned child imports this module by
name, and should start fast. Each worker takes its end of a ``Pipe`` first, and the queue
handle (passed by the parent as a ``Process`` argument) next. A worker talks to the parent in
tuples: ``("ready",)``, ``("holding",)``, ``("put",)`` along the way, then ``("done", result)``
or ``("error", type, message, traceback)``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import traceback
import zlib
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from .._errors import Empty, Full, ShutDown

__all__ = [
    "FORMS",
    "Record",
    "consumer",
    "filler",
    "holder",
    "make_item",
    "parse_item",
    "payload",
    "producer",
    "record",
    "stop_marker",
    "task_worker",
    "turn_taker",
    "wait_blocked",
]

Record = tuple[int, int, int, int]
"""What a consumer reports of an item: (producer, seq, payload length, payload CRC-32)."""

# Items take whichever form the backend's serializer carries: a tuple (pickle), bytes (raw) or
# a list with text (json, which has no bytes and turns tuples into lists).
FORMS = ("tuple", "bytes", "list")

_BYTES = bytes(range(256))


def payload(producer: int, seq: int, size: int) -> bytes:
    """``size`` bytes of every value, rotated per item, so a mixed-up payload shows."""
    turn = (producer * 131 + seq * 17) % 256
    pattern = _BYTES[turn:] + _BYTES[:turn]
    return (pattern * (size // 256 + 1))[:size]


def record(producer: int, seq: int, data: bytes) -> Record:
    return (producer, seq, len(data), zlib.crc32(data))


def make_item(form: str, producer: int, seq: int, size: int) -> Any:
    data = payload(producer, seq, size)
    if form == "bytes":
        return b"%d:%d:" % (producer, seq) + data
    if form == "list":
        return [producer, seq, data.decode("latin-1")]
    return (producer, seq, data)


def stop_marker(form: str) -> Any:
    text = "queuekit-conformance: stop"
    return text.encode() if form == "bytes" else text


def parse_item(form: str, item: Any) -> Record:
    """The record of an item a producer made; ``ValueError`` for anything else."""
    try:
        if form == "bytes":
            head_p, head_s, data = item.split(b":", 2)
            return record(int(head_p), int(head_s), bytes(data))
        producer, seq, data = item
        if form == "list":
            data = data.encode("latin-1")
        if isinstance(producer, int) and isinstance(seq, int) and isinstance(data, bytes):
            return record(producer, seq, data)
    except (TypeError, ValueError, AttributeError):
        pass
    raise ValueError(f"got an item that no producer put: {item!r:.120}")


def _reporting(body: Callable[..., Any]) -> Callable[..., None]:
    """Run ``body(conn, ...)`` and send its result, or the exception it raised, to the parent."""

    @functools.wraps(body)
    def run(conn: Connection, *args: Any) -> None:
        try:
            try:
                result = body(conn, *args)
            except BaseException as exc:
                text = str(exc) or "(no message)"
                conn.send(("error", type(exc).__name__, text, traceback.format_exc()))
            else:
                conn.send(("done", result))
        except (BrokenPipeError, EOFError, OSError):
            pass  # the parent gave up on us already
        finally:
            conn.close()

    return run


@contextlib.contextmanager
def _must_wait(call: str) -> Iterator[None]:
    """Blocking calls without a timeout wait: ``Empty`` or ``Full`` from one is a bug."""
    try:
        yield
    except (Empty, Full) as exc:
        raise AssertionError(
            f"{call} with block=True and no timeout raised {type(exc).__name__}: it must wait"
        ) from None


def _await(conn: Connection, word: str, patience: float) -> None:
    if not conn.poll(patience):
        raise TimeoutError(f"the parent did not say {word!r} within {patience:g}s")
    message = conn.recv()
    if message != (word,):
        raise ValueError(f"expected {word!r} from the parent, got {message!r}")


@_reporting
def producer(
    conn: Connection,
    q: Any,
    producer_id: int,
    plan: Sequence[tuple[bool, Sequence[int]]],
    form: str,
) -> int:
    """Put this producer's items, seq 0, 1, ..., in ``plan``'s steps: (batch?, payload sizes)."""
    seqs = itertools.count()
    for batch, sizes in plan:
        items = [make_item(form, producer_id, next(seqs), size) for size in sizes]
        with _must_wait("put_many()" if batch else "put()"):
            if batch:
                q.put_many(items)
            else:
                q.put(items[0])
    return next(seqs)


@_reporting
def consumer(
    conn: Connection, q: Any, pattern: Sequence[int], done: Any, form: str
) -> list[Record]:
    """Get items until the stop marker, cycling through ``pattern`` (0: ``get()``, n:
    ``get_many(n)``); count each item in ``done`` before its ``task_done()``."""
    stop = stop_marker(form)
    got: list[Record] = []
    for max_items in itertools.cycle(pattern):
        with _must_wait(f"get_many({max_items})" if max_items else "get()"):
            batch = q.get_many(max_items) if max_items else [q.get()]
        stops = 0
        for item in batch:
            if item == stop:
                stops += 1
            else:
                got.append(parse_item(form, item))
                with done.get_lock():
                    done.value += 1
            q.task_done()
        if stops:
            # One marker per consumer: hand back any extra a batch took for the others.
            if stops > 1:
                q.put_many([stop] * (stops - 1))
            return got
    raise ValueError("a consumer needs a non-empty pattern of get sizes")


@_reporting
def wait_blocked(conn: Connection, q: Any, operation: str, item: Any) -> str:
    """Block in ``get()`` (or ``put(item)``) and tell how it ended: "ShutDown" or "returned"."""
    conn.send(("ready",))
    try:
        with _must_wait(f"{operation}()"):
            if operation == "get":
                got = q.get()
                return f"returned {got!r:.80}"
            q.put(item)
            return "returned"
    except ShutDown:
        return "ShutDown"


@_reporting
def task_worker(conn: Connection, q: Any, count: int, done: Any) -> int:
    """Get ``count`` items, counting each in ``done`` before its ``task_done()``."""
    for _ in range(count):
        with _must_wait("get()"):
            q.get()
        with done.get_lock():
            done.value += 1
        q.task_done()
    return count


@_reporting
def holder(conn: Connection, q: Any, patience: float) -> None:
    """On "go", get one item and hold it until "release", then ``task_done()`` it."""
    _await(conn, "go", patience)
    q.get(timeout=patience)
    conn.send(("holding",))
    _await(conn, "release", patience)
    q.task_done()


@_reporting
def filler(conn: Connection, q: Any, items: Sequence[Any], patience: float) -> list[Any]:
    """Put ``items``; on "drain", get as many back (with ``task_done()``) and return them."""
    for item in items:
        q.put(item, timeout=patience)
    conn.send(("put",))
    _await(conn, "drain", patience)
    got = []
    for _ in items:
        got.append(q.get(timeout=patience))
        q.task_done()
    return got


@_reporting
def turn_taker(conn: Connection, q: Any, patience: float) -> int:
    """On each ``("put", items)``, put them (one ``put_many`` for several) and say
    ``("put",)``; on ``("stop",)``, return how many turns it took."""
    turns = 0
    while True:
        if not conn.poll(patience):
            raise TimeoutError(f"the parent said nothing for {patience:g}s")
        message = conn.recv()
        if message == ("stop",):
            return turns
        _, items = message
        if len(items) == 1:
            q.put(items[0], timeout=patience)
        else:
            q.put_many(items, timeout=patience)
        turns += 1
        conn.send(("put",))
