"""Tier ``lifecycle``: close, context managers, shutdown's aftermath, what a handle declares,
pickling, and what serializers do to items."""

from __future__ import annotations

import math
import multiprocessing
import pickle
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from hypothesis import assume, given
from hypothesis import settings as Settings
from hypothesis import strategies as st

from .._errors import (
    Empty,
    InvalidURL,
    JoinTimeout,
    MessageTooLarge,
    QueueClosed,
    QueueError,
    SerializationError,
    ShutDown,
)
from .._protocol import Capabilities, Queue
from .._serializers import get_serializer
from .._urls import parse_url
from ._blocking import EARLY, TIMEOUT, WAKE, Calls, settled_qsize
from ._checks import (
    CLEANUP,
    FRAMING,
    NotApplicable,
    Target,
    call_with_watchdog,
    check,
)

MiB = 1024 * 1024
LARGEST_TESTED = 32 * MiB
"""A declared max_message_size above this is not checked: the item would be too costly to make."""


def _ops(q: Queue[Any], item: Any) -> list[tuple[str, Callable[[], Any]]]:
    """Every call of the contract, by name, with ordinary and odd arguments."""
    return [
        ("put(item)", partial(q.put, item)),
        ("put(item, block=False)", partial(q.put, item, block=False)),
        ("put(item, timeout=-1)", partial(q.put, item, True, -1)),
        ("put_nowait(item)", partial(q.put_nowait, item)),
        ("put_many([item])", partial(q.put_many, [item])),
        ("put_many([])", partial(q.put_many, [])),
        ("get()", q.get),
        ("get(block=False)", partial(q.get, block=False)),
        ("get(timeout=-1)", partial(q.get, True, -1)),
        ("get_nowait()", q.get_nowait),
        ("get_many(1)", partial(q.get_many, 1)),
        ("get_many(1, block=False)", partial(q.get_many, 1, block=False)),
        ("qsize()", q.qsize),
        ("empty()", q.empty),
        ("full()", q.full),
        ("task_done()", q.task_done),
        ("join()", q.join),
        ("join(timeout=0.1)", partial(q.join, timeout=0.1)),
        ("shutdown()", q.shutdown),
        ("shutdown(immediate=True)", partial(q.shutdown, immediate=True)),
    ]


@check("close-is-idempotent-and-final", tier="lifecycle")
def close_is_idempotent_and_final(target: Target) -> None:
    """close() may be called again; after it every call on the handle raises QueueClosed."""
    # Bounded and holding an item, so that no call could succeed or fail for another reason.
    with target.queue(maxsize=2) as q, Calls(q) as calls:
        q.put(target.item(0), timeout=WAKE)
        call_with_watchdog(q.close, CLEANUP, "close() of a handle holding an item")
        calls.run("close() called a second time", q.close).returned("(close must be idempotent)")
        for name, fn in _ops(q, target.item(1)):
            calls.run(f"{name} on a closed handle", fn).raised(QueueClosed)
        calls.run("close() called after the rest", q.close).returned("(close must be idempotent)")


@check("close-leaves-other-handles", tier="lifecycle")
def close_leaves_other_handles(target: Target) -> None:
    """Closing one handle leaves the queue, its items and its other handles working."""
    with target.queue() as q, Calls(q) as calls:
        try:
            other: Queue[Any] = pickle.loads(pickle.dumps(q))
        except Exception:
            raise NotApplicable(
                "this backend gives no second handle to a queue within one process (its "
                "handles do not pickle here); the cross-process tier covers other processes"
            ) from None
        try:
            q.put(target.item(0), timeout=WAKE)
            call_with_watchdog(other.close, CLEANUP, "close() of a second handle")
            calls.run(
                "put(item) after another handle was closed", partial(q.put, target.item(1))
            ).returned("(closing one handle must leave the queue working for the others)")
            what = "an item, before or after another handle was closed,"
            got = [_get_back(q, what), _get_back(q, what)]
            assert got == [target.item(0), target.item(1)], (
                f"after another handle was closed, the queue gave {got!r}, not the items put "
                f"({[target.item(0), target.item(1)]!r}): close() must leave the queue alone"
            )
            calls.run("put(item) on the closed handle", partial(other.put, target.item(2))).raised(
                QueueClosed
            )
        finally:
            call_with_watchdog(other.close, CLEANUP, "close() of a second handle, again")


