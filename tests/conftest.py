"""Shared test set-up: the backends every conformance test fans out over."""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil

import pytest
from hypothesis import settings

import queuekit
import queuekit.testing  # registers the queuekit-* Hypothesis profiles

# Our own Hypothesis tests run derandomized unless a heavier profile is asked for.
settings.load_profile(os.environ.get("QUEUEKIT_HYPOTHESIS_PROFILE", "queuekit-ci"))

# Hypothesis draws constants from the source of every project module loaded so far, so a
# derandomized test's examples would depend on which tests ran before it and what they
# imported. Loading all of queuekit up front makes them depend on the tree alone.
for _module in pkgutil.walk_packages(queuekit.__path__, "queuekit."):
    if not _module.name.endswith("__main__"):
        with contextlib.suppress(ImportError):  # a backend whose extra is not installed
            importlib.import_module(_module.name)

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
