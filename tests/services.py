"""Real services for the tests: free ports, an `mlflow server`, PostgreSQL's programs, and the rule that
a missing tool skips here but fails in CI."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(folder: Path, port: int, backend_store_uri: str | None = None):
    """A real `mlflow server` on loopback with proxied artifacts in ``folder``; its backend is a
    sqlite file there unless ``backend_store_uri`` names another (PostgreSQL)."""
    import subprocess
    import time
    import urllib.request

    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", backend_store_uri or f"sqlite:///{folder / 'server.db'}",
               "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]
    log = open(folder / "server.log", "ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")


class RestartableServer:
    """A real `mlflow server` that a test stops and starts again on the same port, with the same
    sqlite file and artifact folder: a server restart, or an outage, as a client sees it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        self.process = start_mlflow_server(self.folder, self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


def require(reason: str) -> None:
    """Skip a test whose tool is missing here; in CI (``CI`` set, as .ci/run does) fail it instead,
    so that CI never passes by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return installed[-1].parent if installed else None


def postgres_owner() -> str | None:
    """The user the server runs as: initdb and postgres refuse to run as root, so root lends them
    the ``postgres`` account that the distribution's package creates."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        require("running as root, and there is no postgres user to run PostgreSQL as")
    return "postgres"