class _Boom(Exception):
    pass


@check("context-manager-closes", tier="lifecycle")
def context_manager_closes(target: Target) -> None:
    """`with` gives the handle itself and closes it on exit, also when an exception leaves."""
    for failing in (False, True):
        q = target.open()

        def use(q: Queue[Any] = q, failing: bool = failing) -> None:
            with q as entered:
                assert entered is q, (
                    f"`with queue as q` gave {entered!r}, not the handle itself ({q!r})"
                )
                q.put(target.item(0), timeout=WAKE)
                assert q.get(timeout=WAKE) == target.item(0), "the item put was lost"
                q.shutdown(immediate=True)
                if failing:
                    raise _Boom

        try:
            with Calls(q) as calls:
                try:
                    call_with_watchdog(use, CLEANUP, "a `with` block on a handle (its exit closes)")
                except _Boom:
                    pass
                else:
                    assert not failing, (
                        "an exception raised in a `with queue:` block did not propagate: "
                        "__exit__ must not suppress it"
                    )
                how = "by an exception" if failing else "normally"
                calls.run(
                    f"put(item) after a `with` block left {how}", partial(q.put, target.item(1))
                ).raised(QueueClosed, "(leaving a `with` block must close the handle)")
        finally:
            target.dispose(q)


@check("shutdown-refuses-puts", tier="lifecycle")
def shutdown_refuses_puts(target: Target) -> None:
    """After shutdown() every put raises ShutDown, even on a full queue (ShutDown beats Full)."""
    for maxsize in (1, 0):
        with target.queue(maxsize=maxsize) as q, Calls(q) as calls:
            q.put(target.item(0), timeout=WAKE)
            q.shutdown()
            where = "a full shut-down queue" if maxsize else "a shut-down queue"
            for name, fn in _ops(q, target.item(1))[:6]:
                calls.run(f"{name} on {where}", fn).raised(ShutDown)
            calls.run(
                f"put(item, timeout=0.1) on {where}", partial(q.put, target.item(1), timeout=0.1)
            ).raised(ShutDown)
            got = calls.run("get() of the item left by a graceful shutdown", q.get).returned()
            assert got == target.item(0), (
                f"get() after a graceful shutdown returned {got!r}, not the item left in the "
                f"queue ({target.item(0)!r}): refused puts must not change the queue"
            )


@check("shutdown-drains-then-refuses-gets", tier="lifecycle")
def shutdown_drains_then_refuses_gets(target: Target) -> None:
    """After shutdown() gets return what is left, then raise ShutDown at once (never Empty)."""
    with target.queue() as q, Calls(q) as calls:
        items = [target.item(n) for n in range(3)]
        q.put_many(items, timeout=WAKE)
        q.shutdown()
        calls.run("shutdown() called a second time", q.shutdown).returned()
        got = [calls.run("get() on a shut-down queue with items left", q.get).returned()]
        while len(got) < len(items):
            got += calls.run(
                "get_many(5) on a shut-down queue with items left", partial(q.get_many, 5)
            ).returned()
        assert got == items, f"a shut-down queue was drained as {got!r}, not {items!r}"
        drained: list[tuple[str, Callable[[], Any]]] = [
            ("get(block=False)", partial(q.get, block=False)),
            ("get_nowait()", q.get_nowait),
            ("get()", q.get),
            ("get(timeout=0.1)", partial(q.get, timeout=0.1)),
            ("get(timeout=60)", partial(q.get, timeout=60)),
            ("get_many(2)", partial(q.get_many, 2)),
            ("get_many(2, block=False)", partial(q.get_many, 2, block=False)),
            ("get_many(2, timeout=60)", partial(q.get_many, 2, timeout=60)),
        ]
        for name, fn in drained:
            calls.run(f"{name} on a drained shut-down queue", fn).raised(ShutDown)
        assert settled_qsize(q, 0) == 0, "qsize() of a drained shut-down queue is not 0"


