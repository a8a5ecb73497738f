"""Shared test set-up: the backends every conformance test fans out over."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Iterator

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
    # The smallest pipe: puts wait for room in the pipe as much as for maxsize, and items
    # (at most 32764 bytes here) meet max_message_size, which the suite stays within.
    "pipe://?capacity=64KiB",
]


@pytest.fixture(params=BACKEND_URLS)
def queue_url(request: pytest.FixtureRequest) -> str:
    url: str = request.param
    return url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[object]:
    """A redis-server of the session's own (a ``redis_server.RedisServer``), or None when
    ``QUEUEKIT_REDIS_URL`` names one to use instead."""
    from redis_server import ENV_URL, RedisServer, unavailable

    if importlib.util.find_spec("redis") is None:
        unavailable("redis-py is not installed: pip install -e '.[test]'")
    if os.environ.get(ENV_URL):
        yield None
        return
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: object) -> str:
    """``redis://host:port/db`` of the Redis server the tests use."""
    from redis_server import ENV_URL

    url: str = getattr(redis_server, "url", None) or os.environ[ENV_URL]
    return url
