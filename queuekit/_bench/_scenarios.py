"""The scenarios, and the sizes they run at (``default``, ``quick``, ``tiny``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from . import _measure as m
from ._harness import Figures
from ._targets import Target


@dataclass(frozen=True)
class Sizes:
    items: int
    """Items per 1 producer -> 1 consumer run of single calls."""
    batched: int
    """Items per run of batches: enough batches of 1000 that filling the pipeline at the
    start (the first batch is pickled whole before any of it moves) does not set the rate."""
    many: int
    """Items per 4 x 4 run, in all."""
    sized: tuple[tuple[int, int], ...]
    """(bytes per item, items per run)."""
    latency: int
    depths: tuple[int, ...]
    window: int
    pipeline: int
    pipeline_watchdog: float
    idle: float
    """Seconds a get waits on an empty queue."""
    repeat: int


PRESETS = {
    "default": Sizes(
        items=50_000,
        batched=200_000,
        many=20_000,
        sized=((64, 20_000), (4096, 10_000), (64 * 1024, 2_000), (m.MiB, 400)),
        latency=200,
        depths=(10_000, 100_000, 1_000_000),
        window=5_000,
        pipeline=1_000,
        pipeline_watchdog=5.0,
        idle=1.0,
        repeat=3,
    ),
    "quick": Sizes(
        items=20_000,
        batched=50_000,
        many=10_000,
        sized=((64, 10_000), (4096, 5_000), (64 * 1024, 500), (m.MiB, 40)),
        latency=100,
        depths=(10_000, 100_000),
        window=2_000,
        pipeline=1_000,
        pipeline_watchdog=5.0,
        idle=0.5,
        repeat=3,
    ),
    "tiny": Sizes(
        items=500,
        batched=2_000,
        many=400,
        sized=((64, 200), (m.MiB, 4)),
        latency=20,
        depths=(1_000, 2_000),
        window=200,
        pipeline=400,
        pipeline_watchdog=5.0,
        idle=0.2,
        repeat=1,
    ),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str
    """What ``--scenario`` also accepts to select this one with its siblings."""
    title: str
    metrics: tuple[str, ...]
    """Figures by name; each name ends in its unit."""
    measure: Callable[..., Figures]
    lower_is_better: bool = False
    needs_tasks: bool = False
    """Only for queues with task_done/join (the pipeline)."""
    watchdog: float | None = None

    def bind(self, target: Target) -> Callable[[], Figures]:
        return functools.partial(self.measure, target)

    def applies_to(self, target: Target) -> bool:
        if target.only is not None:
            return target.only == self.name
        return target.tasks or not self.needs_tasks


def _count(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, scale in (("MiB", m.MiB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def scenarios(sizes: Sizes) -> list[Scenario]:
    found = [
        Scenario(
            "single",
            "single",
            f"1 producer -> 1 consumer, put/get, {sizes.items:,} small items (58 bytes pickled)",
            ("msg/s",),
            functools.partial(m.stream, n=sizes.items),
        ),
        Scenario(
            "4x4",
            "4x4",
            f"4 producers x 4 consumers, put/get, {sizes.many:,} small items in all",
            ("msg/s",),
            functools.partial(m.many, n=sizes.many),
        ),
    ]
    for batch in (100, 1000):
        found.append(
            Scenario(
                f"batch-{batch}",
                "batches",
                f"1 -> 1, put_many/get_many of {batch} ({sizes.batched:,} small items; single "
                "calls where a queue has no batch calls)",
                ("msg/s",),
                functools.partial(m.stream, n=sizes.batched, batch=batch),
            )
        )
    for size, n in sizes.sized:
        found.append(
            Scenario(
                f"size-{_bytes(size)}",
                "sizes",
                f"1 -> 1, put/get, {n:,} items of {size:,} bytes each",
                ("MiB/s",),
                functools.partial(m.stream, n=n, size=size),
            )
        )
    found.append(
        Scenario(
            "latency",
            "latency",
            f"put -> get wake-up: a get blocked in another process (thread, for in-process "
            f"queues), {sizes.latency} times",
            ("p50 us", "p99 us"),
            functools.partial(m.latency, n=sizes.latency),
            lower_is_better=True,
        )
    )
    for d in sizes.depths:
        found.append(
            Scenario(
                f"depth-{_count(d)}",
                "depth",
                f"one process: fill to {d:,} small items, then {sizes.window:,} get+put pairs",
                ("us/item",),
                functools.partial(m.depth, items=d, window=sizes.window),
                lower_is_better=True,
            )
        )
    found.append(
        Scenario(
            "idle",
            "idle",
            f"a get blocked {sizes.idle:g} s on an empty queue, in another process (thread, for "
            "in-process queues): the CPU its process used, in % of one core",
            ("% of a core",),
            functools.partial(m.idle, seconds=sizes.idle),
            lower_is_better=True,
        )
    )
    found.append(
        Scenario(
            "pipeline",
            "pipeline",
            f"3 stages of 2 processes (threads, for in-process queues), {sizes.pipeline:,} items "
            f"of {m.PAYLOAD} B; each group joined before the queue it feeds is drained",
            ("msg/s",),
            functools.partial(m.pipeline, n=sizes.pipeline),
            needs_tasks=True,
            watchdog=sizes.pipeline_watchdog,
        )
    )
    return found


def select(found: list[Scenario], names: list[str]) -> list[Scenario]:
    """The scenarios named, or in the groups named; ``ValueError`` for an unknown name."""
    known = {s.name for s in found} | {s.group for s in found}
    for name in names:
        if name not in known:
            raise ValueError(f"no scenario {name!r}; choose from {', '.join(sorted(known))}")
    return [s for s in found if not names or s.name in names or s.group in names]
