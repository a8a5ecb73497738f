"""The ``bench`` subcommand: the targets and scenarios its options choose, the run, and
where its figures go."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Sequence

from .._errors import BackendUnavailable, InvalidURL
from .._registry import open as open_url
from .._urls import QueueURL, parse_url
from . import _document, _goals, _report, _scenarios, _targets
from ._harness import Cell, run_rounds
from ._options import DEFAULT_URLS, PLOT_HINT, UsageError


def _family(url: str) -> str:
    """Opens ``url`` once: a URL that cannot be opened fails here, before any measurement."""
    try:
        with open_url(url) as q:
            cross = q.capabilities.cross_process
    except InvalidURL as exc:
        raise UsageError(str(exc)) from None
    return _targets.PROCESS if cross else _targets.THREAD


def _targets_for(args: argparse.Namespace) -> tuple[list[_targets.Target], list[str]]:
    found, notes = [], []
    redis_url = args.redis_url
    for url in args.urls or DEFAULT_URLS:
        if _parsed(url).scheme in _targets.REDIS_SCHEMES:
            if redis_url not in (None, url):
                shown = [parse_url(u).redacted() for u in (url, redis_url)]
                raise UsageError(f"one Redis server at a time, not {shown[0]} and {shown[1]}")
            redis_url = url
            continue
        try:
            found.append(_targets.queuekit_target(url, _family(url)))
        except BackendUnavailable as exc:
            if args.urls:
                raise
            notes.append(f"{url}: not measured: {exc}")
    families = {t.family for t in found}
    baselines = [t for t in _targets.stdlib_targets() if t.family in families]
    if _targets.PROCESS in families:
        fifo = _targets.faster_fifo_target()
        if fifo:
            baselines.append(fifo)
        else:
            notes.append("faster-fifo: not measured: not installed (pip install faster-fifo)")
    try:
        redis, redis_notes = _targets.redis_targets(redis_url, args.redis)
    except InvalidURL as exc:
        raise UsageError(str(exc)) from None
    return baselines + found + redis, notes + redis_notes


def _parsed(url: str) -> QueueURL:
    try:
        return parse_url(url)
    except InvalidURL as exc:
        raise UsageError(str(exc)) from None


def _command_line(argv: Sequence[str]) -> str:
    """The command as typed, with ``***`` for any URL's password (``--opt=URL`` too)."""
    shown = []
    for word in argv:
        option, equals, value = word.partition("=") if word.startswith("-") else ("", "", word)
        if not equals:
            option, value = "", word
        if "://" in value:
            with contextlib.suppress(InvalidURL):
                value = parse_url(value).redacted()
        shown.append(option + equals + value)
    return shlex.join(["queuekit", *shown])


def _share_resource_tracker() -> None:
    """Start multiprocessing's resource tracker here, once, so that runs share it rather than
    each starting its own. Runs are killed as soon as they report, so it always finds their
    semaphores left behind: it unlinks them, and its warning that it did is noise here."""
    from multiprocessing import resource_tracker

    sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.pop()


class _Progress:
    """A bar, the count and the run in hand, on stderr, rewritten in place; only on a
    terminal."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.width = 0

    def __call__(self, done: int, total: int, cell: Cell) -> None:
        if not self.on:
            return
        filled = 20 * done // max(1, total)
        line = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{total} {cell.scenario.name}, "
        line += cell.target.name
        if done == total:
            line = ""
        sys.stderr.write("\r" + line.ljust(self.width) + ("\r" if not line else ""))
        sys.stderr.flush()
        self.width = max(self.width, len(line))


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Exit status 0, or 1 if a run failed (lost or damaged an item, or crashed); a run that
    hung or met a limit of its queue is a finding, not a failure."""
    if "fork" not in multiprocessing.get_all_start_methods():
        raise UsageError("queuekit bench needs the fork start method (Linux or macOS)")
    preset = "tiny" if args.tiny else "quick" if args.quick else "default"
    sizes = _scenarios.PRESETS[preset]
    repeat = sizes.repeat if args.repeat is None else args.repeat
    if repeat < 1 or args.watchdog <= 0:
        raise UsageError("--repeat must be at least 1, and --watchdog more than 0 seconds")
    sizes = dataclasses.replace(sizes, repeat=repeat)  # as run, for the JSON
    for path in (args.markdown, args.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UsageError(f"{path}: no such directory; create it first")
    if args.markdown:
        _document.check(args.markdown)
    try:
        chosen = _scenarios.select(_scenarios.scenarios(sizes), args.scenario)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _share_resource_tracker()  # before the first queue is opened, by _targets_for
    targets, notes = _targets_for(args)
    try:
        return _run(
            args,
            argv,
            [Cell(s, t) for s in chosen for t in targets if s.applies_to(t)],
            notes,
            sizes,
            preset,
        )
    finally:
        for t in targets:
            if t.cleanup:
                t.cleanup()


def _run(
    args: argparse.Namespace,
    argv: Sequence[str],
    cells: list[Cell],
    notes: list[str],
    sizes: _scenarios.Sizes,
    preset: str,
) -> int:
    if args.list:
        for name, title in dict.fromkeys((c.scenario.name, c.scenario.title) for c in cells):
            print(f"{name:12} {title}")
        for target in dict.fromkeys(c.target for c in cells):
            print(f"{target.family:10} {target.name}{' (baseline)' if target.baseline else ''}")
        return 0
    facts = _report.machine()
    facts["command"] = _command_line(argv)
    facts["rounds"] = f"{sizes.repeat}, interleaved; sizes {preset}; start method fork"
    start, load = time.monotonic(), _report.load()
    run_rounds(cells, sizes.repeat, args.watchdog, _Progress())
    facts["took"] = f"{time.monotonic() - start:.0f} s"
    facts["load average"] = f"{load} at the start, {_report.load()} at the end (1 minute)"
    found = _report.rows(cells)
    verdicts = _goals.assess(found)
    if args.json:
        print(json.dumps(_report.as_json(found, verdicts, facts, notes, sizes), indent=2))
    else:
        print(_report.text(found, verdicts))
        lines = _report.notes(found) + notes
        print("\n".join(["", "notes:", *(f"  {line}" for line in lines)]) if lines else "")
        print(f"{facts['took']} on {facts['cores']} cores; {facts['rounds']}")
    plotted = None
    if args.plot:
        try:
            _report.plot(found, args.plot)
            plotted = args.plot
        except ImportError:
            print(f"queuekit bench: --plot needs matplotlib: {PLOT_HINT}", file=sys.stderr)
    if args.markdown:
        if plotted:  # the image's path as seen from the Markdown file
            plotted = os.path.relpath(
                os.path.abspath(plotted), os.path.dirname(os.path.abspath(args.markdown))
            )
        _document.write(
            args.markdown,
            _report.markdown(found, verdicts, facts, notes, plotted),
            functools.partial(_report.sections, found, verdicts, facts, notes, plotted),
        )
    return 1 if any(r.status == "error" for r in found) else 0
