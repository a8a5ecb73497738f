"""The conformance suite as a pytest class, for third parties' own test suites."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import settings as Settings

from ._checks import CHECKS, CI_PROFILE, Check, NotApplicable, Target, load_checks, target_for_url

__all__ = ["QueueConformance"]

load_checks()


class QueueConformance:
    """Subclass this in a test module and give it a ``queue_url`` fixture.

    Every check becomes one test, ``test_conformance[tier/property]``. To test a backend that
    has no URL, override the ``queue_target`` fixture to return a :class:`Target` built from a
    function that opens fresh queues. ``--queuekit-profile`` chooses the Hypothesis profile
    (``queuekit-ci`` by default, ``queuekit-heavy`` for a longer search).
    """

    @pytest.fixture
    def queue_target(self, request: pytest.FixtureRequest, queue_url: str) -> Target:
        profile = CI_PROFILE
        with contextlib.suppress(ValueError):  # ValueError: the plugin is disabled
            profile = request.config.getoption("queuekit_profile") or CI_PROFILE
        return target_for_url(queue_url, Settings.get_profile(profile))

    @pytest.mark.parametrize("conformance_check", CHECKS, ids=str)
    def test_conformance(self, conformance_check: Check, queue_target: Target) -> None:
        try:
            conformance_check.func(queue_target)
        except NotApplicable as exc:
            pytest.skip(f"not applicable: {exc}")