@check("immediate-shutdown-discards", tier="lifecycle")
def immediate_shutdown_discards(target: Target) -> None:
    """shutdown(immediate=True), even after a graceful one, discards what is left and counts it
    as done; items got before still need their task_done()."""
    with target.queue() as q, Calls(q) as calls:
        q.put_many([target.item(n) for n in range(3)], timeout=WAKE)
        assert q.get(timeout=WAKE) == target.item(0), "the first item put did not come out first"
        q.shutdown()
        q.shutdown(immediate=True)
        for name, fn in _ops(q, target.item(9))[6:12]:
            calls.run(f"{name} after shutdown(immediate=True)", fn).raised(ShutDown)
        size = settled_qsize(q, 0)
        assert size == 0, f"qsize() is {size} after shutdown(immediate=True) discarded the items"
        assert q.empty(), "empty() is false after shutdown(immediate=True) discarded the items"
        join = calls.run(
            "join(timeout=0.25) with one item got and not done", partial(q.join, timeout=TIMEOUT)
        )
        join.raised(JoinTimeout, "(the item got before the shutdown is still unfinished)")
        assert join.elapsed >= TIMEOUT - EARLY, f"{join.label} gave up early ({join.elapsed:.3f}s)"
        calls.run("task_done() for the item got before the shutdown", q.task_done).returned()
        calls.run("join() once the item got was done and the rest discarded", q.join).returned(
            "(discarded items count as done)"
        )
        calls.run("a task_done() for a discarded item", q.task_done).raised(
            ValueError, "(discarded items are done already: one more task_done() is a surplus)"
        )
        calls.run(
            "shutdown(immediate=True) called again", partial(q.shutdown, immediate=True)
        ).returned("(calling shutdown again is allowed)")


@check("task-done-after-shutdown", tier="lifecycle")
def task_done_after_shutdown(target: Target) -> None:
    """task_done() keeps working after shutdown(), and a surplus one is still a ValueError."""
    with target.queue() as q, Calls(q) as calls:
        q.put_many([target.item(0), target.item(1)], timeout=WAKE)
        q.get(timeout=WAKE)
        q.get(timeout=WAKE)
        q.shutdown()
        calls.run("task_done() after shutdown()", q.task_done).returned()
        calls.run("join(timeout=0.25) with a task left", partial(q.join, timeout=TIMEOUT)).raised(
            JoinTimeout
        )
        calls.run("the last task_done() after shutdown()", q.task_done).returned()
        calls.run("join() after every task_done()", q.join).returned()
        calls.run("a task_done() more than items put, after shutdown()", q.task_done).raised(
            ValueError
        )


def _capability_problems(caps: Capabilities) -> list[str]:
    methods = {"fork", "spawn", "forkserver", *multiprocessing.get_all_start_methods()}
    problems = []
    if caps.qsize not in ("exact", "approximate"):
        problems.append(f"qsize={caps.qsize!r} is not 'exact' or 'approximate'")
    if caps.ordering not in ("fifo", "per-producer-fifo"):
        problems.append(f"ordering={caps.ordering!r} is not 'fifo' or 'per-producer-fifo'")
    for name in ("cross_process", "cross_host", "durable", "serializes"):
        if not isinstance(getattr(caps, name), bool):
            problems.append(f"{name}={getattr(caps, name)!r} is not a bool")
    if not isinstance(caps.start_methods, tuple) or not set(caps.start_methods) <= methods:
        problems.append(f"start_methods={caps.start_methods!r} is not a tuple of start methods")
    size = caps.max_message_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        problems.append(f"max_message_size={size!r} is not None or a positive number of bytes")
    if caps.cross_host and not caps.cross_process:
        problems.append("cross_host=True without cross_process=True")
    if caps.cross_process and not caps.start_methods:
        problems.append("cross_process=True with no start_methods under which handles travel")
    if (caps.cross_process or caps.durable) and not caps.serializes:
        problems.append("items cross processes (or outlive them) but serializes=False")
    return problems


