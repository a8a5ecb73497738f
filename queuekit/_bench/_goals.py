"""The targets the issues set for figures of ``queuekit bench``, and whether a run met them.

A target is a ratio to a baseline measured in the same run, or a limit on the figure itself.
Ratios are judged twice, as the ratio of medians and as the paired ratio (``_report.Row``): on a
shared machine the two can fall on either side of a threshold, and the verdict says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._targets import MP_QUEUE, RAW_REDIS, REDIS

AT_LEAST, COST_AT_MOST, AT_MOST = "at least", "cost at most", "at most"
"""Comparisons: the figure's ratio to the baseline's; the baseline's over the figure (a cost
where the figure is a rate); the figure itself."""


@dataclass(frozen=True)
class Goal:
    issue: int
    scenario: str
    scheme: str
    """Of the queue's URL; ``redis`` stands for every way to reach Redis."""
    baseline: str | None
    """The baseline's name, in the same scenario; ``None``: a limit on the figure itself."""
    comparison: str
    threshold: float


# multiprocessing.Queue has no batch calls, so its runs in the batch scenarios are its single
# put/get on the same items: the baseline that the batch targets name.
GOALS = (
    Goal(3, "single", "pipe", MP_QUEUE, AT_LEAST, 1.0),
    Goal(3, "batch-100", "pipe", MP_QUEUE, AT_LEAST, 4.0),
    Goal(3, "batch-1000", "pipe", MP_QUEUE, AT_LEAST, 4.0),
    Goal(4, "single", "shm", MP_QUEUE, AT_LEAST, 2.0),
    Goal(4, "batch-100", "shm", MP_QUEUE, AT_LEAST, 8.0),
    Goal(4, "batch-1000", "shm", MP_QUEUE, AT_LEAST, 8.0),
    Goal(4, "4x4", "shm", MP_QUEUE, AT_LEAST, 3.0),
    Goal(4, "size-1MiB", "shm", MP_QUEUE, AT_LEAST, 2.0),
    Goal(4, "idle", "shm", None, AT_MOST, 1.0),
    Goal(5, "single", "redis", RAW_REDIS, COST_AT_MOST, 1.25),
    Goal(5, "batch-100", "redis", RAW_REDIS, AT_LEAST, 0.5),
    Goal(5, "batch-1000", "redis", RAW_REDIS, AT_LEAST, 0.5),
)
"""Issue 5's acknowledged get+task_done against raw BLMOVE+LREM is measured by
benchmarks/redis.py, not here."""


@dataclass(frozen=True)
class Verdict:
    goal: Goal
    target: str
    metric: str
    median: float | None
    """The ratio of medians as the goal counts it (inverted for a cost), or the median itself
    for a limit on the figure."""
    paired: float | None
    outcome: str


def describe(goal: Goal, metric: str) -> str:
    if goal.baseline is None:
        return f"{goal.comparison} {goal.threshold:g} {metric}"
    return f"{goal.comparison} {goal.threshold:g}x {goal.baseline}"


def _scheme(target: Any) -> str | None:
    if target.family == REDIS:
        return "redis"
    name: str = target.name
    return name.partition("://")[0] if "://" in name else None


def _meets(goal: Goal, value: float) -> bool:
    return value >= goal.threshold if goal.comparison == AT_LEAST else value <= goal.threshold


def _outcome(goal: Goal, median: float | None, paired: float | None) -> str:
    if median is None:  # a baseline of 0
        return "no ratio"
    if paired is None or _meets(goal, median) == _meets(goal, paired):
        return "met" if _meets(goal, median) else "not met"
    return "met by the paired ratio only" if _meets(goal, paired) else "met by the medians only"


def assess(found: list[Any]) -> list[Verdict]:
    """A verdict for every goal and every queue of its scheme among ``found`` (``_report``'s
    rows), in the order of ``GOALS``; goals on scenarios or queues not run are left out."""
    rows = {(r.cell.scenario.name, r.cell.target.name): r for r in found}
    verdicts = []
    for goal in GOALS:
        for row in found:
            target = row.cell.target
            if (
                row.cell.scenario.name != goal.scenario
                or target.baseline
                or _scheme(target) != goal.scheme
            ):
                continue
            base = rows.get((goal.scenario, goal.baseline)) if goal.baseline else None
            median, paired = row.median, None
            if goal.baseline:
                judged = dataclasses.replace(row, baseline=base)
                median, paired = judged.ratio, judged.paired
                if goal.comparison == COST_AT_MOST:
                    median, paired = (1 / v if v else None for v in (median, paired))
            if row.median is None:
                outcome = f"no figure: {row.status}"
            elif goal.baseline and (base is None or base.median is None):
                outcome = f"no figure for {goal.baseline}: {base.status if base else 'not run'}"
            else:
                outcome = _outcome(goal, median, paired)
                if row.status != "ok":
                    outcome += f" ({row.status} in some runs)"
            verdicts.append(Verdict(goal, target.name, row.metric, median, paired, outcome))
    return verdicts
