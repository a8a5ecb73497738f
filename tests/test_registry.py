"""Which code opens which scheme: run-time registration, built-ins, and the entry-point group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import queuekit
from queuekit import QueueURL, UnknownBackend, _registry
from queuekit.backends.memory import MemoryQueue


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test end with it (the registry has no unregister, by design)."""
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))


def memory_opener(url: QueueURL, **options: Any) -> MemoryQueue[Any]:
    return MemoryQueue(maxsize=int(options.get("maxsize", 0)))


def test_registered_scheme_opens() -> None:
    seen: list[tuple[QueueURL, dict[str, Any]]] = []

    def opener(url: QueueURL, **options: Any) -> MemoryQueue[Any]:
        seen.append((url, options))
        return memory_opener(url, **options)

    queuekit.register_backend("unit-test", opener)
    assert "unit-test" in queuekit.registered_schemes()
    with queuekit.open("UNIT-TEST://name/p?a=b", maxsize=3) as q:
        assert q.maxsize == 3
    [(url, options)] = seen
    assert (url.scheme, url.location, url.path, dict(url.query)) == (
        "unit-test",
        "name",
        "/p",
        {"a": "b"},
    )
    assert options == {"maxsize": 3}


@pytest.mark.parametrize("scheme", ["", "Upper", "1abc", "a b", "a_b", "a://", "é", None, 3])
def test_scheme_must_be_a_lower_case_url_scheme(scheme: Any) -> None:
    with pytest.raises(ValueError, match="is not a URL scheme"):
        queuekit.register_backend(scheme, memory_opener)


def test_opener_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        queuekit.register_backend("nocall", "queuekit.backends.memory")  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["memory", "mp"])
def test_builtin_scheme_is_not_replaced_by_accident(scheme: str) -> None:
    with pytest.raises(ValueError, match=f"{scheme!r} is registered already; pass replace=True"):
        queuekit.register_backend(scheme, memory_opener)


def test_replace_false_refuses_and_replace_true_replaces() -> None:
    queuekit.register_backend("twice", memory_opener)
    with pytest.raises(ValueError, match="replace=True"):
        queuekit.register_backend("twice", memory_opener)

    def bounded(url: QueueURL, **options: Any) -> MemoryQueue[Any]:
        return MemoryQueue(maxsize=9)

    queuekit.register_backend("twice", bounded, replace=True)
    with queuekit.open("twice://") as q:
        assert q.maxsize == 9


def test_replace_true_can_override_a_builtin() -> None:
    def bounded(url: QueueURL, **options: Any) -> MemoryQueue[Any]:
        return MemoryQueue(maxsize=5)

    queuekit.register_backend("memory", bounded, replace=True)
    with queuekit.open("memory://") as q:
        assert q.maxsize == 5


def test_opener_returning_a_non_queue_is_a_type_error() -> None:
    queuekit.register_backend("notaqueue", lambda url, **options: [1, 2, 3])
    with pytest.raises(TypeError, match=r"notaqueue:// returned list.*queuekit\.Queue"):
        queuekit.open("notaqueue://")


def test_opener_errors_reach_the_caller() -> None:
    def refuse(url: QueueURL, **options: Any) -> MemoryQueue[Any]:
        raise queuekit.BackendUnavailable("the broker is down; start it and retry")

    queuekit.register_backend("down", refuse)
    with pytest.raises(queuekit.BackendUnavailable, match="broker is down"):
        queuekit.open("down://")


def test_builtins_are_listed_without_being_imported() -> None:
    code = textwrap.dedent(
        """
        import sys, queuekit
        print(queuekit.registered_schemes())
        print(sorted(m for m in sys.modules if m.startswith("queuekit.backends.")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert "'memory'" in out[0]
    assert "'mp'" in out[0]
    assert out[1] == "[]"


# --- The queuekit.backends entry-point group --------------------------------------------

PLUGIN = """
import queuekit
from queuekit.backends.memory import MemoryQueue

LOADED = True

def open_queue(url, **options):
    return MemoryQueue(maxsize=42)
"""


def _install_plugin(root: Path, scheme: str, target: str) -> None:
    info = root / "qk_registry_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: qk-registry-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[queuekit.backends]\n{scheme} = {target}\n")
    (root / "qk_registry_plugin.py").write_text(PLUGIN)


def _run(code: str, root: Path) -> list[str]:
    # No empty entry: an empty PYTHONPATH entry would put the working directory on sys.path.
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_entry_point_is_listed_unimported_and_loaded_on_open(tmp_path: Path) -> None:
    _install_plugin(tmp_path, "plug", "qk_registry_plugin:open_queue")
    out = _run(
        """
        import sys, queuekit
        print("plug" in queuekit.registered_schemes(), "qk_registry_plugin" in sys.modules)
        q = queuekit.open("plug://")
        print(type(q).__name__, q.maxsize, "qk_registry_plugin" in sys.modules)
        """,
        tmp_path,
    )
    assert out == ["True False", "MemoryQueue 42 True"]


def test_entry_point_that_fails_to_import_is_backend_unavailable(tmp_path: Path) -> None:
    _install_plugin(tmp_path, "broken", "qk_no_such_module:open_queue")
    out = _run(
        """
        import queuekit
        try:
            queuekit.open("broken://")
        except queuekit.BackendUnavailable as exc:
            print(type(exc).__name__, exc)
        """,
        tmp_path,
    )
    assert out[0].startswith("BackendUnavailable the broken:// backend from entry point")
    assert "qk_no_such_module" in out[0]


def test_registration_wins_over_an_entry_point(tmp_path: Path) -> None:
    _install_plugin(tmp_path, "plug", "qk_registry_plugin:open_queue")
    out = _run(
        """
        import sys, queuekit
        from queuekit.backends.memory import MemoryQueue
        queuekit.register_backend("plug", lambda url, **options: MemoryQueue(maxsize=7))
        with queuekit.open("plug://") as q:
            print(q.maxsize, "qk_registry_plugin" in sys.modules)
        """,
        tmp_path,
    )
    assert out == ["7 False"]


def test_unknown_scheme_is_not_found_in_entry_points_either() -> None:
    with pytest.raises(UnknownBackend, match="entry-point group"):
        queuekit.open("surely-nobody-registers-this://")
