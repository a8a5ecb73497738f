"""Least exposure: what a queue opens is not handed to programs its process runs."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

import pytest

import queuekit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _fds() -> set[tuple[int, int, int]]:
    """This process's descriptors, each with what it is open on: a number closed (by the
    garbage collector, say) and taken again by the queue counts as new."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            st = os.stat(int(name))
            found.add((int(name), st.st_dev, st.st_ino))
    return found


@pytest.mark.parametrize("url", ["mp://", "pipe://", "shm://"])
def test_descriptors_are_close_on_exec(url: str) -> None:
    before = _fds()
    q = queuekit.open(url)
    try:
        q.put("x")  # some transports open what they need on first use
        assert q.get(timeout=5) == "x"
        opened = {fd for fd, _, _ in _fds() - before}
        assert opened, f"{url} opened no descriptor; this test would prove nothing"
        inheritable = {
            fd: os.readlink(f"/proc/self/fd/{fd}") for fd in opened if os.get_inheritable(fd)
        }
        assert not inheritable, f"{url} leaves descriptors open across exec: {inheritable}"
    finally:
        q.close()


def test_named_segments_are_owner_only() -> None:
    q = queuekit.open("shm://qk-exposure-test?create=new")
    try:
        mode = stat.S_IMODE(Path("/dev/shm/queuekit-qk-exposure-test").stat().st_mode)
        assert mode == 0o600, oct(mode)
    finally:
        q.unlink()  # type: ignore[attr-defined]
        q.close()
