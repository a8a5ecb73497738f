"""The ``queuekit`` command, run as ``python -m queuekit`` the way a user runs it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from thirdparty.dequeq import DequeQueue

import queuekit
from queuekit import Capabilities, QueueURL, _registry
from queuekit._cli import main
from queuekit.testing import CHECKS, _load_checks

TESTS = Path(__file__).resolve().parent
PASSWORD = "Zq7-cli-pw-never-shown"

# CHECKS fills as the check modules are imported; names are read from it, never hard-coded.
_load_checks()
CORE = [c.name for c in CHECKS if c.tier == "core"]


def queuekit_cmd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # No empty entry: an empty PYTHONPATH entry would put the working directory on sys.path.
    paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, "-m", "queuekit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_info_prints_backend_url_capabilities_and_sizes() -> None:
    result = queuekit_cmd("info", "memory://?maxsize=5", timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "backend: queuekit.backends.memory.MemoryQueue" in lines
    assert "url: memory://?maxsize=5" in lines
    assert "maxsize: 5" in lines
    assert "qsize: 0" in lines
    assert "capabilities:" in lines
    for field in dataclasses.fields(Capabilities):
        assert any(line.startswith(f"  {field.name}: ") for line in lines), field.name
    assert "  serializes: False" in lines


def test_info_json() -> None:
    result = queuekit_cmd("info", "memory://", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    details = json.loads(result.stdout)
    capabilities = json.loads(json.dumps(dataclasses.asdict(Capabilities(serializes=False))))
    assert details == {
        "backend": "queuekit.backends.memory.MemoryQueue",
        "url": "memory://",
        "capabilities": capabilities,
        "maxsize": 0,
        "qsize": 0,
    }


def test_info_includes_the_backends_own_info() -> None:
    result = queuekit_cmd("info", "mp://?maxsize=3", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    details = json.loads(result.stdout)
    assert details["backend"] == "queuekit.backends.mp.MPQueue"
    assert details["maxsize"] == 3
    assert details["capabilities"]["cross_process"] is True
    assert isinstance(details["info"], dict)
    assert details["info"]


def test_info_of_a_bad_url_is_a_usage_error() -> None:
    result = queuekit_cmd("info", "memory://?maxsize=ten", timeout=60)
    assert result.returncode == 2
    assert "bad value 'ten' for 'maxsize'" in result.stderr
    assert "Traceback" not in result.stderr


def test_backends_lists_the_schemes() -> None:
    result = queuekit_cmd("backends", timeout=60)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.splitlines()
    assert listed == sorted(listed)
    assert {"memory://", "mp://"} <= set(listed)
    assert all(line.endswith("://") for line in listed)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://?bogus=1", "unknown URL parameter 'bogus' for memory://; accepted:"),
        ("nosuch://", "no queue backend for nosuch://"),
        ("memroy://", "Did you mean memory://?"),
        ("not-a-url", "is not a queue URL"),
    ],
)
def test_conformance_with_a_bad_url_exits_2_with_the_message(url: str, message: str) -> None:
    result = queuekit_cmd("conformance", url, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("queuekit: error: ")
    assert "Traceback" not in result.stderr


def test_conformance_of_one_check_passes() -> None:
    name = CORE[0]
    result = queuekit_cmd("conformance", "memory://", "--check", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PASS core/{name}" in result.stderr  # the progress line, as the check finished
    assert "queuekit conformance: memory://" in result.stdout
    assert "1 passed, 0 failed, 0 not applicable" in result.stdout


def test_conformance_of_a_broken_backend_exits_1_naming_the_property() -> None:
    fifo = [c for c in CORE if "fifo" in c]
    assert fifo, "expected a core check about FIFO order"
    args = [a for name in fifo for a in ("--check", name)]
    result = queuekit_cmd("conformance", "lifo://", "--import", "thirdparty.lifo", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"broken properties: {', '.join(fifo)}" in result.stdout
    assert f"FAIL core/{fifo[0]}" in result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_shows_the_tracebacks_of_failures() -> None:
    fifo = [c for c in CORE if "fifo" in c]
    result = queuekit_cmd(
        "conformance", "lifo://", "--import", "thirdparty.lifo", "--check", fifo[0], "--verbose"
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "AssertionError" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tier", "nosuch"], "unknown tier 'nosuch'; choose from core, batch"),
        (["--check", "no-such-check"], "no check named 'no-such-check'; known: "),
        (["--profile", "fast"], "unknown profile 'fast'; choose from queuekit-ci, queuekit-heavy"),
        (["--import", "qk_no_such_module"], "--import qk_no_such_module: ModuleNotFoundError"),
    ],
)
def test_conformance_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = queuekit_cmd("conformance", "memory://", *args, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "PASS" not in result.stderr  # refused before any check ran


@pytest.mark.parametrize("args", [[], ["conformance"], ["frobnicate"], ["info"]])
def test_argument_errors_exit_2(args: list[str]) -> None:
    result = queuekit_cmd(*args, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: queuekit")


def test_conformance_without_hypothesis_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "from queuekit._cli import main\n"
        "raise SystemExit(main(['conformance', 'memory://']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "pip install 'queuekit[test]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("queuekit")
    if not script.exists():
        pytest.skip("queuekit is not installed as a distribution in this environment")
    result = subprocess.run([script, "backends"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "memory://" in result.stdout.splitlines()


# --- Passwords: in-process, with a backend that takes one -------------------------------


@pytest.fixture
def with_auth_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """auth:// opens a fresh in-process queue; ``auth://u:bad@...`` fails as a careless backend
    would, with the password in its message."""
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))

    def opener(url: QueueURL, /, **options: Any) -> DequeQueue:
        if url.location == "down":
            raise queuekit.BackendUnavailable(f"login as {url.username}:{url.password} refused")
        return DequeQueue(**options)

    queuekit.register_backend("auth", opener)


@pytest.mark.usefixtures("with_auth_backend")
def test_info_never_prints_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", f"auth://app:{PASSWORD}@host/0"]) == 0
    out, err = capsys.readouterr()
    assert "url: auth://app:***@host/0" in out
    assert PASSWORD not in out + err


@pytest.mark.usefixtures("with_auth_backend")
def test_errors_never_print_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", f"auth://app:{PASSWORD}@down"]) == 1
    out, err = capsys.readouterr()
    assert "BackendUnavailable: login as app:*** refused" in err
    assert PASSWORD not in out + err


@pytest.mark.usefixtures("with_auth_backend")
def test_conformance_never_prints_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", f"auth://app:{PASSWORD}@host", "--check", CORE[0]]) == 0
    out, err = capsys.readouterr()
    assert "queuekit conformance: auth://app:***@host" in out
    assert PASSWORD not in out + err
    assert main(["conformance", f"auth://app:{PASSWORD}@host#frag"]) == 2
    out, err = capsys.readouterr()
    assert "fragment" in err
    assert PASSWORD not in out + err
