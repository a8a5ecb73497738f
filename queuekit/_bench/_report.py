"""From samples to figures (median, range, ratios to the baseline), and the figures as a text
table, Markdown, JSON and a plot."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from dataclasses import dataclass
from typing import Any

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


def text(found: list[Row]) -> str:
    blocks = []
    for scenario, group in _by_scenario(found):
        table = [HEADER, *(_cells(r) for r in group)]
        widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
        lines = [
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in table
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        blocks.append("\n".join([_heading(scenario), *lines]))
    return "\n\n".join(blocks)


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


def markdown(found: list[Row], facts: dict[str, str], extra: list[str], plot: str | None) -> str:
    out = [
        "# Benchmark results",
        "",
        f"Generated by `{facts['command']}`. Each figure is the median of interleaved runs, with "
        "its range; `x base` divides it by the median of its family's baseline (the row marked "
        "`base`: `multiprocessing.Queue`, or `JoinableQueue` for the pipeline, for queues shared "
        "by processes; `queue.Queue` for queues in one process; raw redis-py for Redis), and "
        "`paired` is the median of each run over the baseline's run in the same round.",
        "",
    ]
    if plot:
        out += [f"![ratios to the baselines]({plot})", ""]
    for scenario, group in _by_scenario(found):
        out += [f"## {_heading(scenario)}", ""]
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|---|---|" + "---:|" * (len(HEADER) - 2))
        out += ["| " + " | ".join(_cells(r)) + " |" for r in group]
        out.append("")
    lines = notes(found) + extra
    if lines:
        out += ["## Notes", "", *(f"- {line}" for line in lines), ""]
    out += ["## Machine", "", *(f"- {key}: {value}" for key, value in facts.items()), ""]
    return "\n".join(out)


def as_json(found: list[Row], facts: dict[str, str], extra: list[str], sizes: Any) -> Any:
    return {
        "schema": SCHEMA,
        "machine": facts,
        "sizes": dict(vars(sizes)),
        "notes": notes(found) + extra,
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
