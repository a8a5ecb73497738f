"""Hypothesis's ``hypothesis`` entry point, in a module nothing else imports.

Hypothesis calls :func:`setup` while it is itself being imported, which may be in the middle of
importing :mod:`queuekit.testing._profiles`; a hook defined there would not exist yet.
"""

from __future__ import annotations

import importlib


def setup() -> None:
    """Register the queuekit-* profiles (importing ``_profiles`` registers them)."""
    importlib.import_module("queuekit.testing._profiles")
