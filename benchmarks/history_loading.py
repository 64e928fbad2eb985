"""Seconds to load a study's per-epoch histories: one history.csv per run vs one request per metric key.

    python benchmarks/history_loading.py [--runs 64] [--server]

Logs ``--runs`` synthetic runs shaped like a depth-8 MLP's (61 per-epoch metric keys, epochs 0..10,
and a history.csv artifact each) into a fresh sqlite store in a temporary folder, or, with
``--server``, through a local ``mlflow server`` on that store with proxied artifacts. Then it times
(a) ``queries.load_runs`` + ``queries.load_histories`` (history.csv artifacts, 8 parallel downloads),
(b) the same load for runs without history.csv (the fallback: get_metric_history per key),
(c) the baseline: ``get_metric_history`` once per run per key, one after the other, and
(d) the whole ``analyze_experiment`` (load, findings, every figure, report; not logged).
It prints a markdown table with the ratio of (c) to (a).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from actopt.analysis import analyze  # noqa: E402
from actopt.core.config import TrainConfig  # noqa: E402
from actopt.core.run_end import HISTORY_ARTIFACT, history_csv  # noqa: E402
from actopt.tracking import queries, store  # noqa: E402

EPOCHS = 10
DEPTH = 8  # 9 Linear layers: 6 + 2 + 4·9 + 9 + 8 = 61 per-epoch keys


def synthetic_history(seed: int, epochs: int = EPOCHS) -> dict[int, dict[str, float]]:
    layers = DEPTH + 1
    table: dict[int, dict[str, float]] = {}
    for step in range(epochs + 1):
        row = {f"probe_grad_max_abs/layer_{layer:02d}": 0.01 * layer + seed * 1e-4 for layer in range(1, layers + 1)}
        row.update({f"dead_fraction/layer_{layer:02d}": 0.01 * step for layer in range(1, layers)})
        if step:
            row.update(train_loss=1 / step, train_accuracy=0.8 + step / 100, val_loss=1.1 / step,
                       val_accuracy=0.79 + step / 100 + seed / 1e4, learning_rate=0.1, epoch_time=1.0,
                       grad_global_norm=1.0, grad_global_norm_peak=2.0)
            for prefix in ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_max_abs_peak"):
                row.update({f"{prefix}/layer_{layer:02d}": 0.1 * layer for layer in range(1, layers + 1)})
        table[step] = row
    return table


def log_study(client: MlflowClient, count: int, with_csv: bool, experiment: str, epochs: int = EPOCHS) -> None:
    experiment_id = client.create_experiment(experiment)
    rates = [0.0001, 0.001, 0.01, 0.1]
    for index in range(count):
        config = TrainConfig.from_mapping({
            "activation": ["sigmoid", "tanh", "relu", "lecun_tanh"][index % 4],
            "optimizer": "sgd" if index % 8 < 4 else "adam",
            "learning_rate": rates[(index // 8) % 4], "seed": index // 32, "depth": DEPTH, "epochs": epochs,
            "data_dir": "x", "study": "bench"})
        run_id = client.create_run(experiment_id, run_name=config.run_name).info.run_id
        table = synthetic_history(index, epochs)
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, step) for step, row in table.items() for key, value in row.items()]
        summary = {"best_val_accuracy": table[epochs]["val_accuracy"], "best_epoch": epochs, "test_accuracy": 0.88,
                   "test_loss": 0.3}
        metrics += [Metric(key, value, stamp, 0) for key, value in summary.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's log_batch limit
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        client.log_batch(run_id, params=[Param(k, v) for k, v in config.to_params().items()],
                         tags=[RunTag("diverged", "false"), RunTag("best_epoch", str(epochs))])
        if with_csv:
            client.log_text(run_id, history_csv(table), HISTORY_ARTIFACT)
        client.set_terminated(run_id)


def per_key_baseline(client: MlflowClient, experiment: str) -> float:
    started = time.perf_counter()
    runs = queries.load_runs(experiment)
    for run_id in runs["run_id"]:
        for key in client.get_run(run_id).data.metrics:
            client.get_metric_history(run_id, key)
    return time.perf_counter() - started


def timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, backend_store_uri: str | None = None) -> tuple[subprocess.Popen, str]:
    """A local ``mlflow server`` on a free port, proxying artifacts into ``folder``; its runs go to
    ``backend_store_uri``, by default a sqlite file there."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", backend_store_uri or f"sqlite:///{folder}/mlflow.db",
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):  # a first start migrates the database's schema: on PostgreSQL that takes a while
        try:
            MlflowClient(uri).search_experiments()
            return server, uri
        except Exception:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("mlflow server did not start within two minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--server", action="store_true", help="go through a local mlflow server (HTTP)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        os.chdir(folder)
        server = None
        if arguments.server:
            server, uri = start_server(folder)
        else:
            uri = f"sqlite:///{folder}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        try:
            client = store.connect()
            log_study(client, arguments.runs, True, "with-csv")
            log_study(client, arguments.runs, False, "without-csv")
            artifact = timed(lambda: queries.load_histories(queries.load_runs("with-csv")))
            fallback = timed(lambda: queries.load_histories(queries.load_runs("without-csv")))
            baseline = per_key_baseline(client, "with-csv")
            whole = timed(analyze.analyze_experiment, "with-csv", output_dir=folder / "analysis", log=False)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    print("| store | runs | history.csv, parallel | fallback per key, parallel | per key, sequential | ratio "
          "| whole analysis |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {'mlflow server (HTTP)' if arguments.server else 'sqlite'} | {arguments.runs} | {artifact:.2f} s | "
          f"{fallback:.2f} s | {baseline:.2f} s | {baseline / artifact:.0f}× | {whole:.2f} s |")


if __name__ == "__main__":
    main()
