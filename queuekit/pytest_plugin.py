"""The ``queuekit`` pytest plugin: options and a marker, nothing that changes other tests.

``--queuekit-url URL`` (repeatable) parametrizes any test that asks for a ``queuekit_url``
argument, once per URL; ``--queuekit-profile NAME`` chooses the conformance suite's
Hypothesis profile. pytest loads this plugin wherever queuekit is installed, test extra or
not, so it lives outside :mod:`queuekit.testing` and imports neither hypothesis nor a backend.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("queuekit", "queuekit conformance suite")
    group.addoption(
        "--queuekit-url",
        action="append",
        default=[],
        metavar="URL",
        help="queue URL to run tests that take a 'queuekit_url' argument against (repeatable)",
    )
    group.addoption(
        "--queuekit-profile",
        default=None,
        metavar="NAME",
        help="Hypothesis profile for the conformance suite: queuekit-ci (default) or "
        "queuekit-heavy",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "queuekit: a queuekit conformance or backend test (select with -m queuekit)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    urls = metafunc.config.getoption("queuekit_url")
    if "queuekit_url" in metafunc.fixturenames and urls:
        metafunc.parametrize("queuekit_url", urls)
