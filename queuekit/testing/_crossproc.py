"""Tier ``cross-process``: one queue, used from child processes under each start method.

The parent opens the queue and hands the handle to each child as a ``Process`` argument (the
contract: handles travel). Children report back through a stdlib ``Pipe``, never through the
queue under test, and run the functions in :mod:`._workers`. Every child is joined with a
deadline and killed when it overruns, so a backend that loses items, or whose calls do not
reach other processes, fails the property by name instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from hypothesis import Phase, example, given
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from .._errors import Empty, Full, JoinTimeout, SerializationError
from .._protocol import Queue
from . import _workers
from ._checks import NotApplicable, Target, call_with_watchdog, check

# Generous, because CI machines are slow and shared: a correct backend never comes close, and a
# broken one only costs this long before its check fails.
PATIENCE = 20.0
"""How long one phase (producing, consuming, joining) may take before a child counts as stuck."""
WAKE = 10.0
"""How long a ``shutdown()`` in the parent may take to reach a child blocked in another call."""
EXIT = 10.0
"""How long a child that has reported may take to exit."""
SETTLE = 2.0
"""How long an approximate ``qsize()`` may lag (the contract's second, plus slack)."""
BLOCK_IN = 0.5
"""How long a child that is about to block is given to get there before the parent acts."""

_START_METHODS = ("fork", "spawn", "forkserver")


# --- Children ---------------------------------------------------------------------------


@dataclass
class _Child:
    role: str
    process: BaseProcess
    conn: Connection
    inbox: list[tuple[Any, ...]] = field(default_factory=list)
    gone: bool = False
    finished: bool = False


class _Family:
    """The children of one scenario, and the parent's side of their pipes."""

    def __init__(self, method: str) -> None:
        self.method = method
        # Any: for a method named at run time the stubs give a BaseContext, without Process.
        self.ctx: Any = multiprocessing.get_context(method)
        self.children: list[_Child] = []

    def fail(self, text: str) -> AssertionError:
        return AssertionError(f"under {self.method}: {text}")

    def spawn(self, role: str, func: Callable[..., None], *args: Any) -> _Child:
        # One pipe per child, made just before it starts, so no other child inherits its
        # writing end and a child that dies shows as end-of-file at once.
        parent_end, child_end = self.ctx.Pipe()
        process = self.ctx.Process(
            target=func, args=(child_end, *args), name=f"queuekit {role}", daemon=True
        )
        try:
            process.start()
        except Exception as exc:
            parent_end.close()
            raise self.fail(
                f"could not start a {role} process with the queue handle as an argument "
                f"({type(exc).__name__}: {exc}); a cross-process handle must travel to a child "
                "as a Process argument"
            ) from exc
        finally:
            child_end.close()
        child = _Child(role, process, parent_end)
        self.children.append(child)
        return child

    def _pump(self, child: _Child) -> None:
        if child.gone:
            return
        try:
            while child.conn.poll():
                child.inbox.append(child.conn.recv())
        except (EOFError, OSError):
            child.gone = True

    def _failure(self, child: _Child) -> AssertionError | None:
        for message in child.inbox:
            if message[0] == "error":
                _, kind, text, trace = message
                return self.fail(f"the {child.role} process raised {kind}: {text}\n{trace}")
        if child.gone and not child.finished and not child.inbox:
            child.process.join(1.0)
            return self.fail(
                f"the {child.role} process exited (exit code {child.process.exitcode}) without "
                "reporting: it crashed or was killed inside a queue call"
            )
        return None

    def check_all(self) -> None:
        """Raise what any child reported failing, or the death of one that had not finished."""
        for child in self.children:
            if not child.finished:
                self._pump(child)
                failure = self._failure(child)
                if failure is not None:
                    raise failure

    def _next(self, child: _Child) -> tuple[Any, ...] | None:
        self._pump(child)
        failure = self._failure(child)
        if failure is not None:
            raise failure
        if not child.inbox:
            return None
        message = child.inbox.pop(0)
        child.finished = message[0] == "done"
        return message

    def gather(
        self,
        children: Sequence[_Child],
        kind: str,
        timeout: float,
        stuck: str,
        tick: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Each child's next message, which must be ``kind``; its payload (or None). Any
        child of the family that fails meanwhile fails the check at once."""
        end = time.monotonic() + timeout
        results: dict[int, Any] = {}
        while True:
            self.check_all()
            for i, child in enumerate(children):
                message = None if i in results else self._next(child)
                if message is None:
                    continue
                if message[0] != kind:
                    raise self.fail(
                        f"the {child.role} process said {message[0]!r} ({message[1:]!r:.100}) "
                        f"where {kind!r} was expected"
                    )
                results[i] = message[1] if len(message) > 1 else None
            pending = [c.role for i, c in enumerate(children) if i not in results]
            if not pending:
                return [results[i] for i in range(len(children))]
            left = end - time.monotonic()
            if left <= 0:
                who = " and ".join(pending) + (" processes" if len(pending) > 1 else " process")
                raise self.fail(f"the {who} did not report within {timeout:g}s: {stuck}")
            if tick is not None:
                tick()
                left = min(left, 0.005)
            wait([c.conn for c in self.children if not (c.finished or c.gone)], left)

    def quiet(self, children: Sequence[_Child], doing: str) -> None:
        """The children have said nothing since their last message, as when blocked."""
        for child in children:
            message = self._next(child)
            if message is not None:
                raise self.fail(f"the {child.role} process {doing}: it said {message!r:.120}")

    def call(self, func: Callable[[], Any], what: str, seconds: float = WAKE) -> Any:
        """``func()`` in the parent; a call that blocks past ``seconds`` fails the check."""
        try:
            return call_with_watchdog(func, seconds, what)
        except AssertionError as exc:
            raise self.fail(str(exc)) from None

    def send(self, child: _Child, word: str, *payload: Any) -> None:
        try:
            child.conn.send((word, *payload))
        except OSError:
            self._next(child)
            raise self.fail(f"the {child.role} process stopped listening") from None

    def reap(self, grace: float) -> list[str]:
        """Join every child, killing those still running after ``grace``; their roles."""
        end = time.monotonic() + grace
        overran = []
        for child in self.children:
            process = child.process
            process.join(max(0.0, end - time.monotonic()))
            if process.is_alive():
                overran.append(child.role)
                process.terminate()
                process.join(2.0)
                if process.is_alive():
                    process.kill()
                    process.join(5.0)
            child.conn.close()
            with contextlib.suppress(ValueError):
                process.close()
        return overran


@contextlib.contextmanager
def _session(target: Target, method: str, **options: Any) -> Iterator[tuple[Queue[Any], _Family]]:
    """A fresh queue and a family of children; afterwards none of either is left behind."""
    family = _Family(method)
    q = target.open(**options)
    passed = False
    try:
        yield q, family
        passed = True
    finally:
        # Shut down first: that wakes children still blocked, so few need killing.
        problems = _attempt(lambda: q.shutdown(immediate=True), "shutdown(immediate=True)")
        overran = family.reap(EXIT if passed else 2.0)
        # The children are gone: closing the queue, and removing it, is the parent's alone.
        problems += _attempt(lambda: _dispose(target, q), "disposing of the queue")
        if passed and overran:
            problems.append(
                f"the {', '.join(overran)} process(es) reported back but did not exit within "
                f"{EXIT:g}s (killed): something of the backend's (a helper thread, an unflushed "
                "buffer) keeps a child alive after its last queue call"
            )
        if passed and problems:
            raise family.fail("; ".join(problems))


def _dispose(target: Target, q: Queue[Any]) -> None:
    problem = target.dispose(q)
    if problem:
        raise RuntimeError(problem)


def _attempt(call: Callable[[], object], what: str) -> list[str]:
    try:
        call_with_watchdog(call, WAKE, f"cleaning up, {what} in the parent")
    except AssertionError as exc:
        return [str(exc)]
    except Exception as exc:
        return [f"cleaning up, {what} in the parent raised {exc!r:.200}"]
    return []


def _start_methods(target: Target) -> list[str]:
    caps = target.capabilities
    if not caps.cross_process:
        raise NotApplicable("the backend does not declare cross_process")
    assert caps.start_methods, (
        "the backend declares cross_process=True but no start_methods: declare under which of "
        "fork, spawn and forkserver a handle travels to a child"
    )
    unknown = [m for m in caps.start_methods if m not in _START_METHODS]
    assert not unknown, (
        f"capabilities.start_methods names {unknown}, which are not multiprocessing start "
        f"methods ({', '.join(_START_METHODS)})"
    )
    here = multiprocessing.get_all_start_methods()
    methods = [m for m in caps.start_methods if m in here]
    if not methods:
        raise NotApplicable(
            f"none of the declared start methods ({', '.join(caps.start_methods)}) is "
            "available on this platform"
        )
    return methods


def _item_form(target: Target) -> str:
    """The first item form (see ``_workers.FORMS``) the backend's serializer carries."""
    q = target.open()
    try:
        for form in _workers.FORMS:
            try:
                q.put_nowait(_workers.make_item(form, 0, 0, 4))
            except SerializationError:
                continue
            return form
    finally:
        _attempt(lambda: _dispose(target, q), "disposing of the queue")
    raise NotApplicable("the backend carries none of: tuples with bytes, bytes, JSON lists")


def _join(q: Queue[Any], family: _Family, timeout: float) -> None:
    """``q.join(timeout)`` in the parent, in short slices so that a child failing meanwhile
    fails the check at once (and what it raised is the message)."""
    end = time.monotonic() + timeout
    while True:
        piece = min(0.25, max(0.0, end - time.monotonic()))
        try:
            family.call(
                functools.partial(q.join, timeout=piece), f"join(timeout={piece:g}) in the parent"
            )
            return
        except JoinTimeout:
            family.check_all()
            if time.monotonic() >= end:
                raise


def _eventually(read: Callable[[], Any], expected: Any, approximate: bool) -> Any:
    """``read()``; when ``approximate``, the first reading equal to ``expected`` within
    ``SETTLE`` seconds (or the last one)."""
    value = read()
    end = time.monotonic() + SETTLE
    while approximate and value != expected and time.monotonic() < end:
        time.sleep(0.01)
        value = read()
    return value


# --- Producers and consumers ------------------------------------------------------------

Step = tuple[bool, tuple[int, ...]]
"""One producer call: (``put_many``? else ``put``, the payload sizes of its items)."""


@dataclass(frozen=True)
class Script:
    maxsize: int
    producers: tuple[tuple[Step, ...], ...]
    consumers: tuple[tuple[int, ...], ...]
    """Per consumer, the sizes of its gets, cycled: 0 is ``get()``, n is ``get_many(n)``."""


_sizes = st.one_of(
    st.integers(0, 64), st.integers(0, 4096), st.sampled_from([65535, 65536]), st.integers(0, 65536)
)


@st.composite
def _scripts(draw: st.DrawFn) -> Script:
    maxsize = draw(st.one_of(st.just(0), st.integers(1, 4), st.integers(5, 32)))
    largest_batch = min(_LARGEST_BATCH, maxsize) if maxsize > 0 else _LARGEST_BATCH
    step = st.one_of(
        _sizes.map(lambda size: (False, (size,))),
        st.lists(_sizes, max_size=largest_batch).map(lambda sizes: (True, tuple(sizes))),
    )
    producers = draw(
        st.lists(st.lists(step, min_size=1, max_size=12).map(tuple), min_size=1, max_size=3)
    )
    consumers = draw(
        st.lists(
            st.lists(st.integers(0, 8), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3
        )
    )
    return Script(maxsize, tuple(producers), tuple(consumers))


def _volume_script() -> Script:
    # Always run: enough items per producer (60) that a backend losing one item in a few
    # dozen shows, through a small bound, with batches, both get styles and large payloads.
    sizes = [0, 17, 300, 4096, 65536, 1]
    steps = tuple(
        (False, (sizes[i % 6],))
        if i % 2 == 0
        else (True, tuple(sizes[(i + k) % 6] for k in range(3)))
        for i in range(30)
    )
    return Script(maxsize=3, producers=(steps, steps), consumers=((0,), (2, 3)))


VOLUME = _volume_script()

_EXPANSION = {"tuple": 1, "bytes": 1, "list": 6}
"""Serialized bytes per payload byte, at most, for each item form: pickle and raw carry the
bytes as they are; JSON writes most of the latin-1 text a payload becomes as \\u00XX."""
_LARGEST_BATCH = 8


def _fit(script: Script, target: Target, form: str) -> Script:
    """``script`` with each payload cut to what ``max_message_size`` lets its put carry (a
    batch's items share it: one call stays within the limit)."""

    def fitted(step: Step) -> Step:
        batch, sizes = step
        room = target.payload_room(max(1, len(sizes)), _EXPANSION[form])
        return batch, sizes if room is None else tuple(min(size, room) for size in sizes)

    producers = tuple(tuple(fitted(step) for step in plan) for plan in script.producers)
    return Script(script.maxsize, producers, script.consumers)


def _describe(records: Counter[_workers.Record], limit: int = 3) -> str:
    shown = [f"producer {p} seq {s} ({n} bytes)" for p, s, n, _ in sorted(records)[:limit]]
    return ", ".join(shown) + (", ..." if len(records) > limit else "")


def _wait_for_count(done: Any, total: int) -> None:
    """Wait until ``done`` reaches ``total``, or stops moving for a while."""
    end = time.monotonic() + PATIENCE
    last, moved = done.value, time.monotonic()
    while done.value < total and time.monotonic() < end and time.monotonic() - moved < 2.0:
        time.sleep(0.02)
        if done.value != last:
            last, moved = done.value, time.monotonic()


def _run_pipeline(target: Target, method: str, script: Script, form: str) -> None:
    caps = target.capabilities
    script = _fit(script, target, form)
    expected: Counter[_workers.Record] = Counter()
    for p, plan in enumerate(script.producers):
        sizes = [size for _, batch in plan for size in batch]
        expected.update(
            _workers.record(p, seq, _workers.payload(p, seq, size))
            for seq, size in enumerate(sizes)
        )
    total = sum(expected.values())
    peak = 0

    with _session(target, method, maxsize=script.maxsize) as (q, family):
        done = family.ctx.Value("q", 0)
        consumers = [
            family.spawn(f"consumer {c}", _workers.consumer, q, pattern, done, form)
            for c, pattern in enumerate(script.consumers)
        ]
        producers = [
            family.spawn(f"producer {p}", _workers.producer, q, p, plan, form)
            for p, plan in enumerate(script.producers)
        ]

        def observe() -> None:
            nonlocal peak
            peak = max(peak, q.qsize())

        watch = caps.qsize == "exact" and script.maxsize > 0
        family.gather(
            producers,
            "done",
            PATIENCE,
            "still blocked putting items: the consumer processes are not receiving them (the "
            "handle reaches another queue in a child, items are lost, or a put in one process "
            "does not wake a get in another)",
            tick=observe if watch else None,
        )
        try:
            _join(q, family, PATIENCE)
        except JoinTimeout:
            counted = done.value
            why = (
                "task_done() in a child does not reach join() in the parent"
                if counted == total
                else "items lost on the way, or consumers not woken by puts in other processes"
            )
            raise family.fail(
                f"join(timeout={PATIENCE:g}) in the parent timed out when consumer processes had "
                f"marked {counted} of {total} items done: {why}"
            ) from None
        done_at_join = done.value
        early_join = family.fail(
            f"join() in the parent returned when consumer processes had marked only "
            f"{done_at_join} of {total} items done: join() must wait for task_done() from "
            "every process"
        )
        if done_at_join < total:
            _wait_for_count(done, total)
            if done.value == total:
                raise early_join

        stop = _workers.stop_marker(form)
        for _ in consumers:
            try:
                family.call(
                    functools.partial(q.put, stop, timeout=PATIENCE),
                    f"put({stop!r}, timeout={PATIENCE:g}) of a stop marker in the parent",
                    PATIENCE + WAKE,
                )
            except Full:
                family.check_all()
                raise family.fail(
                    f"the parent could not put a stop marker within {PATIENCE:g}s: the consumer "
                    "processes are not taking items"
                ) from None
        results: list[list[_workers.Record]] = family.gather(
            consumers,
            "done",
            PATIENCE,
            "still running after the parent put a stop marker for each: a put in the parent does "
            "not wake a get in a child, or items were lost",
        )

    got = Counter(record for records in results for record in records)
    lost, surplus = expected - got, got - expected
    strange = Counter({r: n for r, n in surplus.items() if r not in expected})
    twice = surplus - strange
    assert not lost, (
        f"under {method}: lost {sum(lost.values())} of {total} items (put by a producer process, "
        f"got by no consumer process): {_describe(lost)}"
    )
    assert not twice, (
        f"under {method}: {sum(twice.values())} items were got more than once across consumer "
        f"processes: {_describe(twice)}"
    )
    assert not strange, (
        f"under {method}: consumers got {sum(strange.values())} items that no producer put "
        f"(payloads changed on the way?): {_describe(strange)}"
    )
    if done_at_join < total:
        raise early_join
    assert peak <= script.maxsize or not watch, (
        f"under {method}: qsize() in the parent read {peak} on a queue of maxsize="
        f"{script.maxsize}: the bound is not kept across processes"
    )
    for c, records in enumerate(results):
        last: dict[int, int] = {}
        for p, seq, _, _ in records:
            assert seq > last.get(p, -1), (
                f"under {method}: consumer {c} got producer {p}'s item seq {seq} after seq "
                f"{last[p]}: each producer's items must come out in the order it put them"
            )
            last[p] = seq
    if len(results) == 1:
        for p, plan in enumerate(script.producers):
            seqs = [seq for who, seq, _, _ in results[0] if who == p]
            assert seqs == list(range(sum(len(batch) for _, batch in plan))), (
                f"under {method}: the only consumer got producer {p}'s items as seqs {seqs[:20]}, "
                "not in the order they were put"
            )


def _explore(target: Target, method: str, form: str) -> None:
    base = target.settings
    # Each example starts several processes, so few of them; a failing one is not shrunk,
    # because each shrinking step could wait out a stuck child (the example is printed whole).
    tuned = Settings(
        base,
        max_examples=max(3, min(60, base.max_examples // 6)),
        phases=[p for p in base.phases if p not in (Phase.shrink, Phase.explain)],
    )

    @tuned
    @example(VOLUME)
    @given(_scripts())
    def scripted(script: Script) -> None:
        _run_pipeline(target, method, script, form)

    try:
        scripted()
    except Flaky as exc:
        inner = getattr(exc, "exceptions", None) or [exc]
        raise AssertionError(f"{inner[0]} (seen once, not on a replay: a race)") from exc


@check("pipeline-across-processes", tier="cross-process")
def pipeline_across_processes(target: Target) -> None:
    """Producer and consumer processes: no loss or duplication, per-producer order, join()
    waits for every task_done(), maxsize holds, puts block."""
    methods = _start_methods(target)
    form = _item_form(target)
    room = target.payload_room(_LARGEST_BATCH, _EXPANSION[form])
    if room is not None and room < 0:
        raise NotApplicable(
            f"max_message_size={target.capabilities.max_message_size} leaves no room for a "
            f"batch of {_LARGEST_BATCH} of the pipeline's items in one put_many"
        )
    for method in methods:
        if method == "forkserver":
            _run_pipeline(target, method, VOLUME, form)
        else:
            _explore(target, method, form)


# --- Shutdown, join, sizes --------------------------------------------------------------


def _shutdown_wakes(target: Target, operation: str) -> None:
    form = _item_form(target)
    item = _workers.make_item(form, 0, 0, 8)
    blocked_in = "get() on an empty queue" if operation == "get" else "put() on a full queue"
    for method in _start_methods(target):
        with _session(target, method, maxsize=1) as (q, family):
            if operation == "put":
                q.put(item, timeout=PATIENCE)
            waiters = [
                family.spawn(f"{operation}ter {i}", _workers.wait_blocked, q, operation, item)
                for i in range(2)
            ]
            family.gather(waiters, "ready", PATIENCE, "did not start")
            time.sleep(BLOCK_IN)
            family.quiet(waiters, f"should be blocked in {blocked_in}, but it finished")
            family.call(q.shutdown, f"shutdown() in the parent while children were in {blocked_in}")
            outcomes = family.gather(
                waiters,
                "done",
                WAKE,
                f"still blocked in {blocked_in} after shutdown() in the parent: shutdown does "
                "not wake waiters in other processes",
            )
            for i, outcome in enumerate(outcomes):
                assert outcome == "ShutDown", (
                    f"under {method}: {blocked_in} in {operation}ter {i}, woken by shutdown() in "
                    f"the parent, {outcome} instead of raising ShutDown"
                )


@check("shutdown-wakes-getters-in-other-processes", tier="cross-process")
def shutdown_wakes_getters(target: Target) -> None:
    """shutdown() in the parent wakes children blocked in get() on an empty queue, with ShutDown."""
    _shutdown_wakes(target, "get")


@check("shutdown-wakes-putters-in-other-processes", tier="cross-process")
def shutdown_wakes_putters(target: Target) -> None:
    """shutdown() in the parent wakes children blocked in put() on a full queue, with ShutDown."""
    _shutdown_wakes(target, "put")


@check("join-across-processes", tier="cross-process")
def join_across_processes(target: Target) -> None:
    """join() in the parent returns once children task_done() every item, and not while a
    child still holds one."""
    form = _item_form(target)
    count = 6
    for method in _start_methods(target):
        with _session(target, method) as (q, family):
            for seq in range(count):
                q.put(_workers.make_item(form, 0, seq, 8), timeout=PATIENCE)
            done = family.ctx.Value("q", 0)
            workers = [
                family.spawn(f"worker {i}", _workers.task_worker, q, count // 2, done)
                for i in range(2)
            ]
            holder = family.spawn("holder", _workers.holder, q, PATIENCE)
            try:
                _join(q, family, PATIENCE)
            except JoinTimeout:
                raise family.fail(
                    f"join(timeout={PATIENCE:g}) in the parent did not return although child "
                    f"processes got {count} items and marked {done.value} done: task_done() in a "
                    "child does not reach join() in the parent"
                ) from None
            assert done.value == count, (
                f"under {method}: join() in the parent returned when child processes had marked "
                f"only {done.value} of {count} items done: join() must wait for task_done() "
                "from every process"
            )
            family.gather(workers, "done", PATIENCE, "still running after join() returned")

            q.put(_workers.make_item(form, 1, 0, 8), timeout=PATIENCE)
            family.send(holder, "go")
            family.gather([holder], "holding", PATIENCE, "did not get the item the parent put")
            try:
                _join(q, family, 0.2)
            except JoinTimeout:
                pass
            else:
                raise family.fail(
                    "join(timeout=0.2) in the parent returned while a child process held an item "
                    "it had not marked with task_done(): join() must count other processes' "
                    "unfinished tasks"
                )
            family.send(holder, "release")
            family.gather([holder], "done", PATIENCE, "stuck in task_done()")
            try:
                _join(q, family, PATIENCE)
            except JoinTimeout:
                raise family.fail(
                    f"join(timeout={PATIENCE:g}) in the parent did not return after the child "
                    "holding the last item marked it done"
                ) from None


@check("sizes-across-processes", tier="cross-process")
def sizes_across_processes(target: Target) -> None:
    """qsize(), empty() and full() in the parent reflect puts and gets made in a child."""
    form = _item_form(target)
    approximate = target.capabilities.qsize == "approximate"
    items = [_workers.make_item(form, 0, seq, 8) for seq in range(3)]
    lag = f" (within {SETTLE:g}s)" if approximate else ""
    for method in _start_methods(target):
        with _session(target, method, maxsize=len(items)) as (q, family):
            filler = family.spawn("filler", _workers.filler, q, items, PATIENCE)
            family.gather([filler], "put", PATIENCE, "stuck putting 3 items into an empty queue")
            seen = (
                _eventually(q.qsize, 3, approximate),
                _eventually(q.empty, False, approximate),
                _eventually(q.full, True, approximate),
            )
            assert seen == (3, False, True), (
                f"under {method}: after a child put 3 items into a queue of maxsize 3, the parent "
                f"read (qsize, empty, full) = {seen}{lag}, not (3, False, True)"
            )
            family.send(filler, "drain")
            (got,) = family.gather([filler], "done", PATIENCE, "stuck getting its 3 items back")
            seen = (
                _eventually(q.qsize, 0, approximate),
                _eventually(q.empty, True, approximate),
                _eventually(q.full, False, approximate),
            )
            assert seen == (0, True, False), (
                f"under {method}: after a child got every item, the parent read "
                f"(qsize, empty, full) = {seen}{lag}, not (0, True, False)"
            )
            assert got == items, f"under {method}: the child got {got!r:.200}, not what it put"


@check("fifo-across-processes", tier="cross-process")
def fifo_across_processes(target: Target) -> None:
    """With ordering="fifo", items put in turn by the parent and child processes (each put
    or put_many returning before the next begins) come out in exactly that order."""
    ordering = target.capabilities.ordering
    if ordering != "fifo":
        raise NotApplicable(
            f"the backend declares ordering={ordering!r}: only each producer's own order, "
            "which pipeline-across-processes checks"
        )
    form = _item_form(target)
    rng = random.Random(20)  # the same plan on every run
    plan = [(rng.randrange(3), rng.choice((1, 1, 2, 3))) for _ in range(30)]
    for method in _start_methods(target):
        with _session(target, method) as (q, family):
            children = [
                family.spawn(f"producer {p}", _workers.turn_taker, q, PATIENCE) for p in (1, 2)
            ]
            order: list[_workers.Record] = []
            for who, size in plan:
                items = [_workers.make_item(form, who, len(order) + k, 8) for k in range(size)]
                if who == 0:
                    family.call(
                        functools.partial(q.put_many, items, timeout=PATIENCE),
                        f"put_many of {size} items (timeout={PATIENCE:g}) in the parent",
                        PATIENCE + WAKE,
                    )
                else:
                    family.send(children[who - 1], "put", items)
                    family.gather(
                        [children[who - 1]], "put", PATIENCE, f"stuck putting {size} items"
                    )
                order += [_workers.parse_item(form, item) for item in items]
            for child in children:
                family.send(child, "stop")
            family.gather(children, "done", PATIENCE, "still running when told to stop")
            got: list[_workers.Record] = []
            while len(got) < len(order):
                try:
                    batch = family.call(
                        functools.partial(q.get_many, len(order) - len(got), timeout=WAKE),
                        f"get_many({len(order) - len(got)}, timeout={WAKE:g}) in the parent",
                        2 * WAKE,
                    )
                except Empty:
                    raise family.fail(
                        f"only {len(got)} of {len(order)} items put in turn came back"
                    ) from None
                got += [_workers.parse_item(form, item) for item in batch]
            if got != order:
                i = next(i for i, (a, b) in enumerate(zip(got, order, strict=True)) if a != b)
                (p_got, s_got, _, _), (p_want, s_want, _, _) = got[i], order[i]
                raise family.fail(
                    f"items put in turn by the parent (producer 0) and 2 child processes came "
                    f"out of order: at position {i}, producer {p_got}'s item {s_got} came out "
                    f"where producer {p_want}'s item {s_want}, put before it, was next: with "
                    "ordering='fifo' items come out in the one order they went in"
                )
