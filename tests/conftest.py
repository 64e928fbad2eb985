"""Shared fixtures: small IDX datasets in torchvision's raw layout, and a private tracking store per test.

Every test runs with MLFLOW_TRACKING_URI pointing at its own copy of a store migrated once per
session, and with the working directory in a temporary folder (artifacts land in ./mlruns there),
so no test can write into a user's store.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

# Small enough that a run takes a second, large enough that a real learning curve appears.
TRAIN_EXAMPLES = 600
TEST_EXAMPLES = 200


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (magic 0x08, then the dimension count) as the originals are."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class lights its own band of rows, plus noise: learnable in a few steps, not trivially."""
    images = rng.integers(0, 90, size=(len(labels), 28, 28))
    for index, label in enumerate(labels):
        images[index, 2 + 2 * label : 5 + 2 * label, 4:24] += 150
    return np.clip(images, 0, 255)


def write_dataset(root: Path, folder: str, seed: int) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", TRAIN_EXAMPLES), ("t10k", TEST_EXAMPLES)):
        labels = rng.integers(0, 10, size=count)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", make_images(labels, rng))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


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
                 "MLFLOW_HTTP_REQUEST_TIMEOUT"):
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


class RecordingLogger:
    """A ``training.RunLogger`` that keeps every call, so tests can check what a run logged."""

    def __init__(self) -> None:
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.tags: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.dicts: dict[str, dict[str, Any]] = {}
        self.images: list[tuple[str, int, np.ndarray]] = []
        self.models: list[Any] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self.dicts[artifact_file] = data

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.images.append((key, step, image))

    def log_model(self, model: Any, input_example: np.ndarray) -> None:
        self.models.append((model, input_example))

    def series(self, key: str) -> dict[int | None, float]:
        """Every value logged under ``key``, by step."""
        return {step: metrics[key] for step, metrics in self.metrics if key in metrics}


@pytest.fixture
def recorder() -> RecordingLogger:
    return RecordingLogger()


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
