"""SIGKILL at random moments on every multi-process backend that promises to survive it.

mp:// does not: a process killed inside the stdlib transport (holding its reader's or its
writer's lock, or half-way through a message) wedges the pipe under it (docs/reliability.md).

30 kills per backend in CI, 200 with ``QUEUEKIT_HYPOTHESIS_PROFILE=queuekit-heavy``. What
each backend may lose is what docs/reliability.md says: for the local ones, at most what a
killed consumer had in hand; nothing torn, nothing twice, and no call late past its timeout.
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
    "url",
    [
        "shm://?maxsize=64&capacity=64KiB",
        "shm://?maxsize=64&capacity=64KiB&checksum=true",
        "pipe://?maxsize=64",
        "pipe://?maxsize=64&capacity=64KiB",
    ],
)
def test_local_backend_survives_kills(url: str) -> None:
    with queuekit.open(url) as q:
        out = kill_loop(q, KILLS)
    assert sum(out.kills.values()) >= KILLS, out.kills
    assert min(out.kills.values()) > 0, f"not both kinds were killed: {out.kills}"
    assert not out.torn, f"{len(out.torn)} items came out changed, e.g. {out.torn[0]}"
    assert not out.late, f"calls overran their timeouts: {out.late[:3]}"
    assert not out.errors, f"calls failed: {out.errors[:3]}"
    assert out.duplicates == 0, f"{out.duplicates} items were got twice"
    assert out.left_in_queue == 0, "the surviving consumers did not drain the queue"
    assert len(out.missing) <= out.kills["consumer"] * MAX_GET, (
        f"{len(out.missing)} items put were never got, more than {out.kills['consumer']} "
        f"killed consumers could have held ({MAX_GET} each)"
    )
    assert out.got, "nothing was got; the test proved nothing"
