"""From samples to figures (median, range, ratios to the baseline), and the figures as a text
table, Markdown, JSON and a plot."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from dataclasses import dataclass
from typing import Any

from ._goals import Verdict, describe
from ._harness import HUNG, Cell

SCHEMA = 1


@dataclass(frozen=True)
class Row:
    """One figure of one scenario on one target, over the rounds."""

    cell: Cell
    metric: str
    values: tuple[float | None, ...]
    """Per round; ``None`` where the run gave no figure."""
    baseline: Row | None

    @property
    def numbers(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def status(self) -> str:
        why = self.message
        if why is None:
            return "ok"
        return "hung" if why == HUNG else "error" if why.startswith("error") else "limit"

    @property
    def message(self) -> str | None:
        """Why a run gave no figure (the first such run), or ``None``."""
        return next((s for s in self.cell.samples if isinstance(s, str)), None)

    @property
    def median(self) -> float | None:
        return statistics.median(self.numbers) if self.numbers else None

    @property
    def ratio(self) -> float | None:
        """This median over the baseline's."""
        base = self.baseline.median if self.baseline else None
        return self.median / base if self.median is not None and base else None

    @property
    def paired(self) -> float | None:
        """The median over rounds of this run over the baseline's run in the same round,
        which a burst of load lasting a round sways less than the ratio of medians."""
        if self.baseline is None:
            return None
        pairs = [
            a / b
            for a, b in zip(self.values, self.baseline.values, strict=True)
            if a is not None and b
        ]
        return statistics.median(pairs) if pairs else None


def rows(cells: list[Cell]) -> list[Row]:
    """A row per figure; baselines first within each scenario and family."""
    out: list[Row] = []
    bases: dict[tuple[str, str, str], Row] = {}
    ordered = sorted(cells, key=lambda c: not c.target.baseline)  # stable: the order otherwise
    for cell in ordered:
        for metric in cell.scenario.metrics:
            values = tuple(s.get(metric) if isinstance(s, dict) else None for s in cell.samples)
            key = (cell.scenario.name, cell.target.family, metric)
            base = bases.get(key)
            row = Row(cell, metric, values, None if cell.target.baseline else base)
            if cell.target.baseline and key not in bases:
                bases[key] = row
            out.append(row)
    names = [c.scenario.name for c in cells]
    families = list(dict.fromkeys(c.target.family for c in cells))
    return sorted(
        out,
        key=lambda r: (
            names.index(r.cell.scenario.name),
            families.index(r.cell.target.family),
            not r.cell.target.baseline,
        ),
    )


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


HEADER = ["target", "figure", "median", "x base", "paired", "min", "max", "runs"]


def _cells(row: Row) -> list[str]:
    ok = row.numbers
    median = _num(row.median) if ok else row.status
    base = "base" if row.cell.target.baseline else _x(row.ratio)
    runs = f"{len(ok)}/{len(row.values)}"
    extent = [_num(min(ok)), _num(max(ok))] if ok else ["-", "-"]
    return [row.cell.target.name, row.metric, median, base, _x(row.paired), *extent, runs]


def _by_scenario(found: list[Row]) -> list[tuple[Any, list[Row]]]:
    groups: dict[str, tuple[Any, list[Row]]] = {}
    for row in found:
        groups.setdefault(row.cell.scenario.name, (row.cell.scenario, []))[1].append(row)
    return list(groups.values())


def _heading(scenario: Any) -> str:
    better = "lower" if scenario.lower_is_better else "higher"
    return f"{scenario.name}: {scenario.title} ({better} is better)"


