"""What queuekit exports: ``__all__`` says exactly what the namespace offers, and types ship."""

from __future__ import annotations
import __future__

import importlib
import subprocess
import sys
import sysconfig
import textwrap
import typing
import zipfile
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest

import queuekit
import queuekit.testing

ROOT = Path(__file__).resolve().parent.parent


def public_names(module: ModuleType) -> set[str]:
    """Names a user would see in the module's namespace: not private, not submodules, and not
    ``from __future__`` features."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, (ModuleType, __future__._Feature))  # type: ignore[attr-defined]
    }


@pytest.mark.parametrize("module", [queuekit, queuekit.testing], ids=lambda m: m.__name__)
def test_all_names_exist(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module.__name__}.__all__ names what it lacks: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), "__all__ repeats a name"


@pytest.mark.parametrize("module", [queuekit, queuekit.testing], ids=lambda m: m.__name__)
def test_every_public_name_is_in_all(module: ModuleType) -> None:
    unlisted = public_names(module) - set(module.__all__)
    assert not unlisted, f"{module.__name__} exposes names missing from __all__: {unlisted}"


def test_all_and_namespace_match_in_a_fresh_interpreter() -> None:
    """The same, before anything else (this test run, a lazy attribute) added to the namespace."""
    code = textwrap.dedent(
        """
        import __future__, types, queuekit, queuekit.testing
        for m in (queuekit, queuekit.testing):
            names = {n for n, v in vars(m).items() if not n.startswith("_")
                     and not isinstance(v, (types.ModuleType, __future__._Feature))}
            print(sorted(names ^ set(m.__all__)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    # The pytest class is the one lazy name: imported on first access, so pytest stays optional.
    assert out[:2] == ["[]", "['QueueConformance']"]


def test_exports_are_defined_in_queuekit() -> None:
    for name in queuekit.__all__:
        value = getattr(queuekit, name)
        if typing.get_origin(value) is not None:
            continue  # a type alias (Opener): defined here, its origin lives in typing
        home = getattr(value, "__module__", "queuekit")
        assert home.startswith("queuekit"), f"queuekit.{name} re-exports {home}.{name}"


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert queuekit.__version__ == version("queuekit")


def _heavy_modules_after(imports: str) -> str:
    code = textwrap.dedent(
        f"""
        import sys
        import {imports}
        heavy = ("hypothesis", "pytest", "redis", "queuekit.backends.", "queuekit.testing._")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_import_queuekit_loads_no_backend_and_no_test_dependency() -> None:
    assert _heavy_modules_after("queuekit, queuekit._cli") == "[]"


def test_pytest_plugin_loads_no_test_dependency() -> None:
    # pytest loads the plugin in every project where queuekit is installed, with or without
    # the test extra: it must not import hypothesis.
    assert "'hypothesis" not in _heavy_modules_after("queuekit.pytest_plugin")


def test_py_typed_is_in_the_package() -> None:
    marker = resources.files("queuekit") / "py.typed"
    assert marker.is_file()


def test_wheel_ships_py_typed_and_entry_points(tmp_path: Path) -> None:
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("building the wheel needs hatchling")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("queuekit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = archive.read(entry_points).decode()
    assert "queuekit/py.typed" in names
    assert "queuekit/__main__.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    assert "queuekit = queuekit._cli:main" in declared
    assert "queuekit = queuekit.pytest_plugin" in declared
    assert "queuekit = queuekit.testing._hypothesis_hook:setup" in declared
    # Built here (the editable install has it), so the wheel has it too, tagged for this
    # Python and platform; the source tree's own copy is not what it ships.
    from queuekit.backends import _shm_segment

    if _shm_segment._RING is not None:
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        assert f"queuekit/backends/_shm_ring{suffix}" in names
        assert "-py3-none-any" not in wheel.name
    assert len([n for n in names if n.endswith(".so")]) <= 1


@pytest.mark.parametrize(
    "first",
    [
        "",
        "import queuekit.testing",
        "from queuekit.testing import CHECKS",
        "import queuekit.testing._profiles",
    ],
)
def test_profiles_load_by_name_whatever_was_imported_first(first: str) -> None:
    # Through Hypothesis's entry point: a third party's conftest need not import queuekit.
    code = (
        f"{first}\n"
        "from hypothesis import settings\n"
        "settings.load_profile('queuekit-ci')\n"
        "print(settings.default.derandomize, settings.default.database)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "True None"
