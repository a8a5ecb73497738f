"""Hypothesis settings profiles for the conformance suite.

``queuekit-ci`` is derandomized and sized so a backend's whole suite runs in about a minute on
two cores: the same examples on every run, so CI is repeatable. ``queuekit-heavy`` explores
far more, with fresh randomness, for local runs before a release. Registering a profile loads
nothing: the suite passes the chosen profile to each check explicitly.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

__all__ = ["CI_PROFILE", "HEAVY_PROFILE", "PROFILES"]

CI_PROFILE = "queuekit-ci"
HEAVY_PROFILE = "queuekit-heavy"
PROFILES = (CI_PROFILE, HEAVY_PROFILE)

_slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    CI_PROFILE,
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    stateful_step_count=40,
    suppress_health_check=_slow_ok,
    print_blob=False,
)
settings.register_profile(
    HEAVY_PROFILE,
    deadline=None,
    max_examples=400,
    stateful_step_count=120,
    suppress_health_check=_slow_ok,
    print_blob=True,
)