def notes(found: list[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in found:
        if row.message and row.message != HUNG:
            seen[f"{row.cell.scenario.name}, {row.cell.target.name}: {row.message}"] = None
        elif row.message == HUNG:
            seen[
                f"{row.cell.scenario.name}, {row.cell.target.name}: hung (killed by the watchdog)"
            ] = None
    return list(seen)


def _layout(table: list[list[str]], right: range) -> list[str]:
    """Columns padded to their widths; those in ``right`` flush right."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def text(found: list[Row], verdicts: list[Verdict]) -> str:
    blocks = [
        "\n".join(
            [_heading(scenario), *_layout([HEADER, *(_cells(r) for r in group)], range(2, 8))]
        )
        for scenario, group in _by_scenario(found)
    ]
    if verdicts:
        table = [GOAL_HEADER, *(_goal_cells(v) for v in verdicts)]
        blocks.append("\n".join(["targets set by the issues", *_layout(table, range(4, 6))]))
    return "\n\n".join(blocks)


GOAL_HEADER = ["issue", "queue", "scenario", "target", "median", "paired", "verdict"]


def _goal_cells(v: Verdict) -> list[str]:
    shown = _num if v.goal.baseline is None else _x
    return [
        f"#{v.goal.issue}",
        v.target,
        v.goal.scenario,
        describe(v.goal, v.metric),
        shown(v.median),
        shown(v.paired),
        v.outcome,
    ]


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": f"{platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _md_table(header: list[str], right: range, body: list[list[str]]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    return [f"| {' | '.join(line)} |" for line in (header, align, *body)]


def sections(
    found: list[Row],
    verdicts: list[Verdict],
    facts: dict[str, str],
    extra: list[str],
    plot: str | None,
    level: int,
) -> str:
    """The figures as Markdown, with headings at ``level``: all that ``--markdown`` writes
    between the markers of a document, and under the title of a document of its own."""
    h = "#" * level
    out = [
        f"Generated by `{facts['command']}` on {facts['date']}. Each figure is the median of "
        "interleaved runs, with its range; `x base` divides it by the median of its family's "
        "baseline (the row marked `base`: `multiprocessing.Queue`, or `JoinableQueue` for the "
        "pipeline, for queues shared by processes; `queue.Queue` for queues in one process; raw "
        "redis-py for Redis), and `paired` is the median of each run over the baseline's run in "
        "the same round.",
        "",
    ]
    if plot:
        out += [f"![ratios to the baselines]({plot})", ""]
    if verdicts:
        out += [
            f"{h} Targets set by the issues",
            "",
            "Each target as the issue states it, judged on the ratio of medians and on the "
            "paired ratio; a cost is the baseline's rate over the queue's.",
            "",
            *_md_table(GOAL_HEADER, range(4, 6), [_goal_cells(v) for v in verdicts]),
            "",
        ]
    for scenario, group in _by_scenario(found):
        out += [f"{h} {_heading(scenario)}", ""]
        out += [*_md_table(HEADER, range(2, 8), [_cells(r) for r in group]), ""]
    lines = notes(found) + extra
    if lines:
        out += [f"{h} Notes", "", *(f"- {line}" for line in lines), ""]
    out += [f"{h} Machine", "", *(f"- {key}: {value}" for key, value in facts.items()), ""]
    return "\n".join(out)


def markdown(
    found: list[Row],
    verdicts: list[Verdict],
    facts: dict[str, str],
    extra: list[str],
    plot: str | None,
) -> str:
    return "# Benchmark results\n\n" + sections(found, verdicts, facts, extra, plot, 2)


def as_json(
    found: list[Row], verdicts: list[Verdict], facts: dict[str, str], extra: list[str], sizes: Any
) -> Any:
    return {
        "schema": SCHEMA,
        "machine": facts,
        "sizes": dict(vars(sizes)),
        "notes": notes(found) + extra,
        "targets": [
            {
                "issue": v.goal.issue,
                "scenario": v.goal.scenario,
                "target": v.target,
                "goal": describe(v.goal, v.metric),
                "comparison": v.goal.comparison,
                "threshold": v.goal.threshold,
                "baseline": v.goal.baseline,
                "median": v.median,
                "paired": v.paired,
                "verdict": v.outcome,
            }
            for v in verdicts
        ],
        "results": [
            {
                "scenario": r.cell.scenario.name,
                "group": r.cell.scenario.group,
                "title": r.cell.scenario.title,
                "target": r.cell.target.name,
                "family": r.cell.target.family,
                "is_baseline": r.cell.target.baseline,
                "metric": r.metric,
                "lower_is_better": r.cell.scenario.lower_is_better,
                "status": r.status,
                "message": r.message,
                "values": list(r.values),
                "median": r.median,
                "min": min(r.numbers) if r.numbers else None,
                "max": max(r.numbers) if r.numbers else None,
                "baseline": r.baseline.cell.target.name if r.baseline else None,
                "ratio": r.ratio,
                "paired_ratio": r.paired,
            }
            for r in found
        ],
    }


def plot(found: list[Row], path: str) -> None:
    """Each figure as times its baseline's, higher is better (latency and depth costs are
    inverted); ``ImportError`` without matplotlib."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    shown = [r for r in found if r.ratio and not r.cell.target.baseline]
    groups = list(dict.fromkeys(f"{r.cell.scenario.name} {r.metric}" for r in shown))
    targets = list(dict.fromkeys(r.cell.target.name for r in shown))
    fig, ax = plt.subplots(figsize=(max(8.0, len(groups) * 0.9), 5.0))
    width = 0.8 / max(1, len(targets))
    for t, name in enumerate(targets):
        xs, ys = [], []
        for r in shown:
            if r.cell.target.name == name and r.ratio:
                xs.append(groups.index(f"{r.cell.scenario.name} {r.metric}") + t * width)
                ys.append(1 / r.ratio if r.cell.scenario.lower_is_better else r.ratio)
        ax.bar(xs, ys, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(groups))], groups, rotation=45, ha="right"
    )
    ax.set_ylabel("times the baseline (higher is better)")
    ax.set_title("each figure over its baseline's: multiprocessing.Queue, queue.Queue, redis-py")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
