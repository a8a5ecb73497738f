"""The conformance checks' registry, their target, and the runner behind every way in.

A *check* is a function that takes a :class:`Target` and raises (an ``AssertionError`` with
the property it saw broken) or returns. Checks are grouped in tiers, run in this order:
``core`` (one thread, against a model), ``batch``, ``blocking`` (threads that block and wake),
``lifecycle`` (close, pickling, serializers) and ``cross-process`` (child processes under each
start method). A check that does not apply to a backend's declared capabilities raises
:class:`NotApplicable`; it never weakens the core contract.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings as Settings

from .._errors import SerializationError
from .._protocol import Capabilities, Queue
from .._registry import open as open_url
from .._urls import parse_url
from ._profiles import CI_PROFILE

__all__ = [
    "CHECKS",
    "TIERS",
    "Check",
    "CheckResult",
    "NotApplicable",
    "QueueOpener",
    "Report",
    "Target",
    "call_with_watchdog",
    "check",
    "run_conformance",
    "target_for_url",
]

TIERS = ("core", "batch", "blocking", "lifecycle", "cross-process")

QueueOpener = Callable[..., Queue[Any]]
"""Opens a fresh, empty queue; keyword options (``maxsize=``, ``serializer=``) as for
:func:`queuekit.open`."""


class NotApplicable(Exception):
    """Raised by a check that the backend's declared capabilities put out of scope."""


@dataclass
class Target:
    """What the checks run against: a way to open fresh queues of one backend."""

    open_queue: QueueOpener
    description: str
    settings: Settings = field(default_factory=lambda: Settings.get_profile(CI_PROFILE))
    url: str | None = None
    """The URL, when the target was given as one (cross-process checks reopen nothing, but
    report it)."""
    _capabilities: Capabilities | None = field(default=None, repr=False)
    _items_as_bytes: bool | None = field(default=None, repr=False)

    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            with self.queue() as q:
                self._capabilities = q.capabilities
        return self._capabilities

    def item(self, n: int) -> Any:
        """A distinct test item for ``n``: the int itself, or its digits as bytes when the
        backend was opened with a bytes-only serializer (``serializer=raw``)."""
        if self._items_as_bytes is None:
            with self.queue() as q:
                try:
                    q.put_nowait(0)
                    self._items_as_bytes = False
                except SerializationError:
                    self._items_as_bytes = True
        return str(n).encode() if self._items_as_bytes else n

    @contextlib.contextmanager
    def queue(self, **options: Any) -> Iterator[Queue[Any]]:
        """A fresh queue, closed afterwards (shut down first, so no helper thread lingers)."""
        q = self.open_queue(**options)
        try:
            yield q
        finally:
            with contextlib.suppress(Exception):
                q.shutdown(immediate=True)
            with contextlib.suppress(Exception):
                q.close()


@dataclass(frozen=True)
class Check:
    name: str
    tier: str
    func: Callable[[Target], None]
    doc: str

    def __str__(self) -> str:
        return f"{self.tier}/{self.name}"


CHECKS: list[Check] = []


def check(name: str, tier: str) -> Callable[[Callable[[Target], None]], Callable[[Target], None]]:
    """Register a conformance check under a property name, in a tier."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; one of {TIERS}")

    def register(func: Callable[[Target], None]) -> Callable[[Target], None]:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"a check named {name!r} exists already")
        doc = (func.__doc__ or name).strip().splitlines()[0]
        CHECKS.append(Check(name, tier, func, doc))
        CHECKS.sort(key=lambda c: TIERS.index(c.tier))
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
        settings=settings or Settings.get_profile(CI_PROFILE),
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


def call_with_watchdog(func: Callable[[], Any], seconds: float, what: str) -> Any:
    """``func()``, run in a helper thread so a call that blocks for good fails the check
    (naming ``what``) instead of hanging the suite. The stuck thread is left as a daemon."""
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
        raise AssertionError(f"{what} was still blocked after {seconds:g}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


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
    from . import _load_checks

    _load_checks()
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
