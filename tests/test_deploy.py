"""deploy/mlflow-server.sh: a tracking server on PostgreSQL with proxied artifacts, behind basic auth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from services import free_port

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "mlflow-server.sh"


def script_environment(**settings: str) -> dict[str, str]:
    # The script runs `mlflow`: the one of this environment, as after activating it.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "PATH": path, **settings}


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_listening_beyond_loopback_without_auth_is_refused(postgres_url, tmp_path):
    environment = script_environment(MLFLOW_BACKEND_STORE_URI=postgres_url, MLFLOW_SERVER_HOST="0.0.0.0")
    finished = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=environment, timeout=30)
    assert finished.returncode == 2 and "set MLFLOW_AUTH_ADMIN_PASSWORD" in finished.stderr
    sqlite = script_environment(MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path}/x.db")
    finished = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=sqlite, timeout=30)
    assert finished.returncode == 2 and "must be a postgresql:// URL" in finished.stderr


def test_the_server_stores_runs_in_postgresql_and_artifacts_in_the_shared_root(postgres_url, tmp_path, monkeypatch):
    port = free_port()
    artifacts = tmp_path / "shared-artifacts"
    environment = script_environment(MLFLOW_BACKEND_STORE_URI=postgres_url, MLFLOW_ARTIFACTS_DESTINATION=str(artifacts),
                                     MLFLOW_SERVER_PORT=str(port), MLFLOW_SERVER_WORKERS="1",
                                     MLFLOW_AUTH_ADMIN_PASSWORD="a long test password")
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(["bash", str(SCRIPT)], stdout=log, stderr=subprocess.STDOUT, env=environment,
                              cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if status_of(f"{url}/health") == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        assert status_of(f"{url}/api/2.0/mlflow/experiments/search?max_results=1") == 401  # no credentials
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a long test password")
        client = MlflowClient(url)
        experiment_id = client.create_experiment("deployed")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_text(run_id, "hello", "note.txt")
        assert [path.read_text() for path in artifacts.rglob("note.txt")] == ["hello"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    with pytest.raises(OSError):
        status_of(f"{url}/health")  # the server went with the script
