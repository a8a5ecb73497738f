"""Every backend in the repository through the conformance suite, and the suite against
deliberately broken backends: each must fail, naming the property it broke."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import broken_backends
import pytest

import queuekit
from queuekit import _registry
from queuekit.backends.memory import MemoryQueue
from queuekit.testing import CHECKS, QueueConformance, run_conformance
from queuekit.testing._checks import call_with_watchdog


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
    "newest-producer-first": {"fifo-across-threads", "fifo-across-concurrent-producers"},
    # Fails once a close() of a queue the suite opened has waited out its limit (10s).
    "close-hangs": {"close-is-idempotent-and-final"},
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
    if name == "close-hangs":
        assert all("close() " in r.message and " hung" in r.message for r in report.failed), (
            report.summary()
        )


def test_every_broken_backend_is_exercised() -> None:
    assert set(BROKEN_EXPECTATIONS) == set(broken_backends.BROKEN)


def _fresh_interpreter(code: str) -> list[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()


def test_a_cross_process_worker_imports_no_test_dependency() -> None:
    # What a spawned child of the cross-process checks imports: hypothesis would cost it a
    # tenth of a second or more at every start.
    (loaded,) = _fresh_interpreter(
        """
        import sys
        import queuekit.testing._workers
        heavy = ("hypothesis", "pytest", "queuekit.testing.")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
        """
    )
    assert loaded == "['queuekit.testing._checks', 'queuekit.testing._workers']"


def test_checks_are_all_there_when_first_read() -> None:
    # The package imports no check module, but CHECKS loads them when read.
    out = _fresh_interpreter(
        """
        import sys
        from queuekit.testing import CHECKS
        print("hypothesis" in sys.modules)
        print(len(CHECKS), sorted({c.tier for c in CHECKS}))
        print("hypothesis" in sys.modules)
        """
    )
    tiers = sorted({c.tier for c in CHECKS})
    assert out == ["False", f"{len(CHECKS)} {tiers}", "True"]


def test_a_watchdog_that_fires_names_the_call_and_its_arguments() -> None:
    with queuekit.open("memory://?maxsize=1") as full, queuekit.open("memory://") as empty:
        full.put("first")
        with pytest.raises(AssertionError, match=r"^put\('second', timeout=None\) hung"):
            call_with_watchdog(functools.partial(full.put, "second", timeout=None), 0.2)
        with pytest.raises(AssertionError, match=r"^get_many\(3\) hung"):
            call_with_watchdog(functools.partial(empty.get_many, 3), 0.2)
        with pytest.raises(AssertionError, match=r"^a get\(\) as the check put it hung"):
            call_with_watchdog(empty.get, 0.2, "a get() as the check put it")
        for q in (full, empty):
            q.shutdown(immediate=True)  # lets the calls left blocked end


class _Unbounded(AssertionError):
    pass


class StrictQueue(MemoryQueue[Any]):
    """memory://, refusing any call that could wait for good unless the suite's own threads
    (which it joins with a deadline, or watches) make it."""

    def _bounded(self, name: str, block: bool, timeout: float | None) -> None:
        watched = threading.current_thread().name.startswith("queuekit")
        if block and timeout is None and not watched:
            raise _Unbounded(f"the suite called {name}() with no timeout and no watchdog")

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._bounded("put", block, timeout)
        super().put(item, block, timeout)

    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        self._bounded("put_many", block, timeout)
        super().put_many(items, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        self._bounded("get", block, timeout)
        return super().get(block, timeout)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> Any:
        self._bounded("get_many", block, timeout)
        return super().get_many(max_items, block, timeout)

    def join(self, timeout: float | None = None) -> None:
        self._bounded("join", True, timeout)
        super().join(timeout)


class SmallMessages(MemoryQueue[Any]):
    """memory://, serializing, with a small max_message_size that it enforces."""

    LIMIT = 2048

    @property
    def capabilities(self) -> queuekit.Capabilities:
        return queuekit.Capabilities(max_message_size=self.LIMIT)

    def _encode(self, item: Any) -> Any:
        data = super()._encode(item)
        if len(data) > self.LIMIT:
            raise queuekit.MessageTooLarge(f"{len(data)} bytes; at most {self.LIMIT}")
        return data


class BadMessageUndone(MemoryQueue[Any]):
    """memory://, except that a message that will not load stays an unfinished task."""

    def _count_done(self) -> None:
        pass


class BatchLostWithBadMessage(MemoryQueue[Any]):
    """memory://, except that a get_many meeting a bad message raises and loses its batch."""

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> Any:
        self._check_open()
        return [self._decode(data) for data in self._get_encoded(max_items, block, timeout)]


UNLINKED: list[tuple[str, bool]] = []
"""(name, whether closed) of every Unlinking handle unlinked."""


class Unlinking(MemoryQueue[Any]):
    """memory://, with an unlink() that notes which handle it was called on."""

    def unlink(self) -> bool:
        UNLINKED.append((self._name, self._closed))
        return False


class UnlinkFails(Unlinking):
    def unlink(self) -> bool:
        super().unlink()
        raise RuntimeError("cannot unlink")


class UnlinkFailsAndBadMessageUndone(UnlinkFails, BadMessageUndone):
    pass


def open_unyielding(url: queuekit.QueueURL, **options: Any) -> MemoryQueue[Any]:
    """memory://, except that an option may not override what the URL says."""
    both = sorted(set(url.query) & set(options))
    if both:
        raise queuekit.InvalidURL(f"{url} sets {', '.join(both)}; do not pass it again")
    return MemoryQueue(url.location, **queuekit.bind_params(url, MemoryQueue.PARAMS, options))


