"""Authenticated payloads: signed by the writer, checked before anything is deserialized."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import queuekit
from queuekit import AuthenticatedSerializer, AuthenticationError, CorruptMessage, InvalidURL

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


class RunsCode:
    """A pickle that creates a file when it is loaded: what a hostile writer would send."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.path).touch, ())


@pytest.fixture
def shm_name() -> Iterator[str]:
    name = f"qk-auth-{uuid.uuid4().hex[:12]}"
    yield name
    segment = Path(f"/dev/shm/queuekit-{name}")
    segment.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "url", ["memory://", "memory://?serializer=json", "mp://", "pipe://", "shm://"]
)
def test_signed_items_round_trip(url: str) -> None:
    with queuekit.open(url, authkey=KEY) as q:
        q.put({"job": 1})
        q.put_many([{"job": 2}, {"job": 3}])
        assert q.get(timeout=5) == {"job": 1}
        assert q.get_many(5, timeout=5) == [{"job": 2}, {"job": 3}]


def test_a_foreign_pickle_is_refused_before_it_is_loaded(shm_name: str, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    url = f"shm://{shm_name}"
    with queuekit.open(url, authkey=KEY) as signed, queuekit.open(url) as foreign:
        foreign.put(RunsCode(str(marker)))
        signed.put("good")
        assert signed.qsize() == 2
        with pytest.raises(AuthenticationError) as info:
            signed.get(timeout=5)
        assert not marker.exists(), "the foreign pickle was loaded"
        # The refused message is kept for the caller, as it came; the queue goes on serving.
        assert info.value.data == pickle.dumps(RunsCode(str(marker)), protocol=5)
        assert signed.get(timeout=5) == "good"
        assert signed.qsize() == 0
        signed.unlink()  # type: ignore[attr-defined]


def test_a_message_signed_with_another_key_is_refused(shm_name: str) -> None:
    url = f"shm://{shm_name}"
    with queuekit.open(url, authkey=KEY) as ours, queuekit.open(url, authkey=OTHER_KEY) as theirs:
        theirs.put("from elsewhere")
        with pytest.raises(AuthenticationError, match="HMAC"):
            ours.get(timeout=5)
        ours.unlink()  # type: ignore[attr-defined]


def test_a_changed_byte_is_refused() -> None:
    signer = AuthenticatedSerializer(queuekit.PickleSerializer(), KEY)
    data = bytearray(signer.dumps(("job", 1)))
    assert signer.loads(bytes(data)) == ("job", 1)
    for index in (0, 31, 32, len(data) - 1):
        changed = bytearray(data)
        changed[index] ^= 1
        with pytest.raises(AuthenticationError):
            signer.loads(bytes(changed))
    for short in (b"", b"x" * 31, data[:32]):
        with pytest.raises(CorruptMessage):
            signer.loads(bytes(short))


def test_the_key_is_checked_and_never_shown() -> None:
    for bad in ("", "short", b"x" * 15):
        with pytest.raises(InvalidURL, match="at least 16 bytes"):
            queuekit.open("memory://", authkey=bad)
    with pytest.raises(InvalidURL, match="bytes or str"):
        queuekit.open("memory://", authkey=12345678901234567890)
    secret = "a-secret-key-of-some-length"
    signer = AuthenticatedSerializer(queuekit.JsonSerializer(), secret)
    assert secret not in repr(signer)
    with queuekit.open("memory://?serializer=json", authkey=secret) as q:
        assert secret not in repr(q)


def test_the_key_comes_from_the_environment(shm_name: str) -> None:
    url = f"shm://{shm_name}"
    child = (
        "import queuekit, sys\n"
        "q = queuekit.open(sys.argv[1])\n"
        "q.put('signed by the environment')\n"
        "q.close()\n"
    )
    env = {**os.environ, queuekit.AUTHKEY_ENV: KEY.decode()}
    subprocess.run([sys.executable, "-c", child, url], env=env, check=True, timeout=60)
    with queuekit.open(url, authkey=OTHER_KEY) as wrong:
        wrong.put("placeholder")  # keeps the segment while we look
    with queuekit.open(url, authkey=KEY) as q:
        assert q.get(timeout=5) == "signed by the environment"
    with queuekit.open(url, authkey=KEY) as q, pytest.raises(AuthenticationError):
        q.get(timeout=5)
    env[queuekit.AUTHKEY_ENV] = "short"
    failed = subprocess.run(
        [sys.executable, "-c", child, url], env=env, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode != 0
    assert f"the environment variable {queuekit.AUTHKEY_ENV}" in failed.stderr
    queuekit.open(url).unlink()  # type: ignore[attr-defined]
