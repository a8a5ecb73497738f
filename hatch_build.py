"""Build queuekit's one compiled part, the usual put and get of ``shm://``
(``queuekit/backends/_shm_ring.c``), where it can be built: Linux on x86-64, a C compiler and
Python's headers. Anywhere else, or when compiling fails, the package stays pure Python and
``shm://`` takes its Python path (slower, the same queue); the build says so and goes on."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "queuekit/backends/_shm_ring.c"


def _cannot() -> str:
    """Why the extension cannot be built here (empty when it can)."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in (
        "x86_64",
        "amd64",
    ):
        return f"it is for Linux on x86-64, not {sys.platform} on {platform.machine()}"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "it relies on the GIL, which this Python lacks"
    if os.environ.get("QUEUEKIT_BUILD_PURE") == "1":
        return "QUEUEKIT_BUILD_PURE=1"
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        return "Python's headers (Python.h) are not installed"
    if not shutil.which(_compiler()[0]):
        return f"no C compiler ({_compiler()[0]}) on PATH"
    return ""


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


class RingBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        why = _cannot()
        if why:
            self._warn(why)
            return
        name = SOURCE.removesuffix(".c") + sysconfig.get_config_var("EXT_SUFFIX")
        if version == "editable":  # the source tree is what is imported
            out = os.path.join(self.root, name)
        else:
            self._tmp = tempfile.mkdtemp(prefix="queuekit-build-")
            out = os.path.join(self._tmp, os.path.basename(name))
        command = [
            *_compiler(), "-O2", "-shared", "-fPIC", "-Wall",
            "-I", sysconfig.get_paths()["include"],
            os.path.join(self.root, SOURCE), "-o", out, "-lpthread",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            self._warn(f"{shlex.join(command)} failed:\n{done.stderr.strip()}")
            return
        if version != "editable":
            build_data["force_include"][out] = name
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    def _warn(self, why: str) -> None:
        self.app.display_warning(
            f"queuekit: shm:// is built without its compiled put and get ({why}); it works the "
            "same, on its slower Python path"
        )
