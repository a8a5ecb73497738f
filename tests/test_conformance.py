"""Every backend in the repository through the conformance suite, and the suite against
deliberately broken backends: each must fail, naming the property it broke."""

from __future__ import annotations

import broken_backends
import pytest

from queuekit.testing import QueueConformance, run_conformance


class TestConformance(QueueConformance):
    """One test per check and backend (the ``queue_url`` fixture is in conftest.py)."""


# broken backend -> the checks that must each report it broken (run alone, to stay quick).
# The state machine is expected only where any sequence of calls trips the bug: its examples
# are derandomized, but Hypothesis also draws on constants from the modules that are imported,
# so which sequences it tries can change when a module is added.
BROKEN_EXPECTATIONS: dict[str, set[str]] = {
    "lifo": {"fifo-order", "model-state-machine", "many-producers-and-consumers"},
    "ignores-maxsize": {"maxsize-bound", "blocked-put-wakes-on-get", "model-state-machine"},
    "unchecked-task-done": {"task-done-join", "model-state-machine"},
    "join-returns-at-once": {"task-done-join", "join-waits-for-every-task-done"},
    "shutdown-wakes-nobody": {"shutdown-wakes-blocked-getters"},
    "early-timeout": {"timeouts-honoured"},
    "qsize-off-by-one": {"qsize-empty-full", "model-state-machine"},
    "drops-items": {"many-producers-and-consumers", "model-state-machine"},
    "get-many-takes-one": {"batch-order-and-bounds", "model-state-machine"},
    "partial-put-many": {"put-many-all-or-nothing", "put-many-waits-for-whole-batch"},
    "empty-after-shutdown": {"shutdown-semantics", "model-state-machine"},
    "immediate-keeps-tasks": {"immediate-shutdown-discards", "shutdown-and-join"},
    "usable-after-close": {"close-is-idempotent-and-final", "context-manager-closes"},
    "negative-timeout-waits": {"negative-timeout-refused"},
    "silent-serialization-drop": {"unserializable-item-refused", "put-many-all-or-nothing"},
    "claims-cross-process": {"sizes-across-processes", "handle-is-a-queue"},
    "slow-get": {"blocked-get-wakes-on-put"},
}


@pytest.mark.parametrize("name", sorted(BROKEN_EXPECTATIONS))
def test_suite_catches_broken_backend(name: str) -> None:
    expected = BROKEN_EXPECTATIONS[name]
    options = "?serializer=pickle" if name == "silent-serialization-drop" else ""
    report = run_conformance(f"broken-{name}://{options}", names=sorted(expected))
    broken = {r.check.name for r in report.failed}
    assert broken == expected, f"{name}: suite reported {broken or 'nothing'}\n{report.summary()}"
    assert not report.ok
    for result in report.failed:
        assert result.message, f"{result.check.name} failed without saying what broke"


def test_every_broken_backend_is_exercised() -> None:
    assert set(BROKEN_EXPECTATIONS) == set(broken_backends.BROKEN)
