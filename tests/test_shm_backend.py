"""What is particular to shm://; the contract itself is the conformance suite's business.

Children run module-level functions, so spawn and forkserver children can import them.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import pickle
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from refusing import BAD, Refused, Refusing

import queuekit
from queuekit import Empty, InvalidURL, MessageTooLarge, QueueClosed, ShutDown
from queuekit.testing._suite import QueueConformance

if TYPE_CHECKING:
    from queuekit.backends.shm import ShmQueue

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="shm:// is Linux's")


def shm() -> ModuleType:
    """The backend's module, imported when a test first needs it. Hypothesis draws constants
    from the source of every non-test module loaded, so importing it while this file is
    collected would change what the derandomized tests of other files generate."""
    return importlib.import_module("queuekit.backends.shm")


def segment() -> ModuleType:
    """The module of the backend's shared memory (its layout, locks and waits), imported
    likewise when first needed."""
    return importlib.import_module("queuekit.backends._shm_segment")


LONG = 20.0
"""Seconds after which a child or a call is taken to hang (the machine is shared and slow)."""
FORK: Any = multiprocessing.get_context("fork")


TEST_PREFIX = f"test-{os.getpid()}-"
"""Every queue these tests name starts so; other processes may be using /dev/shm meanwhile."""


def ours() -> set[str]:
    """The names in /dev/shm that these tests could have left behind."""
    return {n for n in os.listdir(shm().SHM_DIR) if n.startswith(f"queuekit-{TEST_PREFIX}")}


@pytest.fixture(scope="module", autouse=True)
def no_segment_leaks() -> Iterator[None]:
    before = ours()
    yield
    leaked = ours() - before
    for leftover in leaked:
        os.unlink(f"{shm().SHM_DIR}/{leftover}")
    assert not leaked, f"the shm:// tests left segments in {shm().SHM_DIR}: {sorted(leaked)}"


def _compiled_due() -> str:
    """Why the compiled put and get must be built here (hatch_build.py's conditions), or ''."""
    if platform.machine().lower() not in ("x86_64", "amd64") or os.environ.get(
        "QUEUEKIT_BUILD_PURE"
    ):
        return ""
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(f"{include}/Python.h") or not shutil.which("cc"):
        return ""
    return f"Linux on x86-64 with a C compiler and {include}/Python.h"


@pytest.fixture(scope="module", autouse=True, params=["compiled", "python"])
def put_get_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here twice: with the compiled put and get, and on the Python path alone. The
    two must keep the same queue (and share one: see test_the_two_paths_share_a_queue)."""
    env = segment().COMPILED_ENV
    if request.param == "compiled" and segment()._RING is None:
        due = _compiled_due()
        if due:
            pytest.fail(f"the compiled put and get are not built, though this is {due}")
        pytest.skip("the compiled put and get cannot be built here")
    before = os.environ.get(env)
    os.environ[env] = "1" if request.param == "compiled" else "0"
    yield request.param
    if before is None:
        del os.environ[env]
    else:
        os.environ[env] = before


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh queue name, unlinked after the test whatever happened."""
    chosen = f"{TEST_PREFIX}{secrets.token_hex(4)}"
    yield chosen
    shm().unlink(f"shm://{chosen}")


@contextlib.contextmanager
def child(target: Callable[..., None], *args: Any, ctx: Any = FORK) -> Iterator[Any]:
    """A child process running ``target(*args)``, which must end by the end of the block."""
    process = ctx.Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield process
        process.join(LONG)
        assert not process.is_alive(), f"the child process was still running after {LONG}s"
    finally:
        if process.is_alive():
            process.kill()
            process.join(LONG)


class TestShmConformance(QueueConformance):
    """The whole conformance suite on shm:// (not through conftest's BACKEND_URLS: see
    ``shm()`` above; this file runs after tests/test_conformance.py)."""

    @pytest.fixture
    def queue_url(self) -> str:
        return "shm://"


# --- Names, attaching, lifecycle -------------------------------------------------------------


def test_unrelated_process_attaches_by_url(name: str) -> None:
    url = f"shm://{name}?maxsize=10"
    script = textwrap.dedent(
        f"""
        import queuekit
        q = queuekit.open({url!r})
        got = [q.get(timeout={LONG}) for _ in range(3)]
        q.put_many([("echo", item) for item in got])
        q.close()
        """
    )
    with queuekit.open(url) as q:
        q.put_many(["one", {"two": 2}, (3, b"\x00")])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, timeout=LONG, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        back = [q.get(timeout=LONG) for _ in range(3)]
        assert back == [("echo", "one"), ("echo", {"two": 2}), ("echo", (3, b"\x00"))]
        assert q.qsize() == 0


def test_the_two_paths_share_a_queue(name: str, put_get_path: str) -> None:
    """A process on the compiled put and get and one on the Python path, on one small ring:
    each echoes what the other puts, across many wrap-arounds, every byte and in order."""
    if segment()._RING is None:
        pytest.skip("the compiled put and get are not built here: there is one path")
    count, small = 3000, "?capacity=4KiB&serializer=raw"
    there, back = f"shm://{name}-there{small}", f"shm://{name}-back{small}"
    script = textwrap.dedent(
        f"""
        import queuekit
        there, back = queuekit.open({there!r}), queuekit.open({back!r})
        assert there.info()["compiled"] is {put_get_path != "compiled"}
        for _ in range({count}):
            back.put(there.get(timeout={LONG}))
        """
    )
    other = "0" if put_get_path == "compiled" else "1"
    env = {**os.environ, segment().COMPILED_ENV: other}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    with queuekit.open(there) as q, queuekit.open(back) as r:
        try:
            echo = subprocess.Popen([sys.executable, "-c", script], env=env)
            sent = [bytes([i % 251]) * (i % 300) for i in range(count)]
            got = []
            for item in sent:
                q.put(item, timeout=LONG)
                while True:  # take what came back, so that neither ring stays full
                    try:
                        got.append(r.get(block=False))
                    except Empty:
                        break
            got += [r.get(timeout=LONG) for _ in range(count - len(got))]
            assert echo.wait(LONG) == 0
        finally:
            shm().unlink(f"shm://{name}-there")
            shm().unlink(f"shm://{name}-back")
        assert got == sent


def test_named_queue_persists_until_unlinked(name: str) -> None:
    url = f"shm://{name}"
    first = queuekit.open(url, maxsize=5)
    first.put("kept")
    first.close()
    assert os.path.exists(f"{shm().SHM_DIR}/queuekit-{name}")
    with queuekit.open(url) as again:
        assert again.maxsize == 5, "attaching takes the queue's own maxsize"
        assert again.get_nowait() == "kept"
        assert isinstance(again, shm().ShmQueue)
        assert again.unlink() is True
        assert not os.path.exists(f"{shm().SHM_DIR}/queuekit-{name}")
        again.put("still works after unlink")
        assert again.get_nowait() == "still works after unlink"
        assert again.unlink() is False
        with queuekit.open(url) as fresh:
            assert (fresh.qsize(), fresh.maxsize) == (0, 0), "the name now makes a new queue"
            fresh.put("new")
            assert again.qsize() == 0, "the unlinked queue and the new one are apart"
            assert shm().unlink(url) is True
    assert shm().unlink(url) is False


def test_create_modes_and_mismatched_settings(name: str) -> None:
    url = f"shm://{name}"
    with pytest.raises(InvalidURL, match="does not exist"):
        queuekit.open(url, create="never")
    with queuekit.open(url, create="new", maxsize=3, capacity="64KiB"):
        with pytest.raises(InvalidURL, match="exists already"):
            queuekit.open(url, create="new")
        for option, value in (("maxsize", 4), ("capacity", "1MiB"), ("checksum", True)):
            with pytest.raises(InvalidURL, match=f"{option}="):
                queuekit.open(url, **{option: value})
        with queuekit.open(f"{url}?maxsize=3&capacity=65536", create="never") as same:
            assert same.maxsize == 3
    with pytest.raises(InvalidURL, match="needs a NAME"):
        queuekit.open("shm://?create=never")
    for bad in ("shm://.hidden", "shm://a/b", "shm://user@q", "shm://q?capacity=10"):
        with pytest.raises(InvalidURL):
            queuekit.open(bad)


def test_segments_are_owner_only(name: str) -> None:
    old = os.umask(0)
    try:
        with queuekit.open(f"shm://{name}"):
            mode = os.stat(f"{shm().SHM_DIR}/queuekit-{name}").st_mode & 0o777
    finally:
        os.umask(old)
    assert mode == 0o600, f"a segment was made with mode {oct(mode)}, not 0o600"


def test_private_queue_has_no_name() -> None:
    before = ours()
    with queuekit.open("shm://") as q:
        q.put(1)
        assert ours() == before, "a private queue showed up in /dev/shm"
        assert isinstance(q, shm().ShmQueue)
        assert q.info()["path"].startswith("(none")
        with pytest.raises(TypeError, match="private"):
            pickle.dumps(q)


def test_pickled_named_handle_attaches(name: str) -> None:
    with queuekit.open(f"shm://{name}") as q:
        other = pickle.loads(pickle.dumps(q))
        q.put("through one")
        assert other.get(timeout=LONG) == "through one"
        other.close()
        with pytest.raises(QueueClosed):
            other.put(1)
        q.put("still open")
        assert q.get_nowait() == "still open"
    with pytest.raises(QueueClosed):
        pickle.dumps(q)


def _attach_put_and_exit(url: str) -> None:
    q = queuekit.open(url)
    q.put(("from", os.getpid()))
    q.close()


def test_child_attaching_leaves_segment_to_parent(name: str) -> None:
    """A spawn child (with the resource tracker that spawn starts) that attaches and exits must
    not remove the segment: shm:// never registers with the tracker."""
    url = f"shm://{name}"
    with queuekit.open(url) as q:
        with child(_attach_put_and_exit, url, ctx=multiprocessing.get_context("spawn")) as p:
            pass
        assert p.exitcode == 0
        time.sleep(0.5)  # a tracker would unlink at the child's exit
        assert os.path.exists(f"{shm().SHM_DIR}/queuekit-{name}"), "the segment was removed"
        assert q.get(timeout=LONG)[0] == "from"
        with queuekit.open(url, create="never") as again:
            again.put("attached after the child left")
            assert q.get(timeout=LONG) == "attached after the child left"


# --- The ring ------------------------------------------------------------------------------


def test_too_large_names_capacity() -> None:
    with queuekit.open("shm://?capacity=4KiB&serializer=raw") as q:
        assert q.capabilities.max_message_size == 4096 - 8
        q.put(b"kept")
        with pytest.raises(MessageTooLarge, match="capacity=4096"):
            q.put(b"x" * 4089)
        with pytest.raises(MessageTooLarge, match="capacity=4096"):
            q.put_many([b"a" * 2000, b"b" * 2000, b"c" * 100])  # each fits, the batch never
        assert q.qsize() == 1
        assert q.get_nowait() == b"kept"
        largest = bytes(range(256)) * 15 + b"x" * (4088 - 3840)
        for _ in range(3):  # at every offset of a ring it fills exactly
            q.put(largest, timeout=LONG)
            assert q.get_nowait() == largest
            q.put(b"shift")
            assert q.get_nowait() == b"shift"


@given(
    st.lists(
        st.one_of(st.integers(0, 300).map(lambda n: ("put", n)), st.just(("get", 0))),
        max_size=60,
    )
)
def test_wrap_around_keeps_every_byte(steps: list[tuple[str, int]]) -> None:
    with queuekit.open("shm://?capacity=512&serializer=raw") as q:
        model: deque[bytes] = deque()
        for i, (op, size) in enumerate(steps):
            if op == "put":
                data = random.Random(i).randbytes(size)
                try:
                    q.put_nowait(data)
                except queuekit.Full:
                    assert sum(8 + (len(d) + 7) // 8 * 8 for d in model) + 8 + size > 512
                    continue
                model.append(data)
            elif model:
                assert q.get_nowait() == model.popleft()
            else:
                with pytest.raises(Empty):
                    q.get_nowait()
        assert q.qsize() == len(model)
        if model:
            assert q.get_many(100, block=False) == list(model)


def test_items_cross_the_wrap_in_batches() -> None:
    with queuekit.open("shm://?capacity=1KiB&serializer=raw") as q:
        rng = random.Random(7)
        for round_ in range(200):
            batch = [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
            q.put_many(batch)
            got: list[bytes] = []
            while len(got) < len(batch):
                got += q.get_many(rng.randrange(1, 4))
            assert got == batch, f"round {round_}"


def _ring(q: Any) -> Any:
    """The queue's mapping, to damage as another writer could."""
    return q._seg.mm


def test_checksum_catches_bytes_changed_in_the_ring() -> None:
    ring = segment().DATA_AT
    with queuekit.open("shm://?checksum=true&serializer=raw") as q:
        q.put(b"first item")
        q.put(b"second item")
        _ring(q)[ring + 8] ^= 0xFF
        with pytest.raises(queuekit.CorruptMessage, match="CRC-32") as caught:
            q.get_nowait()
        assert caught.value.data == bytes([ord("f") ^ 0xFF]) + b"irst item"
        assert q.get_nowait() == b"second item"
        q.task_done()
        q.join(timeout=LONG)  # the refused item counts as done: nothing is left to finish
    with queuekit.open("shm://?serializer=raw") as q:
        q.put(b"unchecked")
        _ring(q)[ring + 8] ^= 0xFF
        assert q.get_nowait() != b"unchecked", "without checksums the change goes unseen"


@pytest.mark.parametrize("sizes", ["uniform", "varied"])
def test_checksum_in_a_batch_frame(sizes: str) -> None:
    """A put_many is one frame; an item of it that fails its check is a bad message of its
    own: the items before it are returned, it raises at the next get, the rest follow."""
    items = [b"a" * 5, b"b" * 5, b"c" * 5, b"d" * 5]
    if sizes == "varied":
        items = [b"a", b"bb", b"ccc", b"dddd"]
    with queuekit.open("shm://?checksum=true&serializer=raw") as q:
        q.put_many(items)
        mm, ring = _ring(q), segment().DATA_AT
        second = bytes(mm[ring : ring + 4096]).index(items[1])
        mm[ring + second] ^= 0xFF
        assert q.get_many(4) == [items[0]]
        assert q.qsize() == 0
        assert q.info()["held"] == 3
        with pytest.raises(queuekit.CorruptMessage, match="CRC-32"):
            q.get()
        assert q.get_many(4) == items[2:]
        for _ in range(3):
            q.task_done()
        q.join(timeout=LONG)


@pytest.mark.parametrize("where", ["single", "batch"])
@pytest.mark.parametrize("many", [False, True])
def test_damaged_frame_length_is_dropped_and_the_ring_goes_on(where: str, many: bool) -> None:
    """A frame whose length runs past the last frame written is never read past: the frames
    published up to then are dropped (counted done) with one CorruptMessage, and the queue
    serves the items put afterwards."""
    with queuekit.open("shm://?serializer=raw") as q:
        q.put(b"first")
        if where == "single":
            q.put(b"second")
            q.put(b"third")
        else:
            q.put_many([b"second", b"third"])
        mm, header = _ring(q), segment().DATA_AT + 16  # the second frame's header
        if where == "single":
            mm[header : header + 4] = (1000).to_bytes(4, "little")  # its length
        else:
            mm[header + 12 : header + 16] = (1000).to_bytes(4, "little")  # its payloads' bytes
        if many:
            assert q.get_many(5) == [b"first"], "get_many stops before the damaged frame"
        else:
            assert q.get_nowait() == b"first"
        with pytest.raises(queuekit.CorruptMessage, match="2 items put until now") as caught:
            q.get_many(5) if many else q.get_nowait()
        assert caught.value.data is not None
        assert b"third" in caught.value.data
        assert q.qsize() == 0
        with pytest.raises(Empty):
            q.get_nowait()
        q.put_many([b"fourth", b"fifth"])
        q.put(b"sixth")
        assert q.get_many(5) == [b"fourth", b"fifth", b"sixth"]
        for _ in range(4):  # first, fourth, fifth, sixth
            q.task_done()
        q.join(timeout=LONG)


def test_frames_that_run_out_before_the_count() -> None:
    """A length changed to one that stays inside the published bytes is not caught where it
    is (without checksums), but the frames then run out before the items counted: the get
    that finds the ring empty with items counted drops them, and join does not hang."""
    with queuekit.open("shm://?serializer=raw") as q:
        q.put(b"a" * 50)  # a frame of 8 + 56 bytes
        q.put(b"second")  # then one of 8 + 8
        ring = segment().DATA_AT
        _ring(q)[ring : ring + 4] = (72).to_bytes(4, "little")  # the first now ends at the tail
        assert len(q.get_nowait()) == 72
        assert q.qsize() == 1
        with pytest.raises(queuekit.CorruptMessage, match="1 items put until now"):
            q.get(timeout=LONG)
        q.task_done()
        q.join(timeout=LONG)
        q.put(b"after")
        assert q.get_nowait() == b"after"


def test_damage_found_by_a_waiting_get() -> None:
    """A get asleep on an empty queue that wakes to a damaged frame drops it likewise."""
    with queuekit.open("shm://?serializer=raw") as q:
        q.put(b"x")
        assert q.get_nowait() == b"x"
        q.task_done()
        q.put(b"damaged")
        at = segment().DATA_AT + 16
        _ring(q)[at : at + 4] = (5000).to_bytes(4, "little")
        seg = q._seg  # type: ignore[attr-defined]
        seg.tail_seen = 0  # as if this process had not looked since: it takes the slow way
        with pytest.raises(queuekit.CorruptMessage, match="1 items"):
            q.get(timeout=LONG)
        q.join(timeout=LONG)


def test_get_many_stops_before_a_bad_message() -> None:
    with queuekit.open("shm://", serializer=Refusing()) as q:
        q.put_many([0, 1, BAD, 3, 4])
        assert q.get_many(5) == [0, 1]
        # The rest wait in this handle: in flight, not in qsize, unfinished for join.
        assert (q.qsize(), q.info()["held"]) == (0, 3)
        with pytest.raises(queuekit.JoinTimeout, match="5 unfinished"):
            q.join(timeout=0.01)
        q.put(5)
        with pytest.raises(Refused):
            q.get()
        assert q.get_many(5) == [3, 4], "the held items come before the queue's"
        assert q.get() == 5
        for _ in range(5):
            q.task_done()
        q.join(timeout=LONG)
        assert q.qsize() == 0


def test_a_lone_bad_message_counts_as_done() -> None:
    with queuekit.open("shm://", serializer=Refusing()) as q:
        q.put(BAD)
        with pytest.raises(Refused):
            q.get()
        q.join(timeout=LONG)
        q.put_many([BAD, BAD])
        with pytest.raises(Refused):
            q.get_many(2)
        with pytest.raises(Refused):
            q.get_many(2)
        q.join(timeout=LONG)


def test_close_gives_held_items_back(name: str) -> None:
    url = f"shm://{name}"
    with queuekit.open(url, serializer=Refusing()) as other:
        q = queuekit.open(url, serializer=Refusing())
        q.put_many([0, 1, BAD, 3, 4])
        q.put(5)
        assert q.get_many(5) == [0, 1]
        q.task_done()
        q.task_done()
        q.close()
        assert other.qsize() == 4
        assert other.get() == 5, "given back at the back"
        with pytest.raises(Refused):
            other.get()
        assert other.get_many(5) == [3, 4]
        for _ in range(3):
            other.task_done()
        other.join(timeout=LONG)


def test_close_refuses_when_it_cannot_give_back() -> None:
    with queuekit.open("shm://?maxsize=5", serializer=Refusing()) as q:
        q.put_many([0, 1, BAD, 3, 4])
        assert q.get_many(5) == [0, 1]
        q.put_many([5, 6, 7])
        with pytest.raises(queuekit.QueueError, match="3 items this handle holds"):
            q.close()
        assert q.info()["held"] == 3, "the handle stays open, holding them"
        q.shutdown()
        with pytest.raises(queuekit.QueueError, match="shut down"):
            q.close()
        with pytest.raises(Refused):
            q.get()
        assert q.get_many(9) == [3, 4]
        assert q.get_many(9) == [5, 6, 7]


def _get_and_report(q: ShmQueue[Any], conn: Connection) -> None:
    conn.send((q.info()["held"], q.get_many(9, timeout=LONG)))
    q.close()


def test_a_forked_copy_of_a_handle_holds_nothing() -> None:
    """Held items are the process's that got them: a child forked with the handle neither
    takes them nor gives them back on close, so none is got twice."""
    with queuekit.open("shm://", serializer=Refusing()) as q:
        q.put_many([0, 1, BAD, 3])
        assert q.get_many(4) == [0, 1]
        q.put(4)
        ours_end, theirs = FORK.Pipe(duplex=False)
        with child(_get_and_report, q, theirs):
            assert ours_end.poll(LONG)
            assert ours_end.recv() == (0, [4])
        assert q.qsize() == 0, "the child's close gave nothing back"
        with pytest.raises(Refused):
            q.get()
        assert q.get_nowait() == 3


def test_immediate_shutdown_drops_held_items() -> None:
    with queuekit.open("shm://", serializer=Refusing()) as q:
        q.put_many([0, 1, BAD, 3, 4, 5])
        assert q.get_many(6) == [0, 1]
        q.shutdown(immediate=True)
        assert q.info()["held"] == 0
        with pytest.raises(ShutDown):
            q.get_nowait()
        q.task_done()
        q.task_done()
        q.join(timeout=LONG)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.integers(0, 120), st.integers(1, 1)),
            st.tuples(st.just("put_many"), st.integers(0, 60), st.integers(2, 6)),
            st.tuples(st.just("uniform"), st.integers(0, 40), st.integers(2, 6)),
            st.tuples(st.just("get"), st.just(0), st.just(1)),
            st.tuples(st.just("get_many"), st.just(0), st.integers(1, 7)),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_batch_frames_taken_in_any_pieces(steps: list[tuple[str, int, int]], checked: bool) -> None:
    """Batches, whole or in parts, by get or get_many, across the end of a small ring."""
    url = f"shm://?capacity=512&serializer=raw&checksum={str(checked).lower()}"
    with queuekit.open(url) as q:
        model: deque[bytes] = deque()
        for i, (op, size, count) in enumerate(steps):
            rng = random.Random(i)
            if op in ("put", "put_many", "uniform"):
                batch = [
                    rng.randbytes(size if op == "uniform" else rng.randrange(size + 1))
                    for _ in range(count)
                ]
                try:
                    q.put_many(batch, block=False) if count > 1 else q.put_nowait(batch[0])
                except queuekit.Full:
                    continue
                except MessageTooLarge:
                    continue
                model.extend(batch)
            elif model:
                if op == "get":
                    assert q.get_nowait() == model.popleft()
                else:
                    got = q.get_many(count, block=False)
                    assert got == [model.popleft() for _ in range(len(got))]
                    assert 1 <= len(got) <= count
            else:
                with pytest.raises(Empty):
                    q.get_many(count, block=False) if op == "get_many" else q.get_nowait()
            assert q.qsize() == len(model)
        if model:
            assert q.get_many(1000, block=False) == list(model)


# --- Surviving death ---------------------------------------------------------------------------


def _die_holding_lock(q: ShmQueue[Any], locks: str, half_written: bool) -> None:
    seg = q._seg
    assert seg is not None
    if locks == "both":
        seg.take_both()
    else:
        seg.take(seg.put_mutex if locks == "put" else seg.get_mutex)
    if half_written:
        # A put caught between writing its frame and publishing it.
        seg.write(seg.put_end()[1], b"torn" * 100, 12345)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize(
    ("locks", "half_written"), [("put", False), ("put", True), ("get", False), ("both", True)]
)
def test_process_killed_holding_the_lock(locks: str, half_written: bool) -> None:
    with queuekit.open("shm://?maxsize=4") as q:
        q.put("before")
        with child(_die_holding_lock, q, locks, half_written) as p:
            pass
        assert p.exitcode == -signal.SIGKILL
        assert q.qsize() == 1
        q.put("after")
        assert q.get(timeout=LONG) == "before"
        assert q.get(timeout=LONG) == "after"
        with pytest.raises(Empty):
            q.get_nowait()


def _mutex_unlock() -> Any:
    return importlib.import_module("queuekit._shmsync").mutex_unlock


def _commit_without_waking(q: ShmQueue[Any]) -> None:
    time.sleep(0.3)  # so that the parent is asleep in get() by now
    seg = q._seg
    assert seg is not None
    data = pickle.dumps("silently", protocol=5)
    seg.take(seg.put_mutex)
    words, tail, puts, shut = seg.put_end()
    tail = seg.write(tail, data, zlib.crc32(data))
    seg.commit_put(words, tail, puts + 1, shut)
    _mutex_unlock()(seg.put_mutex)
    os.kill(os.getpid(), signal.SIGKILL)  # before the wake-up it owed


def _churn(q: ShmQueue[Any], seconds: float) -> None:
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        q.put(i)
        q.put_many([i, i])
        q.get()
        q.get_many(2)
        for _ in range(3):
            q.task_done()
        i += 1


def test_no_commit_is_ever_seen_half_written() -> None:
    """Each end's state is committed in writes that never show a state it did not have: the
    version word that chooses the current copy only ever grows. (struct's pack_into zeroes
    the bytes it is given before it writes them: a commit written with it showed version 0,
    and a process killed there left its end's counts at 0, the ring at their mercy.)"""
    with queuekit.open("shm://") as q:
        mm, put_version, get_version = q._seg.mm, segment().PUT_AT + 32, segment().GET_AT + 64  # type: ignore[attr-defined]
        word = segment()._WORD
        put_seen = get_seen = 0
        with child(_churn, q, 2.0):
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                put_now = word.unpack_from(mm, put_version)[0]
                get_now = word.unpack_from(mm, get_version)[0]
                assert put_now >= put_seen, (
                    f"the put end's version went from {put_seen} to {put_now}"
                )
                assert get_now >= get_seen, (
                    f"the get end's version went from {get_seen} to {get_now}"
                )
                put_seen, get_seen = put_now, get_now
        assert get_seen > 1000, f"only {get_seen} commits at the get end: the test proved little"


def test_wake_up_lost_with_its_sender_is_made_up() -> None:
    with queuekit.open("shm://") as q:
        results: list[Any] = []
        start = time.monotonic()
        with child(_commit_without_waking, q):
            results.append(q.get(timeout=LONG))
        waited = time.monotonic() - start
        assert results == ["silently"]
        # The waiter looks again by itself every SLICE seconds; generous, for a busy machine.
        assert waited < 3.0, f"the getter waited {waited:.1f}s for an item that was there"


def _item(producer: int, seq: int) -> tuple[int, int, bytes]:
    rng = random.Random(producer * 1_000_003 + seq)
    return (producer, seq, rng.randbytes(rng.randrange(0, 3000)))


def _producer(q: ShmQueue[Any], producer: int, count: int, confirmed: Any) -> None:
    rng = random.Random(producer)
    seq = 0
    while seq < count:
        batch = [_item(producer, s) for s in range(seq, min(count, seq + rng.randrange(1, 4)))]
        if len(batch) == 1:
            q.put(batch[0])
        else:
            q.put_many(batch)
        seq += len(batch)
        confirmed[producer] = seq  # how many of its items are in the queue for sure


def _consumer(q: ShmQueue[Any], conn: Connection, consumer: int) -> None:
    rng = random.Random(consumer)
    while True:
        try:
            got = q.get_many(rng.randrange(1, 4)) if rng.random() < 0.5 else [q.get()]
        except ShutDown:
            return
        for item in got:
            producer, seq, _data = item
            conn.send((producer, seq, item == _item(producer, seq)))
            q.task_done()


MAX_GET = 3


@pytest.mark.parametrize("checksum", [True, False])
def test_sigkill_at_random_moments(checksum: bool) -> None:
    """Producers and consumers SIGKILLed at random: the survivors finish, every item read is
    whole, and the only items missing are what a killed consumer had in hand. Without
    checksums too: nothing torn is read because nothing torn is ever published."""
    rng = random.Random(20240607)
    per_producer = 2000
    producers_total = 30
    confirmed = FORK.Array("q", producers_total, lock=False)
    killed = {"producer": 0, "consumer": 0}
    with queuekit.open("shm://?maxsize=64&capacity=64KiB", checksum=checksum) as q:
        producers: dict[int, Any] = {}
        consumers: list[tuple[Any, Connection]] = []
        reports: list[tuple[int, int, bool]] = []

        def start_consumer() -> None:
            ours_end, theirs = FORK.Pipe(duplex=False)
            p = FORK.Process(target=_consumer, args=(q, theirs, len(consumers)), daemon=True)
            p.start()
            theirs.close()
            consumers.append((p, ours_end))

        def drain() -> None:
            for _, conn in consumers:
                with contextlib.suppress(EOFError, OSError):
                    while conn.poll():
                        reports.append(conn.recv())

        next_producer = 0

        def start_producer() -> None:
            nonlocal next_producer
            p = FORK.Process(
                target=_producer, args=(q, next_producer, per_producer, confirmed), daemon=True
            )
            p.start()
            producers[next_producer] = p
            next_producer += 1

        for _ in range(3):
            start_producer()
            start_consumer()
        try:
            # Kill a producer, then a consumer, and so on, at random moments; replace each.
            for round_ in range(producers_total - 3):
                time.sleep(rng.uniform(0.002, 0.03))
                drain()
                if round_ % 2 == 0:
                    live = [p for p in producers.values() if p.is_alive()]
                    if live:
                        os.kill(rng.choice(live).pid, signal.SIGKILL)
                        killed["producer"] += 1
                else:
                    os.kill(
                        rng.choice([c for c, _ in consumers if c.is_alive()]).pid, signal.SIGKILL
                    )
                    killed["consumer"] += 1
                    start_consumer()
                start_producer()
            end = time.monotonic() + LONG
            while any(p.is_alive() for p in producers.values()):
                assert time.monotonic() < end, "the surviving producers did not finish"
                drain()
                time.sleep(0.01)
            # Every producer is done (or dead): the consumers drain the rest.
            drain_end = time.monotonic() + LONG
            while q.qsize() and time.monotonic() < drain_end:
                drain()
                time.sleep(0.01)
            assert q.qsize() == 0, "the surviving consumers did not drain the queue"
            q.shutdown()
            for p, _ in consumers:
                p.join(LONG)
            drain()
        finally:
            for p in [*producers.values(), *(c[0] for c in consumers)]:
                if p.is_alive():
                    p.kill()
                p.join(LONG)
        torn = [r for r in reports if not r[2]]
        assert not torn, f"{len(torn)} items came out changed, e.g. {torn[0]}"
        seen = [(p, s) for p, s, _ in reports]
        assert len(seen) == len(set(seen)), "an item was got twice"
        for p, s in seen:
            assert (s < per_producer, p < next_producer) == (True, True), f"no one put {(p, s)}"
        promised = {(p, s) for p in range(next_producer) for s in range(confirmed[p])}
        missing = promised - set(seen)
        assert min(killed.values()) > 0, f"not both kinds were killed: {killed}"
        assert len(missing) <= killed["consumer"] * MAX_GET, (
            f"{len(missing)} items put were never got, more than {killed['consumer']} killed "
            f"consumers could have held ({MAX_GET} each)"
        )


def _exchange(q: ShmQueue[Any], count: int) -> None:
    """Put ``count`` numbered byte strings, in batches and one by one, of varied sizes."""
    rng = random.Random(count)
    i = 0
    while i < count:
        batch = [bytes([i % 256]) * rng.randrange(0, 300) for i in range(i, min(count, i + 3))]
        if len(batch) == 1:
            q.put(batch[0], timeout=LONG)
        else:
            q.put_many(batch, timeout=LONG)
        i += len(batch)


def test_each_end_without_reading_the_other_unlocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where one end's state cannot be read without its lock (all but x86), every look at the
    other end takes both locks: the same items come out, across a small ring and a child."""
    monkeypatch.setattr(segment(), "_ORDERED", False)
    count = 400
    with queuekit.open("shm://?capacity=1KiB&serializer=raw") as q:
        with child(_exchange, q, count):
            rng = random.Random(1)
            got: list[bytes] = []
            while len(got) < count:
                if rng.random() < 0.5:
                    got.append(q.get(timeout=LONG))
                else:
                    got += q.get_many(rng.randrange(1, 5), timeout=LONG)
        expected = [bytes([i % 256]) * len(item) for i, item in enumerate(got)]
        assert got == expected
        assert len({len(item) for item in got}) > 10, "the sizes did not vary"
        assert q.qsize() == 0


def _get_one(q: ShmQueue[Any], conn: Connection) -> None:
    try:
        conn.send(q.get(timeout=LONG))
    except Empty:
        conn.send("timed out")


@pytest.mark.parametrize("batch", [False, True])
def test_every_sleeping_getter_is_woken(monkeypatch: pytest.MonkeyPatch, batch: bool) -> None:
    """A put wakes one sleeping getter an item, not all: with three asleep, three items (one
    by one, or in one batch) wake all three. The getters are made to sleep far longer than
    ``LONG`` between their own looks, so a wake-up lost would show as a late item."""
    monkeypatch.setattr(segment(), "SLICE", 10 * LONG)
    with queuekit.open("shm://") as q:
        seg = q._seg  # type: ignore[attr-defined]
        sleepers_at = segment()._SLEEPERS_AT[segment().NOT_EMPTY_AT]
        ends = [FORK.Pipe(duplex=False) for _ in range(3)]
        children = [FORK.Process(target=_get_one, args=(q, theirs)) for _, theirs in ends]
        for p in children:
            p.start()
        try:
            end = time.monotonic() + LONG
            while int.from_bytes(seg.mm[sleepers_at : sleepers_at + 4], "little") < 3:
                assert time.monotonic() < end, "the getters did not all go to sleep"
                time.sleep(0.01)
            if batch:
                q.put_many(["a", "b", "c"])
            else:
                for item in "abc":
                    q.put(item)
            # A getter not woken would return only when its timeout (LONG) ran out.
            got = sorted(ours.recv() for ours, _ in ends if ours.poll(LONG / 2))
            assert got == ["a", "b", "c"]
        finally:
            for p in children:
                p.join(LONG)
                if p.is_alive():
                    p.kill()
                    p.join()


# --- Waiting ---------------------------------------------------------------------------------


def _idle_getter(q: ShmQueue[Any], conn: Connection) -> None:
    conn.send("ready")
    cpu = time.process_time()
    wall = time.monotonic()
    with contextlib.suppress(Empty):
        q.get(timeout=1.0)
    conn.send((time.process_time() - cpu, time.monotonic() - wall))


def test_blocked_get_sleeps() -> None:
    with queuekit.open("shm://") as q:
        ours_end, theirs = FORK.Pipe(duplex=False)
        with child(_idle_getter, q, theirs):
            assert ours_end.poll(LONG)
            assert ours_end.recv() == "ready"
            assert ours_end.poll(LONG)
            cpu, wall = ours_end.recv()
        assert wall >= 1.0
        assert cpu / wall < 0.10, f"a get blocked on an idle queue used {cpu / wall:.1%} of a core"


def test_info_and_repr(name: str, put_get_path: str) -> None:
    with queuekit.open(f"shm://{name}?capacity=1MiB&maxsize=9") as q:
        assert isinstance(q, shm().ShmQueue)
        q.put_many([1, 2])
        info = q.info()
        assert info["compiled"] is (put_get_path == "compiled")
        assert info["name"] == name
        assert info["path"] == f"{shm().SHM_DIR}/queuekit-{name}"
        assert (info["capacity"], info["maxsize"], info["qsize"], info["unfinished"]) == (
            1024 * 1024,
            9,
            2,
            2,
        )
        assert info["bytes_used"] > 0
        assert info["shutdown"] is False
        assert name in repr(q)
    assert "closed" in repr(q)
