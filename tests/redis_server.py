"""A redis-server of the tests' own, on a free loopback port, killed when they end.

``QUEUEKIT_REDIS_URL`` points the tests at an existing server instead. Without either, the
Redis tests skip, saying why; with ``CI`` set they fail instead, so CI cannot pass without them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

ENV_URL = "QUEUEKIT_REDIS_URL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int, tls: bool = False) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            s = raw
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                s = context.wrap_socket(raw)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``kill()`` and ``start()`` again keep its port and files."""

    def __init__(self, *extra: str, port: int | None = None, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable(f"redis-server is not on PATH (install it, or set {ENV_URL})")
        self.binary: str = binary  # type: ignore[assignment]
        self.dir = tempfile.mkdtemp(prefix="queuekit-redis-")
        self.port = port or free_port()
        self.socket = os.path.join(self.dir, "redis.sock")
        self.extra = extra
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir]
        args += ["--unixsocket", self.socket, "--unixsocketperm", "700", "--save", ""]
        args += list(self.extra) or ["--appendonly", "no"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        end = time.monotonic() + 10
        while not _answers(self.port, self.tls):
            if self.process.poll() is not None or time.monotonic() > end:
                self.kill()
                unavailable(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the Redis tests need a server in CI: {reason}", pytrace=False)
    pytest.skip(f"no Redis server: {reason}")


def make_certificates(directory: str) -> dict[str, str]:
    """A throwaway CA and a server certificate for localhost and 127.0.0.1, made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on PATH: no certificates for the TLS tests")
    paths = {name: os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server.key")}
    ca_key, csr = os.path.join(directory, "ca.key"), os.path.join(directory, "server.csr")
    ext = os.path.join(directory, "ext.cnf")
    with open(ext, "w") as f:
        # What Python 3.13's strict verification (VERIFY_X509_STRICT) asks of a certificate.
        f.write(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
         "-out", paths["ca.pem"], "-days", "2", "-subj", "/CN=queuekit test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], **quiet,
    )  # fmt: skip
    subprocess.run(
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", paths["server.key"],
         "-out", csr, "-subj", "/CN=localhost"], **quiet,
    )  # fmt: skip
    subprocess.run(
        [openssl, "x509", "-req", "-in", csr, "-CA", paths["ca.pem"], "-CAkey", ca_key,
         "-CAcreateserial", "-out", paths["server.pem"], "-days", "2", "-extfile", ext], **quiet,
    )  # fmt: skip
    return paths
