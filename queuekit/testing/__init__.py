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

import importlib

from ._checks import (
    CHECKS,
    TIERS,
    Check,
    CheckResult,
    NotApplicable,
    QueueOpener,
    Report,
    Target,
    check,
    run_check,
    run_conformance,
    target_for_url,
)
from ._profiles import CI_PROFILE, HEAVY_PROFILE, PROFILES

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

_CHECK_MODULES = ("_core", "_batch", "_blocking", "_lifecycle", "_crossproc")


def _load_checks() -> None:
    """Import the modules whose checks register themselves (once)."""
    for name in _CHECK_MODULES:
        importlib.import_module(f"{__name__}.{name}")


_load_checks()


def __getattr__(name: str) -> object:
    # The pytest class imports pytest; only those who ask for it pay for that.
    if name == "QueueConformance":
        from ._suite import QueueConformance

        return QueueConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
