"""Running measurements: each run in a process group of its own under a watchdog, the runs in
interleaved rounds, and the workers of one run (processes, or threads for in-process queues).

A run is forked from the command's process, which starts no thread, and makes itself the
leader of a new process group; every worker it forks joins that group. Whatever the run does,
the group is killed once it has reported or its watchdog has expired, so a hang costs the
watchdog's time and nothing more, and nothing a run started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from .._errors import MessageTooLarge
from ._targets import CTX

Figures = dict[str, float]
Sample = Figures | str
"""A run's figures by metric, or why it has none: ``"hung"``, ``"error: ..."``, or a limit of
the queue reached (``"full after N items"``)."""

HUNG = "hung"


class Unmeasured(Exception):
    """The queue cannot do what the scenario asks (it is full, an item is too large): a fact
    about the queue, reported as it is rather than as an error."""


# --- One run --------------------------------------------------------------------------------


def _supervise(measure: Callable[[], Figures], out: Any) -> None:
    os.setpgid(0, 0)
    result: Sample
    try:
        result = measure()
    except Unmeasured as exc:
        result = str(exc)
    except BaseException as exc:
        result = f"error: {type(exc).__name__}: {exc}"
    try:
        out.send(result)
    finally:
        os._exit(0)  # no exit handlers: a queue's feeder thread must not hold the run open


def isolated(measure: Callable[[], Figures], watchdog: float) -> Sample:
    """``measure()`` in a new process group, killed with all it started after ``watchdog``
    seconds (``"hung"``) or as soon as it has reported."""
    receive, send = CTX.Pipe(duplex=False)
    run = CTX.Process(target=_supervise, args=(measure, send), name="queuekit-bench-run")
    run.start()
    send.close()  # the run holds the only writer: its death is an EOF here
    with contextlib.suppress(OSError):
        os.setpgid(run.pid, run.pid)  # the child does it too; whichever comes first
    try:
        if not receive.poll(watchdog):
            return HUNG
        try:
            result: Sample = receive.recv()
        except EOFError:
            run.join()
            return f"error: the run exited with status {run.exitcode} before reporting"
        return result
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGKILL)
        run.kill()
        run.join()
        receive.close()


# --- The workers of a run -------------------------------------------------------------------


def _work(role: str, fn: Callable[..., Any], out: Any, args: tuple[Any, ...]) -> None:
    try:
        out.put((role, "ok", fn(*args)))
    except (Unmeasured, MessageTooLarge, queue.Full) as exc:
        out.put((role, "limit", f"{role}: {type(exc).__name__}: {exc}"))
    except BaseException as exc:
        out.put((role, "error", f"{role}: {type(exc).__name__}: {exc}"))


class Crew:
    """The workers of one run: forked processes, or threads when the queue lives in one
    process. Each worker reports what its function returned, or what it raised."""

    def __init__(self, threads: bool) -> None:
        self.threads = threads
        self._out: Any = queue.SimpleQueue() if threads else CTX.SimpleQueue()
        self._members: dict[str, list[Any]] = {}
        self._reports: dict[str, list[Any]] = {}

    def channel(self) -> Any:
        return queue.SimpleQueue() if self.threads else CTX.SimpleQueue()

    def barrier(self, parties: int) -> Any:
        return threading.Barrier(parties) if self.threads else CTX.Barrier(parties)

    def start(self, role: str, fn: Callable[..., Any], *args: Any) -> None:
        worker: Any
        if self.threads:
            worker = threading.Thread(target=_work, args=(role, fn, self._out, args), daemon=True)
        else:
            worker = CTX.Process(target=_work, args=(role, fn, self._out, args), daemon=True)
        worker.start()
        self._members.setdefault(role, []).append(worker)

    def join(self, role: str) -> list[Any]:
        """Wait until every worker in ``role`` has exited (the watchdog bounds the wait); what
        they returned. Raises as soon as a worker of any role reports a failure."""
        members = self._members.pop(role)
        if self.threads:  # a thread's report is its last act
            while len(self._reports.get(role, ())) < len(members):
                self._take(self._out.get())
        else:
            reader = self._out._reader  # readable when a report is waiting
            while alive := [w.sentinel for w in members if w.exitcode is None]:
                wait([*alive, reader])
                self._drain()
        self._drain()
        values = self._reports.pop(role, [])
        if len(values) != len(members):
            codes = [getattr(w, "exitcode", None) for w in members]
            raise RuntimeError(f"{role}: {len(values)} of {len(members)} reported (exit {codes})")
        return values

    def _drain(self) -> None:
        while not self._out.empty():
            self._take(self._out.get())

    def _take(self, report: tuple[str, str, Any]) -> None:
        who, outcome, value = report
        if outcome == "limit":
            raise Unmeasured(value)
        if outcome == "error":
            raise RuntimeError(value)
        self._reports.setdefault(who, []).append(value)


# --- Rounds ---------------------------------------------------------------------------------


@dataclass
class Cell:
    """One scenario on one target, with a sample per round (``None``: not run that round)."""

    scenario: Any
    target: Any
    samples: list[Sample | None] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(isinstance(s, str) for s in self.samples)


Progress = Callable[[int, int, Cell], None]


def run_rounds(cells: list[Cell], repeat: int, watchdog: float, progress: Progress) -> None:
    """``repeat`` rounds over every cell; each round starts at another point of the list, so
    that no target always runs first, and a burst of load on a shared machine hits every target
    alike. A cell that hung or failed is not run again: it would only hang or fail again."""
    done, total = 0, repeat * len(cells)
    for rnd in range(repeat):
        turn = rnd * len(cells) // repeat
        for cell in cells[turn:] + cells[:turn]:
            progress(done, total, cell)
            if cell.failed:
                cell.samples.append(None)
            else:
                limit = min(watchdog, cell.scenario.watchdog or watchdog)
                cell.samples.append(isolated(cell.scenario.bind(cell.target), limit))
            done += 1
    if cells:
        progress(done, total, cells[0])
