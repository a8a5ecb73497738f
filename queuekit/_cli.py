"""The ``queuekit`` command: ``conformance``, ``info``, ``backends`` and ``bench``.

Exit status: 0 success; 1 a check failed, or the backend could not be reached; 2 a usage error
or a URL that cannot be opened as written; 130 interrupted. Only the standard library is
imported here: the conformance suite (which needs hypothesis) and the benchmarks are imported
when they run, and faster-fifo, redis-py or matplotlib only when a benchmark uses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import _bench
from ._errors import InvalidURL, QueueError
from ._registry import open as open_url
from ._registry import registered_schemes
from ._urls import parse_url

if TYPE_CHECKING:
    from . import testing

__all__ = ["main"]

USAGE, FAILED, OK = 2, 1, 0
INSTALL_HINT = "pip install 'queuekit[test]'"

Say = Callable[..., None]


class _UsageError(Exception):
    """Reported as ``queuekit: error: MESSAGE``, exit status 2."""


def _sayer(secret: str | None) -> Say:
    """``print`` that never shows ``secret`` (a URL's password), whoever wrote the text."""

    def say(*parts: object, file: TextIO | None = None) -> None:
        text = " ".join(str(p) for p in parts)
        if secret:
            text = text.replace(secret, "***")
        print(text, file=file or sys.stdout, flush=True)

    return say


def _secret(url: str) -> str | None:
    try:
        return parse_url(url).password
    except InvalidURL:
        return None  # the error message masks it already


def _import_modules(names: Sequence[str]) -> None:
    # Like ``python -m``: a module in the current directory can be named without a path.
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise _UsageError(
                f"--import {name}: {type(exc).__name__}: {exc}; check the module name and "
                "that it is on PYTHONPATH"
            ) from None


def _probe(url: str, target: testing.Target) -> str:
    """Open ``url`` once, so a bad URL is a usage error, not N failed checks; the queue is
    disposed of as the suite's own are (a private Redis queue's keys do not stay behind)."""
    try:
        q = open_url(url)
    except InvalidURL as exc:
        raise _UsageError(str(exc)) from None
    target.dispose(q, shut_down=False)
    return parse_url(url).redacted()


def cmd_conformance(args: argparse.Namespace, say: Say) -> int:
    try:
        from hypothesis import settings

        from . import testing
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "hypothesis":
            raise
        raise _UsageError(f"the conformance suite needs hypothesis: {INSTALL_HINT}") from None

    testing._load_checks()
    for tier in args.tier or ():
        if tier not in testing.TIERS:
            raise _UsageError(f"unknown tier {tier!r}; choose from {', '.join(testing.TIERS)}")
    known = {c.name for c in testing.CHECKS}
    for name in args.check or ():
        if name not in known:
            raise _UsageError(f"no check named {name!r}; known: {', '.join(sorted(known))}")
    if args.profile not in testing.PROFILES:
        raise _UsageError(
            f"unknown profile {args.profile!r}; choose from {', '.join(testing.PROFILES)}"
        )
    try:
        target = testing.target_for_url(args.url, settings.get_profile(args.profile))
    except InvalidURL as exc:
        raise _UsageError(str(exc)) from None
    shown = _probe(args.url, target)
    say(f"checking {shown} (profile {args.profile})", file=sys.stderr)

    def progress(result: testing.CheckResult) -> None:
        mark = {"passed": "PASS", "failed": "FAIL", "not applicable": "n/a"}[result.outcome]
        say(f"{mark:>4} {result.check}  ({result.seconds:.1f}s)", file=sys.stderr)
        if result.outcome == "failed" and args.verbose:
            say(result.details.rstrip(), file=sys.stderr)

    report = testing.run_conformance(target, tiers=args.tier, names=args.check, on_result=progress)
    if not report.results:
        raise _UsageError("no checks selected; see --tier and --check")
    say(report.summary())
    return OK if report.ok else FAILED


def _describe(url: str) -> dict[str, Any]:
    try:
        queue = open_url(url)
    except InvalidURL as exc:
        raise _UsageError(str(exc)) from None
    with queue:
        cls = type(queue)
        details: dict[str, Any] = {
            "backend": f"{cls.__module__}.{cls.__qualname__}",
            "url": parse_url(url).redacted(),
            "capabilities": dataclasses.asdict(queue.capabilities),
            "maxsize": queue.maxsize,
            "qsize": queue.qsize(),
        }
        extra = getattr(queue, "info", None)
        if callable(extra):
            details["info"] = dict(extra())
    return details


def cmd_info(args: argparse.Namespace, say: Say) -> int:
    details = _describe(args.url)
    if args.json:
        say(json.dumps(details, indent=2, default=str))
        return OK
    for key, value in details.items():
        if isinstance(value, dict):
            say(f"{key}:")
            for name, item in value.items():
                say(f"  {name}: {item}")
        else:
            say(f"{key}: {value}")
    return OK


def cmd_backends(say: Say) -> int:
    for scheme in registered_schemes():
        say(f"{scheme}://")
    return OK


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, e.g. one that calls queuekit.register_backend (repeatable)",
    )
    parser = argparse.ArgumentParser(
        prog="queuekit", description="One queue API, several transports."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conf = commands.add_parser(
        "conformance",
        parents=[common],
        help="check that a backend keeps the queue contract",
        description=f"Run the conformance suite against URL (needs {INSTALL_HINT}).",
    )
    conf.add_argument("url", metavar="URL", help="e.g. memory:// or mp://")
    conf.add_argument(
        "--tier", action="append", metavar="T", help="run only this tier (repeatable)"
    )
    conf.add_argument(
        "--check", action="append", metavar="NAME", help="run only this check (repeatable)"
    )
    conf.add_argument(
        "--profile",
        default="queuekit-ci",
        help="Hypothesis profile: queuekit-ci (default; the same examples every run) or "
        "queuekit-heavy (a longer, random search)",
    )
    conf.add_argument("--verbose", "-v", action="store_true", help="show failures' tracebacks")

    info = commands.add_parser("info", parents=[common], help="open a queue and describe it")
    info.add_argument("url", metavar="URL")
    info.add_argument("--json", action="store_true", help="print JSON")

    commands.add_parser("backends", parents=[common], help="list the URL schemes available")

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="measure transports against multiprocessing.Queue and the others",
        description="Throughput, latency, queue depth and a 3-stage pipeline for each URL, "
        "beside its baseline in the same run: multiprocessing.Queue (and faster-fifo when "
        "installed) for queues shared by processes, queue.Queue for queues in one process, "
        "raw redis-py for redis://. Needs the fork start method. Exit status 1 if a run lost, "
        "repeated or damaged an item, or crashed; a run that hung, or met a limit of its queue "
        "(full, item too large), is reported in the tables, not as a failure.",
    )
    _bench.add_arguments(bench)
    return parser


def cmd_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ._bench._command import run

    try:
        return run(args, argv)
    except _bench.UsageError as exc:
        raise _UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    url: str | None = getattr(args, "url", None)
    say = _sayer(_secret(url) if url else None)
    try:
        _import_modules(args.imports)
        if args.command == "backends":
            return cmd_backends(say)
        if args.command == "info":
            return cmd_info(args, say)
        if args.command == "bench":
            return cmd_bench(args, argv)
        return cmd_conformance(args, say)
    except _UsageError as exc:
        say(f"queuekit: error: {exc}", file=sys.stderr)
        return USAGE
    except QueueError as exc:
        say(f"queuekit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        say("queuekit: interrupted", file=sys.stderr)
        return 130
