"""The ``bench`` command's options: all the command line needs before a benchmark runs, so
that every other ``queuekit`` command starts without importing the benchmarks."""

from __future__ import annotations

import argparse

DEFAULT_URLS = ("mp://", "pipe://?capacity=1MiB", "shm://", "memory://")
PLOT_HINT = "pip install 'queuekit[plot]'"


class UsageError(Exception):
    """The command line cannot be run as written."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        help="queues to measure (default: " + " ".join(DEFAULT_URLS) + ")",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this scenario or group (repeatable): single, 4x4, batches, sizes, "
        "latency, depth, idle, pipeline, or one of them by its full name (see --list)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes (about half a minute)")
    size.add_argument("--tiny", action="store_true", help="tiny sizes, one round: a smoke test")
    parser.add_argument("--repeat", type=int, metavar="N", help="rounds (default 3; --tiny 1)")
    parser.add_argument(
        "--redis", action="store_true", help="add redis:// on the server at 127.0.0.1:6379"
    )
    parser.add_argument("--redis-url", metavar="URL", help="add redis:// on this server")
    parser.add_argument(
        "--watchdog",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds after which a run is taken to hang and killed (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables here")
    parser.add_argument("--plot", metavar="FILE.png", help=f"also plot the ratios ({PLOT_HINT})")
    parser.add_argument(
        "--list", action="store_true", help="list the scenarios and targets, and run nothing"
    )
