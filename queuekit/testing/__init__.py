"""The conformance suite: checks that a backend keeps the :class:`queuekit.Queue` contract.

Three ways in, all running the same checks:

* ``queuekit conformance URL`` on the command line (``--import MODULE`` first imports a
  module that registers a backend);
* :func:`run_conformance` from Python, with a URL or a :class:`Target`;
* pytest: subclass :class:`QueueConformance` in a test module and provide a ``queue_url``
  fixture; each check becomes one test named after the property it checks.

Needs the ``test`` extra (pytest, hypothesis): ``pip install 'queuekit[test]'``.
"""

from __future__ import annotations

import sys

# Only the standard library and queuekit's core on import: a child process of the
# cross-process checks imports ._workers, and with it this package. Hypothesis comes with
# the checks, which load when CHECKS is first read or a run starts.
from ._checks import (
    CHECKS,
    CI_PROFILE,
    HEAVY_PROFILE,
    PROFILES,
    TIERS,
    Check,
    CheckResult,
    NotApplicable,
    QueueOpener,
    Report,
    Target,
    check,
    load_checks,
    run_check,
    run_conformance,
    target_for_url,
)

__all__ = [
    "CHECKS",
    "CI_PROFILE",
    "HEAVY_PROFILE",
    "PROFILES",
    "TIERS",
    "Check",
    "CheckResult",
    "NotApplicable",
    "QueueConformance",
    "QueueOpener",
    "Report",
    "Target",
    "check",
    "run_check",
    "run_conformance",
    "target_for_url",
]

_load_checks = load_checks  # what the CLI and the tests call
del load_checks

if "hypothesis" in sys.modules:
    # Loaded already, so registering queuekit's profiles costs nothing, and a test suite that
    # imports this package can load them by name (settings.load_profile("queuekit-ci")).
    from . import _profiles  # noqa: F401


def __getattr__(name: str) -> object:
    # The pytest class imports pytest; only those who ask for it pay for that.
    if name == "QueueConformance":
        from ._suite import QueueConformance

        return QueueConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
