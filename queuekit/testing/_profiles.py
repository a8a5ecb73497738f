"""Hypothesis settings profiles for the conformance suite.

``queuekit-ci`` is derandomized and sized so a backend's whole suite runs in about a minute on
two cores: the same examples on every run, so CI is repeatable. It does not shrink: against a
broken backend a shrink step can wait out a watchdog many times over, and each check's first
failure already names the property and the queue's state. ``queuekit-heavy`` explores far
more, with fresh randomness, and shrinks failures to a minimal example, for local runs.
Registering a profile loads nothing: the suite passes the chosen profile to each check. The
names live in ``_checks`` so that importing the package needs no hypothesis; this module is
imported when hypothesis is (by ``queuekit.testing``, the checks, or ``profile()``).
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

from ._checks import CI_PROFILE, HEAVY_PROFILE, PROFILES

__all__ = ["CI_PROFILE", "HEAVY_PROFILE", "PROFILES"]


_slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    CI_PROFILE,
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    stateful_step_count=40,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=_slow_ok,
    print_blob=False,
)
settings.register_profile(
    HEAVY_PROFILE,
    deadline=None,
    max_examples=400,
    stateful_step_count=120,
    report_multiple_bugs=False,
    suppress_health_check=_slow_ok,
    print_blob=True,
)
