"""Shared test set-up: the backends every conformance test fans out over."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

import queuekit.testing  # noqa: F401 - registers the queuekit-* Hypothesis profiles

# Our own Hypothesis tests run derandomized unless a heavier profile is asked for.
settings.load_profile(os.environ.get("QUEUEKIT_HYPOTHESIS_PROFILE", "queuekit-ci"))

# Every backend in the repository, as the URLs the conformance suite opens.
BACKEND_URLS = [
    "memory://",
    "memory://?serializer=pickle",
    "mp://",
    "pipe://",
    # A small pipe: puts wait for room in the pipe as much as for maxsize. (The suite's items
    # of 64-77 KiB, which it puts whatever max_message_size says, keep it from going smaller.)
    "pipe://?capacity=256KiB",
]


@pytest.fixture(params=BACKEND_URLS)
def queue_url(request: pytest.FixtureRequest) -> str:
    url: str = request.param
    return url
