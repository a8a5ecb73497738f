"""SIGKILL at random moments on every local multi-process backend (redis:// has its own, in
test_redis_faults.py).

30 kills per backend in CI, 200 with ``QUEUEKIT_HYPOTHESIS_PROFILE=queuekit-heavy``. What
each backend may lose is what docs/reliability.md says: at most what a killed consumer had in
hand and, on mp://, what a killed producer had put and not yet written into the pipe (its last
items, at most maxsize); nothing torn, nothing twice, and no call late past its timeout.
"""

from __future__ import annotations

import os
import sys

import pytest
from _killing import MAX_GET, kill_loop

import queuekit

HEAVY = os.environ.get("QUEUEKIT_HYPOTHESIS_PROFILE") == "queuekit-heavy"
KILLS = 200 if HEAVY else 30

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backends")


@pytest.mark.parametrize(
    ("url", "producers_lose"),
    [
        ("shm://?maxsize=64&capacity=64KiB", False),
        ("shm://?maxsize=64&capacity=64KiB&checksum=true", False),
        ("pipe://?maxsize=64", False),
        ("pipe://?maxsize=64&capacity=64KiB", False),
        ("mp://?maxsize=64", True),
    ],
)
def test_local_backend_survives_kills(url: str, producers_lose: bool) -> None:
    with queuekit.open(url) as q:
        out = kill_loop(q, KILLS)
        maxsize = q.maxsize
    assert sum(out.kills.values()) >= KILLS, out.kills
    assert min(out.kills.values()) > 0, f"not both kinds were killed: {out.kills}"
    assert not out.torn, f"{len(out.torn)} items came out changed, e.g. {out.torn[0]}"
    assert not out.late, f"calls overran their timeouts: {out.late[:3]}"
    assert not out.errors, f"calls failed: {out.errors[:3]}"
    assert out.duplicates == 0, f"{out.duplicates} items were got twice"
    assert out.left_in_queue == 0, "the surviving consumers did not drain the queue"
    # mp://: a killed producer loses the items it had put and not yet written, its last ones;
    # being counted, they are at most maxsize.
    unsent = out.unsent() if producers_lose else {}
    assert max(unsent.values(), default=0) <= maxsize, unsent
    elsewhere = len(out.missing) - sum(unsent.values())
    assert elsewhere <= out.kills["consumer"] * MAX_GET, (
        f"{elsewhere} items put were never got (and {sum(unsent.values())} that killed "
        f"producers had not sent), more than {out.kills['consumer']} killed consumers could "
        f"have held ({MAX_GET} each)"
    )
    assert out.got, "nothing was got; the test proved nothing"
