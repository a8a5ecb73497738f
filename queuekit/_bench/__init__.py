"""``queuekit bench``: throughput, latency, depth and the pipeline, each transport beside the
queue users would otherwise use, measured in the same run.

- ``_targets``: what is measured (queuekit URLs, ``multiprocessing`` and ``queue`` queues,
  faster-fifo, raw redis-py), and each one's calls.
- ``_harness``: every run in a process group of its own under a watchdog; interleaved rounds;
  the workers of a run.
- ``_measure``: the measurements; ``_scenarios``: the scenarios and their sizes.
- ``_report``: medians, ranges and ratios; text, Markdown, JSON and a plot.
- ``_goals``: the targets the issues set, and whether a run met them.
- ``_document``: ``--markdown`` into a file of its own, or between the markers of one.
- ``_options``: the command's options (all that ``queuekit`` imports until ``bench`` runs);
  ``_command``: putting it together.

Imports only the standard library and queuekit's core; faster-fifo, redis-py and matplotlib
only when they are used.
"""

from __future__ import annotations

from ._options import UsageError, add_arguments

__all__ = ["UsageError", "add_arguments"]
