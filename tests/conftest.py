"""Shared fixtures: small IDX datasets in torchvision's raw layout, and a private tracking store per test.

Every test runs with MLFLOW_TRACKING_URI pointing at its own copy of a store migrated once per
session, and with the working directory in a temporary folder (artifacts land in ./mlruns there),
so no test can write into a user's store.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from recording import RecordingLogger
from services import RestartableServer, free_port, postgres_bin, postgres_owner, require, start_mlflow_server
from synthetic_data import write_dataset

# Subprocesses that a test starts import actopt from this checkout, whatever is installed.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both datasets, small and synthetic, read by the real torchvision loading code."""
    root = tmp_path_factory.mktemp("data")
    write_dataset(root, "MNIST", seed=1)
    write_dataset(root, "FashionMNIST", seed=2)
    return root


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store that has paid MLflow's schema migrations; tests copy it."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def tracking_store(tmp_path: Path, migrated_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private store for each test: its URI is also in MLFLOW_TRACKING_URI for subprocesses."""
    store = tmp_path / "mlflow.db"
    shutil.copy(migrated_store, store)
    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("ACTOPT_DATA_DIR", raising=False)
    # actopt sets MLflow's HTTP limits in the environment of its process, here pytest's: each test starts
    # without those an earlier one left, and hands its subprocesses only what it chose itself.
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT", "ACTOPT_HTTP_LIMITS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def small_config(data_dir: Path):
    """A configuration that trains in about a second on the synthetic data."""
    from actopt.core.config import TrainConfig

    return TrainConfig.from_mapping(
        {
            "dataset": "mnist",
            "data_dir": str(data_dir),
            "download": False,
            "hidden_sizes": "32,16",
            "epochs": 3,
            "batch_size": 32,
            "device": "cpu",
            "log_model": False,
            "experiment_name": "tests",
        }
    )


@pytest.fixture
def recorder() -> RecordingLogger:
    return RecordingLogger()


@pytest.fixture
def restartable_server(tmp_path: Path):
    server = RestartableServer(tmp_path / "server")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """The URI of a tracking server shared by the session's server tests (each uses its own experiment)."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    process = start_mlflow_server(folder, port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL database for a tracking server: ACTOPT_TEST_POSTGRES_URL when set, else a
    throwaway cluster started here on 127.0.0.1 and a free port, with trust authentication (it
    listens on loopback only and lives as long as the test session)."""
    import subprocess
    import tempfile

    provided = os.environ.get("ACTOPT_TEST_POSTGRES_URL")
    if provided:
        yield provided
        return
    binaries = postgres_bin()
    if binaries is None:
        require("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql)")
    owner = postgres_owner()
    folder = Path(tempfile.mkdtemp(prefix="actopt-pg-"))  # not under pytest's folders, which only root may enter
    if owner:
        import pwd

        account = pwd.getpwnam(owner)
        os.chown(folder, account.pw_uid, account.pw_gid)
    port = free_port()

    def postgres(program: str, *arguments: str) -> None:
        subprocess.run([str(binaries / program), *arguments], check=True, capture_output=True, cwd=folder,
                       user=owner, group=owner, extra_groups=[] if owner else None)

    data = folder / "data"
    postgres("initdb", "-D", str(data), "-U", "actopt", "--auth=trust", "--encoding=UTF8", "--no-sync")
    postgres("pg_ctl", "start", "-w", "-D", str(data), "-l", str(folder / "server.log"),
             "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off")
    try:
        postgres("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "actopt", "mlflow")
        yield f"postgresql://actopt@127.0.0.1:{port}/mlflow"
    finally:
        postgres("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(data))
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str):
    """The URI of an `mlflow server` on 127.0.0.1 whose backend store is PostgreSQL."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError:
        require("psycopg is not installed: pip install 'actopt[server]'")
    folder = tmp_path_factory.mktemp("postgres-server")
    port = free_port()
    process = start_mlflow_server(folder, port, postgres_url)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


# What a Ray cluster of the tests may hold: two CPUs, a small object store, nothing listening for a browser.
RAY_CLUSTER_CPUS = 2
RAY_OBJECT_STORE_BYTES = 100_000_000


@pytest.fixture(scope="session")
def ray_module():
    """Ray itself, for the tests that need it."""
    try:
        import ray
    except ImportError:
        require("Ray is not installed: pip install 'actopt[ray]'")
    return ray


@pytest.fixture(scope="session")
def ray_cluster(ray_module):
    """The address of a Ray cluster started with `ray start --head` for the session, on loopback
    and free ports, stopped at the end by ending the `ray start --block` that owns its processes.
    It starts in a folder of its own without MLFLOW_TRACKING_URI or PYTHONPATH, so the tests see
    that the executor itself gives its workers the code and the store."""
    import subprocess
    import tempfile
    import time

    command = Path(sys.executable).with_name("ray")
    # Ray's session folder holds unix sockets, whose paths may not exceed about 100 characters.
    folder = Path(tempfile.mkdtemp(prefix="actopt-ray-"))
    port = free_port()
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("MLFLOW_TRACKING_URI", "PYTHONPATH", "RAY_ADDRESS")}
    # No token authentication, even where ~/.ray/auth_token exists (which `ray start` would otherwise
    # turn on, refusing drivers that join by address without the token): a test cluster on a free port.
    environment.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    log = open(folder / "start.log", "ab")
    process = subprocess.Popen(
        [str(command), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", str(RAY_CLUSTER_CPUS), "--num-gpus", "0", "--include-dashboard=false", "--disable-usage-stats",
         "--object-store-memory", str(RAY_OBJECT_STORE_BYTES), "--temp-dir", str(folder / "ray"),
         "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port())],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=environment)
    deadline = time.time() + 120
    while "Ray runtime started" not in (folder / "start.log").read_text(errors="replace"):
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"ray start failed: {(folder / 'start.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    process.terminate()  # `ray start --block` stops the cluster's processes as it ends
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """Sweeps, training and analyze install SIGINT/SIGTERM handlers in this process; each test leaves pytest's own."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