@check("handle-is-a-queue", tier="lifecycle")
def handle_is_a_queue(target: Target) -> None:
    """A handle is a queuekit.Queue, declares valid Capabilities, and has the maxsize asked for."""
    for maxsize in (0, 1, 7):
        with target.queue(maxsize=maxsize) as q:
            missing = [name for name in dir(Queue) if name[0] != "_" and not hasattr(q, name)]
            assert isinstance(q, Queue), (
                f"{type(q).__name__} is not a queuekit.Queue (missing: {', '.join(missing)})"
            )
            shown = q.maxsize
            assert shown == maxsize or (maxsize == 0 and shown < 0), (  # both mean unbounded
                f"a queue opened with maxsize={maxsize} says maxsize={shown!r}"
            )
            caps = q.capabilities
            assert isinstance(caps, Capabilities), (
                f"capabilities is a {type(caps).__name__}, not a queuekit.Capabilities"
            )
            problems = _capability_problems(caps)
            assert not problems, f"the declared capabilities are invalid: {'; '.join(problems)}"
            assert q.capabilities == caps, "capabilities changed between two reads"


@check("pickling-refused-or-connected", tier="lifecycle")
def pickling_refused_or_connected(target: Target) -> None:
    """A handle that is not for crossing processes refuses pickling with an error, or unpickles
    into a handle of the same queue (never a silently disconnected copy)."""
    if target.capabilities.cross_process:
        raise NotApplicable("handles that cross processes are checked by the cross-process tier")
    with target.queue() as q, Calls(q) as calls:
        try:
            copy: Queue[Any] = pickle.loads(pickle.dumps(q))
        except Exception as exc:
            assert str(exc).strip(), (
                f"pickling a handle failed with a bare {type(exc).__name__}: refuse it with a "
                "message that says why and what to use instead"
            )
            return
        try:
            assert isinstance(copy, Queue), f"an unpickled handle is a {type(copy).__name__}"
            copy.put(target.item(1), timeout=WAKE)
            via_copy = calls.run(
                "get(timeout=3) on the original of an unpickled handle",
                partial(q.get, timeout=WAKE),
                within=2 * WAKE,
            )
            if isinstance(via_copy.error, Empty):
                raise AssertionError(
                    "an item put through an unpickled copy of a handle never reached the "
                    "original: the copy is silently disconnected (refuse pickling instead)"
                )
            assert via_copy.returned() == target.item(1), "the unpickled handle mixed up items"
            q.put(target.item(2), timeout=WAKE)
            got = calls.run(
                "get(timeout=3) on an unpickled handle",
                partial(copy.get, timeout=WAKE),
                within=2 * WAKE,
            ).returned()
            assert got == target.item(2), f"an unpickled handle got {got!r}, not the item put"
        finally:
            call_with_watchdog(copy.close, CLEANUP, "close() of an unpickled handle")


# --- Items through serializers ------------------------------------------------------------

_ODD_TEXT = ["", "\x00", "\u2028\u2029", "\ufeff", "e\u0301", "\U0001d11e", "\U0010ffff", "\\"]
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20) | st.sampled_from(_ODD_TEXT)
_NUMBERS = st.integers() | st.integers(-(2**200), 2**200)
_PICKLABLE = st.recursive(
    st.none() | st.booleans() | _NUMBERS | st.floats(allow_nan=False) | _TEXT | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_TEXT | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)
_JSON = st.recursive(
    st.none() | st.booleans() | _NUMBERS | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)


