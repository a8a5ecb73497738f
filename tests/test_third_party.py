"""A backend written outside queuekit: registered by hand or by entry point, it passes the suite.

The backend (``tests/thirdparty/dequeq.py``) subclasses nothing of queuekit's; what it proves
is that the protocol, ``register_backend``, the entry-point group and ``run_conformance`` are
enough for an outside author.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from thirdparty.dequeq import DequeQueue, open_queue

import queuekit
from queuekit import _registry
from queuekit.testing import CHECKS, CheckResult, _load_checks, run_conformance

# CHECKS imports the check modules when first read; loading them here says so plainly.
_load_checks()

THIRDPARTY = Path(__file__).resolve().parent / "thirdparty"
SUMMARY = re.compile(r"^(\d+) passed, 0 failed, \d+ not applicable$", re.MULTILINE)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))


def test_it_is_a_queue_without_queuekit_ancestry() -> None:
    q = DequeQueue()
    assert isinstance(q, queuekit.Queue)
    assert [c for c in DequeQueue.__mro__ if c.__module__.startswith("queuekit")] == []
    assert q.capabilities.serializes is False


def test_registered_by_hand_it_passes_the_core_tier() -> None:
    queuekit.register_backend("deque", open_queue)
    seen: list[CheckResult] = []
    report = run_conformance("deque://", tiers=["core"], on_result=seen.append)
    assert report.ok, report.summary()
    assert seen == report.results
    core = {c.name for c in CHECKS if c.tier == "core"}
    assert {r.check.name for r in report.results if r.outcome == "passed"} == core


def test_registered_by_hand_it_passes_every_tier() -> None:
    queuekit.register_backend("deque", open_queue)
    report = run_conformance("deque://")
    assert not report.failed, report.summary()
    assert report.ok
    # It is in-process: only checks that need more than that may be out of scope.
    for result in report.results:
        if result.outcome == "not applicable":
            assert result.check.tier in ("cross-process", "lifecycle"), result


def test_the_suite_tells_the_broken_lifo_variant_apart() -> None:
    # Imported here, under the isolated registry, since importing it registers lifo://.
    from thirdparty.lifo import open_lifo

    queuekit.register_backend("lifo", open_lifo, replace=True)
    fifo_checks = [c.name for c in CHECKS if c.tier == "core" and "fifo" in c.name]
    assert fifo_checks, "expected a core check about FIFO order"
    report = run_conformance("lifo://", names=fifo_checks)
    assert [r.check.name for r in report.failed] == fifo_checks
    assert "order" in report.failed[0].message


# --- Through the queuekit.backends entry-point group ------------------------------------


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    """A distribution that declares thirdparty:// in tmp_path; the environment to find it."""
    info = tmp_path / "thirdparty_qk-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-qk\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[queuekit.backends]\nthirdparty = qk_thirdparty_deque:open_queue\n"
    )
    shutil.copy(THIRDPARTY / "dequeq.py", tmp_path / "qk_thirdparty_deque.py")
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def _queuekit(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queuekit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_installed_by_entry_point_it_passes_the_core_tier(installed: dict[str, str]) -> None:
    result = _queuekit(installed, "conformance", "thirdparty://", "--tier", "core")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = SUMMARY.search(result.stdout)
    assert summary, result.stdout
    assert int(summary.group(1)) == len([c for c in CHECKS if c.tier == "core"])
    assert "queuekit conformance: thirdparty://" in result.stdout


def test_installed_by_entry_point_it_is_listed_without_being_imported(
    installed: dict[str, str],
) -> None:
    result = _queuekit(installed, "backends", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "thirdparty://" in result.stdout.splitlines()

    code = (
        "import sys; from queuekit._cli import main; main(['backends']); "
        "print('imported' if 'qk_thirdparty_deque' in sys.modules else 'not imported')"
    )
    listed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=installed, timeout=60
    )
    assert listed.stdout.splitlines()[-1] == "not imported", listed.stdout + listed.stderr
    assert "thirdparty://" in listed.stdout.splitlines()


def test_installed_by_entry_point_info_shows_its_own_info(installed: dict[str, str]) -> None:
    result = _queuekit(installed, "info", "thirdparty://?maxsize=4", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "backend: qk_thirdparty_deque.DequeQueue" in result.stdout
    assert "maxsize: 4" in result.stdout
    assert "  unfinished_tasks: 0" in result.stdout
