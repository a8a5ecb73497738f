"""The conformance checks' registry, their target, and the runner behind every way in.

A *check* is a function that takes a :class:`Target` and raises (an ``AssertionError`` with
the property it saw broken) or returns. Checks are grouped in tiers, run in this order:
``core`` (one thread, against a model), ``batch``, ``blocking`` (threads that block and wake),
``lifecycle`` (close, pickling, serializers) and ``cross-process`` (child processes under each
start method). A check that does not apply to a backend's declared capabilities raises
:class:`NotApplicable`; it never weakens the core contract.

Nothing here imports hypothesis (the check modules and the profiles do, when first needed):
the cross-process checks' children import :mod:`._workers`, and with it this package.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from .._errors import Empty, InvalidURL, QueueClosed, SerializationError
from .._protocol import Capabilities, Queue
from .._registry import open as open_url
from .._urls import parse_url

if TYPE_CHECKING:
    from hypothesis import settings as Settings

__all__ = [
    "CHECKS",
    "CI_PROFILE",
    "CLEANUP",
    "HEAVY_PROFILE",
    "PROFILES",
    "TIERS",
    "Check",
    "CheckResult",
    "NotApplicable",
    "QueueOpener",
    "Report",
    "Target",
    "call_with_watchdog",
    "check",
    "close_quietly",
    "describe_call",
    "load_checks",
    "profile",
    "run_conformance",
    "target_for_url",
]

TIERS = ("core", "batch", "blocking", "lifecycle", "cross-process")

CI_PROFILE = "queuekit-ci"
HEAVY_PROFILE = "queuekit-heavy"
PROFILES = (CI_PROFILE, HEAVY_PROFILE)

CLEANUP = 10.0
"""Seconds that shutting down or closing a queue the suite opened may take before the check
fails, naming the call (generous: CI machines are slow and shared)."""


def profile(name: str = CI_PROFILE) -> Settings:
    """The Hypothesis settings profile ``name`` (queuekit's are registered on first use)."""
    from hypothesis import settings

    from . import _profiles  # noqa: F401 - registers queuekit's profiles

    return settings.get_profile(name)


QueueOpener = Callable[..., Queue[Any]]
"""Opens a fresh, empty queue; keyword options (``maxsize=``, ``serializer=``) as for
:func:`queuekit.open`."""

FRAMING = 64
"""Bytes allowed for each item beyond its payload: the serializer's and the backend's framing."""


class NotApplicable(Exception):
    """Raised by a check that the backend's declared capabilities put out of scope."""


def describe_call(func: Callable[..., Any]) -> str:
    """``func`` as a call, with its arguments: ``put(3, timeout=0.5)``."""
    args: tuple[Any, ...] = ()
    keywords: dict[str, Any] = {}
    while isinstance(func, functools.partial):
        args, keywords = func.args + args, {**func.keywords, **keywords}
        func = func.func
    shown = [f"{arg!r:.60}" for arg in args] + [f"{k}={v!r:.60}" for k, v in keywords.items()]
    return f"{getattr(func, '__name__', repr(func))}({', '.join(shown)})"


def call_with_watchdog(func: Callable[[], Any], seconds: float, what: str | None = None) -> Any:
    """``func()``, run in a helper thread so a call that blocks for good fails the check
    (naming ``what``, by default the call and its arguments) instead of hanging the suite. The
    stuck thread is left as a daemon."""
    what = what or describe_call(func)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True, name=f"queuekit-watchdog: {what}")
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise AssertionError(f"{what} hung: still blocked after {seconds:g}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def close_quietly(q: Queue[Any], seconds: float = CLEANUP) -> str | None:
    """Shut ``q`` down at once and close it, each within ``seconds``; what hung, if a call
    did. Errors are ignored: the queue may be closed or broken already."""
    for call in (functools.partial(q.shutdown, immediate=True), q.close):
        try:
            call_with_watchdog(call, seconds, f"{describe_call(call)} of a queue the suite opened")
        except AssertionError as exc:
            return str(exc)
        except Exception:
            pass
    return None


@dataclass
class Target:
    """What the checks run against: a way to open fresh queues of one backend."""

    open_queue: QueueOpener
    description: str
    settings: Settings = field(default_factory=profile)
    url: str | None = None
    """The URL, when the target was given as one (cross-process checks reopen nothing, but
    report it)."""
    _capabilities: Capabilities | None = field(default=None, repr=False)
    _items_as_bytes: bool | None = field(default=None, repr=False)
    _fresh: bool | None = field(default=None, repr=False)
    _probing: bool = field(default=False, repr=False)
    _undecided: list[Queue[Any]] = field(default_factory=list, repr=False)

    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            q = self.open()
            try:
                self._capabilities = q.capabilities
            finally:
                self.dispose(q)  # what goes wrong shows in the checks' own queues
        return self._capabilities

    def item(self, n: int) -> Any:
        """A distinct test item for ``n``: the int itself, or its digits as bytes when the
        backend was opened with a bytes-only serializer (``serializer=raw``)."""
        if self._items_as_bytes is None:
            q = self.open()
            try:
                q.put_nowait(0)
                self._items_as_bytes = False
            except SerializationError:
                self._items_as_bytes = True
            finally:
                self.dispose(q)  # what goes wrong shows in the checks' own queues
        return str(n).encode() if self._items_as_bytes else n

    def payload_room(self, count: int = 1, expansion: int = 1) -> int | None:
        """The most payload bytes each of ``count`` items put in one call may carry, when
        serializing takes up to ``expansion`` bytes per payload byte plus ``FRAMING``: the
        whole call stays within ``max_message_size``. None without a limit; below 0 when
        not even empty payloads fit."""
        limit = self.capabilities.max_message_size
        if limit is None:
            return None
        return (limit // count - FRAMING) // expansion

    def open(self, **options: Any) -> Queue[Any]:
        """A fresh queue, unbounded unless ``maxsize=`` says otherwise (whatever the URL
        says: each check chooses the bound it needs). The caller closes it."""
        options.setdefault("maxsize", 0)
        try:
            return self.open_queue(**options)
        except InvalidURL as exc:
            query = parse_url(self.url).query if self.url else {}
            fixed = sorted(set(query) & set(options))
            if not fixed:
                raise
            asked = ", ".join(f"{name}={options[name]!r}" for name in fixed)
            raise NotApplicable(
                f"this check opens its queues with {asked}, which {self.description} fixes "
                f"and the backend refuses as an option ({exc}); run the suite on a URL without "
                f"{' or '.join(fixed)}"
            ) from exc

    @contextlib.contextmanager
    def queue(self, **options: Any) -> Iterator[Queue[Any]]:
        """A fresh queue (as :meth:`open`), disposed of afterwards (see :meth:`dispose`)."""
        with self.disposing(self.open(**options)) as q:
            yield q

    @contextlib.contextmanager
    def disposing(self, q: Queue[Any]) -> Iterator[Queue[Any]]:
        """``q``, a queue this target opened, disposed of afterwards (see :meth:`dispose`);
        what went wrong then fails the check, unless the check failed already."""
        passed = False
        try:
            yield q
            passed = True
        finally:
            problem = self.dispose(q)
            if problem and passed:
                raise AssertionError(problem)

    def dispose(self, q: Queue[Any], shut_down: bool = True) -> str | None:
        """Shut ``q`` down at once, unlink it where that applies, and close it, each within
        ``CLEANUP`` seconds (shut down first, so no helper thread lingers); what went wrong,
        if anything. ``shut_down=False`` leaves the shutdown out, for a queue nobody used
        (the command line's first open, which may name a queue that others use).

        ``unlink()``, for a backend whose queues outlive their handles (it removes the queue
        itself: ``shm://``'s name, ``redis://``'s keys), is called on the open handle, and only
        where every open gives a fresh queue (see :meth:`opens_fresh_queues`): never on a
        queue the URL names. Only the process that opened ``q`` calls this: a child process
        handed a handle leaves the queue to its parent.
        """
        problems = [_within(functools.partial(q.shutdown, immediate=True)) if shut_down else None]
        if not callable(getattr(q, "unlink", None)):
            problems.append(_within(q.close))
            return "; ".join(dict.fromkeys(p for p in problems if p)) or None
        if self._fresh is None:
            # Deciding opens queues too (and finding the item type may, in turn): those, and
            # this one, stay open until it is known whether to unlink them.
            self._undecided.append(q)
            if self._probing:
                return problems[0]
            self._probing = True
            try:
                self._fresh = self.opens_fresh_queues()
            except Exception:
                self._fresh = False  # not known to be fresh: left alone
            finally:
                self._probing = False
            queues, self._undecided = self._undecided, []
        else:
            queues = [q]
        for each in queues:
            if self._fresh:
                unlink = getattr(each, "unlink")  # noqa: B009 - not a call of the Protocol
                problems.append(_within(unlink, report_errors=True))
            problems.append(_within(each.close))
        return "; ".join(dict.fromkeys(p for p in problems if p)) or None

    def opens_fresh_queues(self) -> bool:
        """Whether two opens give two queues, none named by the URL: an item put into one
        does not show in the other (the ``fresh-queue-per-open`` check's test; an
        approximate ``qsize()`` is given a second). A target that fails it has its queues
        left alone (not unlinked) when the suite is done with them."""
        sample = self.item(0)
        first, second = self.open(), self.open()
        try:
            first.put(sample, timeout=CLEANUP)
            if self.capabilities.qsize == "exact":
                return second.qsize() == 0
            try:
                second.get(timeout=1.0)  # an approximate backend shows an item within 1s
            except Empty:
                return True
            return False
        finally:
            for q in (first, second):
                self.dispose(q)


def _within(call: Callable[[], object], report_errors: bool = False) -> str | None:
    """``call()`` on a queue the suite opened, within ``CLEANUP`` seconds: what went wrong
    (that it hung; with ``report_errors``, what it raised), if anything. Shutting down and
    closing may raise: the queue may be closed or broken already."""
    what = f"{describe_call(call)} of a queue the suite opened"
    try:
        call_with_watchdog(call, CLEANUP, what)
    except AssertionError as exc:
        return str(exc)
    except QueueClosed:
        pass  # a handle the check closed itself: unlink() wants an open one
    except Exception as exc:
        if report_errors:
            return f"{what} raised {exc!r:.200}"
    return None


@dataclass(frozen=True)
class Check:
    name: str
    tier: str
    func: Callable[[Target], None]
    doc: str

    def __str__(self) -> str:
        return f"{self.tier}/{self.name}"


_CHECK_MODULES = ("_core", "_batch", "_blocking", "_ordering", "_lifecycle", "_crossproc")


class _Registry(Sequence[Check]):
    """Every check, in tier order. Reading it imports the check modules first (they need
    hypothesis), so importing the package alone stays light."""

    def __init__(self) -> None:
        self._checks: list[Check] = []
        self._loading = False

    def load(self) -> None:
        if self._loading:
            return  # loaded, or loading: a module being imported reads what is there so far
        self._loading = True
        try:
            for name in ("_profiles", *_CHECK_MODULES):
                importlib.import_module(f"{__package__}.{name}")
        except BaseException:
            self._loading = False  # not silently empty: the next read raises the same
            raise

    def add(self, chk: Check) -> None:
        if any(c.name == chk.name for c in self._checks):
            raise ValueError(f"a check named {chk.name!r} exists already")
        self._checks.append(chk)
        self._checks.sort(key=lambda c: TIERS.index(c.tier))

    @overload
    def __getitem__(self, index: int) -> Check: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Check]: ...
    def __getitem__(self, index: int | slice) -> Check | Sequence[Check]:
        self.load()
        return self._checks[index]

    def __len__(self) -> int:
        self.load()
        return len(self._checks)

    def __repr__(self) -> str:
        self.load()
        return repr(self._checks)


CHECKS = _Registry()


def load_checks() -> None:
    """Import the modules whose checks register themselves (once)."""
    CHECKS.load()


def check(name: str, tier: str) -> Callable[[Callable[[Target], None]], Callable[[Target], None]]:
    """Register a conformance check under a property name, in a tier."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; one of {TIERS}")

    def register(func: Callable[[Target], None]) -> Callable[[Target], None]:
        doc = (func.__doc__ or name).strip().splitlines()[0]
        CHECKS.add(Check(name, tier, func, doc))
        return func

    return register


def target_for_url(url: str, settings: Settings | None = None) -> Target:
    """A target that opens ``url`` once per queue the checks need.

    Every ``open(url)`` must give a fresh, empty queue; a URL naming one shared queue (such
    as ``memory://jobs``) is refused by the ``fresh-queue-per-open`` check.
    """
    shown = parse_url(url).redacted()
    return Target(
        open_queue=lambda **options: open_url(url, **options),
        description=shown,
        settings=settings or profile(CI_PROFILE),
        url=url,
    )


@dataclass
class CheckResult:
    check: Check
    outcome: str  # "passed", "failed", "not applicable"
    seconds: float
    message: str = ""
    details: str = ""


@dataclass
class Report:
    target: str
    results: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and any(r.outcome == "passed" for r in self.results)

    def summary(self) -> str:
        lines = [f"queuekit conformance: {self.target}"]
        for r in self.results:
            mark = {"passed": "PASS", "failed": "FAIL", "not applicable": "n/a "}[r.outcome]
            line = f"  {mark} {r.check}  ({r.seconds:.1f}s)"
            if r.message:
                line += f"\n       {r.message}"
            lines.append(line)
        passed = sum(r.outcome == "passed" for r in self.results)
        skipped = sum(r.outcome == "not applicable" for r in self.results)
        lines.append(f"{passed} passed, {len(self.failed)} failed, {skipped} not applicable")
        if self.failed:
            lines.append("broken properties: " + ", ".join(r.check.name for r in self.failed))
        return "\n".join(lines)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    head = text.splitlines()[0]
    return head if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {head}"


def run_check(chk: Check, target: Target) -> CheckResult:
    start = time.monotonic()
    try:
        chk.func(target)
    except NotApplicable as exc:
        return CheckResult(chk, "not applicable", time.monotonic() - start, str(exc))
    except Exception as exc:
        return CheckResult(
            chk, "failed", time.monotonic() - start, _first_line(exc), traceback.format_exc()
        )
    return CheckResult(chk, "passed", time.monotonic() - start)


def run_conformance(
    target: Target | str,
    *,
    tiers: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    stop_on_failure: bool = False,
    on_result: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Run the checks (all, or those in ``tiers`` / named in ``names``) against ``target``."""
    load_checks()
    if isinstance(target, str):
        target = target_for_url(target)
    chosen = [
        c
        for c in CHECKS
        if (tiers is None or c.tier in tiers) and (names is None or c.name in names)
    ]
    if names is not None:
        unknown = set(names) - {c.name for c in CHECKS}
        if unknown:
            raise ValueError(f"no such checks: {', '.join(sorted(unknown))}")
    results = []
    for chk in chosen:
        result = run_check(chk, target)
        results.append(result)
        if on_result is not None:
            on_result(result)
        if stop_on_failure and result.outcome == "failed":
            break
    return Report(target.description, results)