def _difference(sent: Any, got: Any, where: str = "the item") -> str | None:
    """Where ``got`` differs from ``sent``, in type or value (a bool is no int, -0.0 no 0.0)."""
    if type(sent) is not type(got):
        return f"{where}: sent {sent!r} ({type(sent).__name__}), got {got!r} ({type(got).__name__})"
    if isinstance(sent, (list, tuple)):
        if len(sent) != len(got):
            return f"{where}: sent {len(sent)} elements, got {len(got)}"
        for i, (a, b) in enumerate(zip(sent, got, strict=True)):
            found = _difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(sent, dict):
        if sent.keys() != got.keys():
            return f"{where}: sent keys {sorted(map(repr, sent))}, got {sorted(map(repr, got))}"
        got_keys = {k: k for k in got}
        for k, v in sent.items():
            found = _difference(k, got_keys[k], f"{where} key {k!r}")
            found = found or _difference(v, got[k], f"{where}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(sent, float):
        same = sent == got and math.copysign(1.0, sent) == math.copysign(1.0, got)
    else:
        same = sent == got
    return None if same else f"{where}: sent {sent!r}, got {got!r}"


def _serializer_named(target: Target) -> str:
    """The serializer the target's URL names ("bytes" for any bytes-only one; "" for none)."""
    if isinstance(target.item(0), bytes):
        return "bytes"
    return parse_url(target.url).query.get("serializer", "") if target.url else ""


def _fits(item: Any, limit: int | None, serializer: str) -> bool:
    """Whether ``item``, serialized as ``serializer`` names it (pickle when it names none or
    one of its own), stays within ``limit`` with room for framing."""
    if limit is None:
        return True
    if serializer == "bytes":
        return len(item) <= limit - FRAMING
    try:
        data = get_serializer("json" if serializer == "json" else "pickle").dumps(item)
    except Exception:
        return True  # the backend's own serializer decides; the check reports what it does
    return len(data) <= limit - FRAMING


def _payload(target: Target, size: int, seed: int = 0) -> Any:
    """``size`` bytes (characters for JSON), varied so that a misplaced chunk shows."""
    data = random.Random(seed).randbytes(size)
    return data.hex()[:size] if _serializer_named(target) == "json" else data


def _same_payload(sent: Any, got: Any) -> str | None:
    if type(got) is not type(sent) or len(got) != len(sent):
        kind, length = type(got).__name__, len(got) if hasattr(got, "__len__") else "?"
        return (
            f"a {type(sent).__name__} of length {len(sent)} came back as {kind} of length {length}"
        )
    if got != sent:
        first = next(i for i, (a, b) in enumerate(zip(sent, got, strict=True)) if a != b)
        return f"an item of length {len(sent)} came back changed from offset {first}"
    return None


def _get_back(q: Queue[Any], what: str, timeout: float = WAKE) -> Any:
    try:
        return q.get(timeout=timeout)
    except Empty:
        raise AssertionError(
            f"{what} was put, but get() found nothing within {timeout:g}s"
        ) from None


def _search(test: Callable[[], None]) -> None:
    """Run a Hypothesis test, reporting a failure that did not repeat as the failure itself."""
    try:
        test()
    except Exception as exc:
        inner = getattr(exc, "exceptions", None)  # a flaky failure: several, or unrepeatable
        if inner and isinstance(inner[0], AssertionError):
            raise inner[0] from exc
        raise


# Odd values a derandomized search may not reach; each must come back exactly.
_ODD_VALUES: list[Any] = [
    [-0.0, 0.0, 5e-324, 1e308, float("inf"), float("-inf")],
    [True, 1, False, 0, None, 2**100, -(2**64)],
    ("", "\x00", "\U0010ffff", b"", b"\x00\xff", (), [], {}),
    {"": {1: (None,), "k": [b"v"]}, 7: "\u2028"},
]
_ODD_JSON: list[Any] = [
    [-0.0, 0.0, 5e-324, 1e308, True, 1, False, 0, None, 2**100],
    {"": {"\x00": ["\U0010ffff", "\u2028", {}, []]}},
]


@check("items-round-trip", tier="lifecycle")
def items_round_trip(target: Target) -> None:
    """A serializing backend returns an equal copy of every item (equal in type and value); one
    that hands over references returns the very object put."""
    with target.queue() as q:
        if not q.capabilities.serializes:
            sent: list[Any] = [target.item(1), threading.Lock()]
            q.put(sent, timeout=WAKE)
            q.put_many([sent, sent[1]], timeout=WAKE)
            got = [q.get(timeout=WAKE), *q.get_many(2, timeout=WAKE)]
            while len(got) < 3:
                got += q.get_many(3 - len(got), timeout=WAKE)
            assert got[0] is sent and got[1] is sent and got[2] is sent[1], (
                "a backend declaring serializes=False returned copies, not the objects put"
            )
            return
        name = _serializer_named(target)
        values = {"bytes": st.binary(), "json": _JSON}.get(name, _PICKLABLE)
        if name not in ("bytes", "json"):
            mutable = [target.item(1)]
            q.put(mutable, timeout=WAKE)
            copied = q.get(timeout=WAKE)
            assert copied == mutable and copied is not mutable, (
                "a backend declaring serializes=True returned the very object put, not a copy"
            )

        if name == "json":
            odd = _ODD_JSON
        elif name == "bytes":
            odd = [b"", b"\x00", bytes(range(256))]
        else:
            odd = _ODD_VALUES
        limit = q.capabilities.max_message_size
        for item in [item for item in odd if _fits(item, limit, name)]:
            q.put(item, timeout=WAKE)
            found = _difference(item, _get_back(q, f"{item!r}"))
            assert found is None, f"an item came back changed from put to get: {found}"

        @Settings(target.settings)
        @given(values)
        def survives(item: Any) -> None:
            assume(_fits(item, limit, name))
            q.put(item, timeout=WAKE)
            found = _difference(item, _get_back(q, "an item"))
            assert found is None, f"an item came back changed from put to get: {found}"

        _search(survives)


@check("large-items-intact", tier="lifecycle")
def large_items_intact(target: Target) -> None:
    """Items of up to a few MiB come back intact and in order (within max_message_size)."""
    limit = target.capabilities.max_message_size
    sizes = [1, 64 * 1024 - 1, 64 * 1024 + 7, MiB, 3 * MiB + 5]
    if limit is not None:
        sizes = [n for n in sizes if n <= limit - 1024]
        if limit <= 4 * MiB:  # near the declared limit: it must really take it
            sizes.append(limit - (4096 if limit > 8192 else FRAMING))
    sizes = sorted(n for n in sizes if n > 0)
    with target.queue() as q:
        for n, size in enumerate(sizes):
            sent = _payload(target, size, n)
            try:
                q.put(sent, timeout=10)
            except Exception as exc:
                raise AssertionError(
                    f"put of an item of {size} (max_message_size={limit}) raised {exc!r}"
                ) from exc
            problem = _same_payload(sent, _get_back(q, f"an item of {size}", 10))
            assert problem is None, f"a large item did not survive put/get: {problem}"
        # The largest two that fit one call together: a batch, too, must stay within the limit.
        pairs = [
            (a, b)
            for i, a in enumerate(sizes)
            for b in sizes[i + 1 :]
            if limit is None or a + b <= limit - 2 * FRAMING
        ]
        pair_sizes = max(pairs, key=sum) if pairs else (1, 1)
        pair = [_payload(target, size, 100 + n) for n, size in enumerate(pair_sizes)]
        q.put_many(pair, timeout=10)
        for sent in pair:
            problem = _same_payload(sent, _get_back(q, f"an item of {len(sent)}", 10))
            assert problem is None, f"of two large items put together, {problem}"


class _Unserializable:
    """No serializer can encode it: it refuses pickling, and it is neither JSON nor bytes."""

    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be serialized, on purpose")


@check("unserializable-item-refused", tier="lifecycle")
def unserializable_item_refused(target: Target) -> None:
    """put of an item that cannot be serialized raises SerializationError and changes nothing."""
    with target.queue() as q, Calls(q) as calls:
        if not q.capabilities.serializes:
            raise NotApplicable("items are handed over by reference: nothing is serialized")
        before, after = target.item(0), target.item(1)
        q.put(before, timeout=WAKE)
        bad: list[tuple[str, Any]] = [
            ("a lambda", lambda: None),
            ("a threading.Lock", threading.Lock()),
            ("an object that refuses pickling", _Unserializable()),
        ]
        for what, item in bad:
            calls.run(f"put of {what}", partial(q.put, item)).raised(SerializationError)
            calls.run(f"put_nowait of {what}", partial(q.put_nowait, item)).raised(
                SerializationError
            )
        size = settled_qsize(q, 1)
        assert size == 1, f"puts refused for serialization changed the queue: qsize {size}, not 1"
        q.put(after, timeout=WAKE)
        got = [q.get(timeout=WAKE), q.get(timeout=WAKE)]
        assert got == [before, after], (
            f"after puts refused for serialization the queue gave {got!r}, not {[before, after]!r}"
        )


@check("serializer-options", tier="lifecycle")
def serializer_options(target: Target) -> None:
    """serializer="json" takes JSON values and refuses others; serializer="raw" takes bytes."""
    offered = []
    try:
        with target.queue(serializer="json") as q:
            offered.append("json")
            assert q.capabilities.serializes, (
                "with serializer=json, capabilities say no serializing"
            )
            refused = {target.item(1), target.item(2)}
            try:
                q.put(refused, timeout=WAKE)
            except SerializationError:
                pass
            else:
                raise AssertionError("serializer=json took a set, which is no JSON value")

            limit = q.capabilities.max_message_size
            for item in [item for item in _ODD_JSON if _fits(item, limit, "json")]:
                q.put(item, timeout=WAKE)
                found = _difference(item, _get_back(q, "a JSON value"))
                assert found is None, f"a JSON value came back changed (serializer=json): {found}"

            @Settings(target.settings)
            @given(_JSON)
            def survives(item: Any) -> None:
                assume(_fits(item, limit, "json"))
                q.put(item, timeout=WAKE)
                found = _difference(item, _get_back(q, "a JSON value"))
                assert found is None, f"a JSON value came back changed (serializer=json): {found}"

            _search(survives)
    except InvalidURL:
        pass
    try:
        with target.queue(serializer="raw") as q:
            offered.append("raw")
            # Raw bytes are their own serialized form: one of exactly max_message_size fits.
            limit = q.capabilities.max_message_size
            sizes = [0, 300 * 256] + ([limit] if limit and limit <= LARGEST_TESTED else [])
            samples = [b"\x00\xff raw \n"] + [
                (bytes(range(256)) * (size // 256 + 1))[:size]
                for size in sizes
                if limit is None or size <= limit
            ]
            for data in samples:
                q.put(data, timeout=WAKE)
                problem = _same_payload(data, _get_back(q, f"{len(data)} bytes"))
                assert problem is None, f"serializer=raw: bytes did not survive: {problem}"
            try:
                q.put("text", timeout=WAKE)
            except SerializationError:
                pass
            else:
                raise AssertionError("serializer=raw took a str; it must take only bytes")
    except InvalidURL:
        pass
    if not offered:
        raise NotApplicable("the backend offers no serializer= option")


@check("message-too-large-refused", tier="lifecycle")
def message_too_large_refused(target: Target) -> None:
    """An item larger than the declared max_message_size raises MessageTooLarge at once and
    changes nothing."""
    limit = target.capabilities.max_message_size
    if limit is None:
        raise NotApplicable("the backend declares no max_message_size")
    if limit > LARGEST_TESTED:
        raise NotApplicable(f"max_message_size={limit} is too large to make an item beyond it")
    with target.queue() as q, Calls(q) as calls:
        q.put(target.item(0), timeout=WAKE)
        huge = _payload(target, limit + 1)
        calls.run(
            f"put of an item of {limit + 1} (max_message_size={limit})", partial(q.put, huge)
        ).raised(MessageTooLarge)
        calls.run(
            "put_many of one item beyond max_message_size",
            partial(q.put_many, [target.item(1), huge]),
        ).raised(MessageTooLarge)
        size = settled_qsize(q, 1)
        assert size == 1, f"a put refused as too large changed the queue: qsize {size}, not 1"
        assert q.get(timeout=WAKE) == target.item(0), "the item put before a refused one was lost"
        calls.run(
            "get(timeout=0.25) after puts refused as too large", partial(q.get, timeout=TIMEOUT)
        ).raised(Empty)


# --- A message that will not load ---------------------------------------------------------


class RefusedToLoad(Exception):
    """What the serializer of ``bad-message-done-and-skipped`` raises for the marked item: no
    queuekit error, as a third party's ``loads`` may raise anything."""


BAD = "queuekit: a message the serializer refuses to load"


class _Refusing:
    """Pickles every item and refuses to load ``BAD`` (module-level, so it pickles)."""

    name = "queuekit-refusing"

    def dumps(self, item: Any) -> bytes:
        return pickle.dumps(item, protocol=5)

    def loads(self, data: bytes) -> Any:
        item = pickle.loads(data)
        if item == BAD:
            raise RefusedToLoad("the check's serializer refuses to load this message, on purpose")
        return item


@contextmanager
def _refusing_queue(target: Target) -> Iterator[Queue[Any]]:
    if not target.capabilities.serializes:
        raise NotApplicable("items are handed over by reference: nothing is loaded")
    try:
        q = target.open(serializer=_Refusing())
    except (InvalidURL, TypeError, ValueError) as exc:
        raise NotApplicable(f"the backend takes no serializer object ({exc})") from exc
    with target.disposing(q):
        yield q


def _refused(call: Any) -> None:
    """``call`` raised the serializer's error (or a queuekit error raised from it, as a
    backend that quarantines the message may)."""
    error = call.error
    if isinstance(error, RefusedToLoad):
        return
    if isinstance(error, QueueError) and isinstance(error.__cause__, RefusedToLoad):
        return
    raise AssertionError(
        f"{call.label} {call.outcome()} instead of raising the serializer's error "
        "(RefusedToLoad, or a queuekit error raised from it)"
    ) from error


_DONE = (
    "(a message that will not load counts as a task done: its get raised, so there was no item "
    "to call task_done() for)"
)


@check("bad-message-done-and-skipped", tier="lifecycle")
def bad_message_done_and_skipped(target: Target) -> None:
    """A message the serializer will not load: get() raises its error and counts it done, the
    next get serves the next one; get_many returns the items before it and leaves it, and
    those after it, to the next gets, in order."""
    with _refusing_queue(target) as q, Calls(q) as calls:
        q.put_many([0, 1, BAD, 3, 4], timeout=WAKE)
        got = calls.run(
            "get_many(5) of [0, 1, BAD, 3, 4]", partial(q.get_many, 5, timeout=WAKE)
        ).returned("(a get_many stops before the first message that will not load)")
        assert got == [0, 1], (
            f"get_many(5) of [0, 1, BAD, 3, 4] returned {got!r}, not [0, 1]: it behaves as up to "
            "5 gets that stop before the first that would raise"
        )
        _refused(calls.run("get() after get_many returned [0, 1]", partial(q.get, timeout=WAKE)))
        rest: list[Any] = []
        while len(rest) < 2:
            rest += calls.run(
                "get_many() of what followed the message that would not load",
                partial(q.get_many, 2 - len(rest), timeout=WAKE),
            ).returned("(the messages after a bad one must wait for the next gets)")
        assert rest == [3, 4], f"after the bad message the queue gave {rest!r}, not [3, 4]"
        for n in range(4):
            calls.run(f"task_done() {n + 1} of 4, for the items got", q.task_done).returned()
        calls.run(
            "join(timeout=3) after 4 task_done() for 5 items put",
            partial(q.join, timeout=WAKE),
            within=2 * WAKE,
        ).returned(_DONE)
        size = settled_qsize(q, 0)
        assert size == 0, f"qsize() is {size} once every message was got"

    with _refusing_queue(target) as q, Calls(q) as calls:
        q.put(BAD, timeout=WAKE)
        _refused(
            calls.run("get() of a lone message that will not load", partial(q.get, timeout=WAKE))
        )
        calls.run(
            "join(timeout=3) with no task_done() after that get",
            partial(q.join, timeout=WAKE),
            within=2 * WAKE,
        ).returned(_DONE)

    with _refusing_queue(target) as q, Calls(q) as calls:
        q.put_many([BAD, 5, 6], timeout=WAKE)
        _refused(calls.run("get_many(3) of [BAD, 5, 6]", partial(q.get_many, 3, timeout=WAKE)))
        after = [calls.run("get() after that get_many", partial(q.get, timeout=WAKE)).returned()]
        after += calls.run(
            "get_many(5) after that get_many and a get", partial(q.get_many, 5, timeout=WAKE)
        ).returned()
        assert after == [5, 6], (
            f"after a get_many whose first message would not load the queue gave {after!r}, "
            "not [5, 6]: the messages taken after the bad one must wait for the next gets"
        )
        q.task_done()
        q.task_done()
        calls.run(
            "join(timeout=3) after 2 task_done()", partial(q.join, timeout=WAKE), within=2 * WAKE
        ).returned(_DONE)
