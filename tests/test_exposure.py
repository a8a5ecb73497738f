"""Least exposure: what a queue opens is not handed to programs its process runs."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

import queuekit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.mark.parametrize("url", ["mp://", "pipe://", "shm://"])
def test_descriptors_are_close_on_exec(url: str) -> None:
    before = _fds()
    q = queuekit.open(url)
    try:
        q.put("x")  # some transports open what they need on first use
        assert q.get(timeout=5) == "x"
        opened = {fd for fd in _fds() - before if os.path.exists(f"/proc/self/fd/{fd}")}
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
