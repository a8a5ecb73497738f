"""Hostile URLs, as a config file might hold them: only InvalidURL (or UnknownBackend, one of
its kinds) escapes ``queuekit.open``, its message names the URL and never a password, and
nothing hangs.

Hundreds of URLs per run in CI; ``QUEUEKIT_HYPOTHESIS_PROFILE=queuekit-heavy`` tries 10,000.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import queuekit
from queuekit import BackendUnavailable, InvalidURL

HEAVY = os.environ.get("QUEUEKIT_HYPOTHESIS_PROFILE") == "queuekit-heavy"
EXAMPLES = 10_000 if HEAVY else 400
SECRET = "s3cr3t-Pa55"

# Network backends are left out: a well-formed redis:// URL names a host to connect to, which
# is not a parsing question (tests/test_redis_backend.py covers its URLs against a server).
LOCAL_SCHEMES = ["memory", "mp", "pipe", "shm"]
PARAMS = ["maxsize", "capacity", "serializer", "context", "create", "checksum", "key", "x"]
VALUES = [
    "",
    "0",
    "-1",
    "3",
    "1.5",
    "1e9",
    "64KiB",
    "1MiB",
    "99999999999999999999",
    "2GiB",
    "pickle",
    "json",
    "raw",
    "nope",
    "fork",
    "spawn",
    "forkserver",
    "new",
    "never",
    "auto",
    "true",
    "false",
    "yes",
    "%00",
    "%zz",
    "é",
    "a&b",
    "=",
]
NOISE = st.text(alphabet=st.sampled_from(list("aZ09-_.~%/?#@:&=[] \x00\n\té\ud800")), max_size=12)


@st.composite
def mostly(draw: st.DrawFn, choices: list[str]) -> str:
    """One of ``choices`` nine times in ten, noise otherwise: enough well-formed URLs get
    through the parser to reach each backend's own parameter checks."""
    if draw(st.integers(0, 9)):
        return draw(st.sampled_from(choices))
    return draw(NOISE)


@st.composite
def hostile_urls(draw: st.DrawFn) -> str:
    scheme = draw(mostly([*LOCAL_SCHEMES, *LOCAL_SCHEMES, "MEMORY", "memry", "", "pipe+x"]))
    sep = draw(mostly(["://"] * 6 + [":/", ":", "", ":///"]))
    userinfo = draw(mostly(["", "", "", "", f"u:{SECRET}@", f":{SECRET}@", "u@", "@"]))
    location = draw(mostly(["", "", "", "jobs", "q1", ".hidden", "a/b", "[::1"]))
    pairs = draw(st.lists(st.tuples(mostly(PARAMS), mostly(VALUES)), max_size=4))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    tail = draw(mostly(["", "", "", "", "#frag", "?", "&", "/"]))
    return f"{scheme}{sep}{userinfo}{location}{'?' if query else ''}{query}{tail}"


def _dispose(q: Any) -> None:
    unlink = getattr(q, "unlink", None)
    if callable(unlink):
        unlink()  # a named shm:// segment outlives its handles otherwise
    q.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(url=hostile_urls())
def test_only_invalid_url_escapes_open(url: str) -> None:
    error: InvalidURL | BackendUnavailable | None = None
    try:
        q = queuekit.open(url)
    except (InvalidURL, BackendUnavailable) as exc:
        error = exc
    else:
        _dispose(q)
        return
    text = f"{error} {error!r}"
    assert SECRET not in text, f"the password leaked: {text}"
    assert len(str(error)) > 20, f"an unhelpful message for {url!r}: {error}"
    if isinstance(error, BackendUnavailable):
        # A well-formed URL naming a segment that is not there (shm://NAME?create=never) is
        # not a malformed one; its error must still say what is missing.
        assert "shm" in str(error), error


@pytest.mark.parametrize(
    "url",
    ["", "://", "memory", "memory:/", "memory:", "shm://a/b", "pipe://?capacity=", "mp://?x=1"],
)
def test_small_hostile_urls_are_invalid(url: str) -> None:
    with pytest.raises(InvalidURL):
        queuekit.open(url)