@pytest.fixture
def own_schemes() -> Iterator[None]:
    saved = dict(_registry._registered)
    for scheme, cls in (
        ("strict", StrictQueue),
        ("small", SmallMessages),
        ("undone", BadMessageUndone),
        ("lossy", BatchLostWithBadMessage),
        ("unlinking", Unlinking),
        ("unlink-fails", UnlinkFails),
        ("unlink-fails-undone", UnlinkFailsAndBadMessageUndone),
    ):

        def opener(url: queuekit.QueueURL, cls: Any = cls, **options: Any) -> Any:
            return cls(url.location, **queuekit.bind_params(url, cls.PARAMS, options))

        queuekit.register_backend(scheme, opener, replace=True)
    queuekit.register_backend("unyielding", open_unyielding, replace=True)
    yield
    _registry._registered.clear()
    _registry._registered.update(saved)


@pytest.mark.usefixtures("own_schemes")
@pytest.mark.parametrize("query", ["", "?serializer=pickle"])
def test_every_call_that_may_wait_is_bounded(query: str) -> None:
    report = run_conformance(f"strict://{query}")
    assert report.ok, report.summary()


@pytest.mark.usefixtures("own_schemes")
@pytest.mark.parametrize("serializer", ["pickle", "json", "raw"])
def test_items_stay_within_max_message_size(serializer: str) -> None:
    # Every check but the one that puts an item beyond the limit on purpose stays within it.
    report = run_conformance(f"small://?serializer={serializer}", tiers=["lifecycle"])
    assert report.ok, report.summary()
    passed = {r.check.name for r in report.results if r.outcome == "passed"}
    assert {"message-too-large-refused", "serializer-options", "large-items-intact"} <= passed


@pytest.mark.parametrize("url", ["memory://?maxsize=1", "memory://?maxsize=3&serializer=pickle"])
def test_a_url_that_fixes_maxsize_is_checked_like_any_other(url: str) -> None:
    # Each check opens queues with the bound it needs, whatever the URL says.
    report = run_conformance(url)
    assert report.ok, report.summary()


@pytest.mark.usefixtures("own_schemes")
def test_a_url_whose_maxsize_cannot_be_overridden_makes_checks_not_applicable() -> None:
    report = run_conformance("unyielding://?maxsize=3", names=["fifo-order", "maxsize-bound"])
    assert [r.outcome for r in report.results] == ["not applicable"] * 2, report.summary()
    for result in report.results:
        assert "unyielding://?maxsize=3 fixes" in result.message, result.message
        assert "run the suite on a URL without maxsize" in result.message, result.message
    assert run_conformance("unyielding://", names=["fifo-order", "maxsize-bound"]).ok


BAD_MESSAGE = ["bad-message-done-and-skipped"]


@pytest.mark.usefixtures("own_schemes")
@pytest.mark.parametrize(
    ("scheme", "said"),
    [
        ("undone", "join(timeout=3) after 4 task_done() for 5 items put raised JoinTimeout"),
        ("lossy", "get_many(5) of [0, 1, BAD, 3, 4] raised RefusedToLoad"),
    ],
)
def test_a_backend_breaking_the_bad_message_rule_fails_its_check(scheme: str, said: str) -> None:
    report = run_conformance(f"{scheme}://?serializer=pickle", names=BAD_MESSAGE)
    assert [r.outcome for r in report.results] == ["failed"], report.summary()
    assert said in report.results[0].message, report.summary()


@pytest.mark.usefixtures("own_schemes")  # restores the registry afterwards
@pytest.mark.parametrize("url", ["memory://", "deque://"])
def test_the_bad_message_check_needs_a_backend_that_loads_with_a_serializer_object(
    url: str,
) -> None:
    from thirdparty.dequeq import open_queue

    queuekit.register_backend("deque", open_queue, replace=True)
    report = run_conformance(url, names=BAD_MESSAGE)
    assert [r.outcome for r in report.results] == ["not applicable"], report.summary()


@pytest.mark.usefixtures("own_schemes")
def test_queues_the_suite_opened_fresh_are_unlinked_before_they_are_closed() -> None:
    UNLINKED.clear()
    report = run_conformance("unlinking://", names=["fifo-order"])
    assert report.ok, report.summary()
    # fifo-order's queue, and those opened to learn about the target.
    assert len(UNLINKED) >= 2
    assert all(not closed and not name for name, closed in UNLINKED), UNLINKED
    UNLINKED.clear()
    # Those that a check closed itself too (unlink() may refuse a closed handle).
    report = run_conformance("unlinking://", names=["context-manager-closes"])
    assert report.ok, report.summary()
    assert [closed for _, closed in UNLINKED][-2:] == [True, True]  # the last, the check's


@pytest.mark.usefixtures("own_schemes")
def test_a_queue_the_url_names_is_never_unlinked() -> None:
    UNLINKED.clear()
    report = run_conformance("unlinking://jobs", names=["fifo-order"])
    assert report.ok, report.summary()
    assert UNLINKED == []


@pytest.mark.usefixtures("own_schemes")
def test_an_unlink_that_fails_is_reported_but_never_hides_a_check_s_own_failure() -> None:
    report = run_conformance("unlink-fails://", names=["fifo-order"])
    assert [r.outcome for r in report.results] == ["failed"], report.summary()
    message = report.results[0].message
    assert "unlink() of a queue the suite opened raised" in message, message
    assert "cannot unlink" in message, message
    report = run_conformance("unlink-fails-undone://?serializer=pickle", names=BAD_MESSAGE)
    assert [r.outcome for r in report.results] == ["failed"], report.summary()
    assert "join(timeout=3)" in report.results[0].message, report.summary()
