"""What MLflow's system metrics cost a training run, measured two ways.

    PYTHONPATH=. python benchmarks/system_metrics.py --data-dir ../shared/data

1. One sample, piece by piece: MLflow's monitor, every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` (10 s
   by default), collects CPU, memory, disk and network figures, asks the store whether the run is still
   RUNNING, and logs the sample: each piece is timed here against a sqlite store.
2. Whole epochs: the default configuration (Fashion-MNIST, 784-256-128-10, Adam; epochs of 100 batches)
   trained with system metrics off and on, alternately. To lift the monitor's effect above run-to-run noise
   it samples every second, ten times as often as by default; the per-epoch cost at the default interval is
   a tenth of the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLES = 30
EPOCHS = 3
REPETITIONS = 2
# Batches per epoch: a tenth of Fashion-MNIST's 422 keeps the whole measurement to minutes on a shared machine.
MAX_BATCHES = 100
FAST_INTERVAL = 1.0
DEFAULT_INTERVAL = 10.0


def median_seconds(action, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def sample_costs() -> dict[str, float]:
    import mlflow
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("system-metrics-cost")).info.run_id
    monitor = SystemMetricsMonitor(run_id, tracking_uri=mlflow.get_tracking_uri())
    step = iter(range(10**6))

    def publish() -> None:
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()

    costs = {"collect (psutil)": median_seconds(monitor.collect_metrics, SAMPLES),
             "ask the run's status": median_seconds(lambda: client.get_run(run_id), SAMPLES)}
    monitor.collect_metrics()
    costs["log one sample"] = median_seconds(lambda: (monitor.collect_metrics(), next(step), publish()), SAMPLES) \
        - costs["collect (psutil)"]
    client.set_terminated(run_id)
    return costs


def epoch_times(data_dir: str) -> dict[bool, float]:
    from actopt.core.config import TrainConfig
    from actopt.tracking import runlog

    base = TrainConfig.from_mapping({"data_dir": data_dir, "download": False, "epochs": EPOCHS,
                                     "max_batches": MAX_BATCHES, "log_model": False, "device": "cpu",
                                     "experiment_name": "system-metrics-cost"})
    prepared = runlog.prepare(base)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(REPETITIONS):
        for enabled in (False, True):
            _, result = runlog.run_training(base.replace(system_metrics=enabled), prepared=prepared)
            times[enabled] += [row["epoch_time"] for row in result.history.values() if "epoch_time" in row]
    return {enabled: statistics.median(values) for enabled, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = str(FAST_INTERVAL)
        costs = sample_costs()
        per_sample = sum(costs.values())
        print("| one sample | ms |\n| --- | ---: |")
        for name, seconds in costs.items():
            print(f"| {name} | {1000 * seconds:.2f} |")
        print(f"| total | {1000 * per_sample:.2f} |\n")
        epochs = epoch_times(arguments.data_dir)
        difference = epochs[True] - epochs[False]
        print(f"median epoch_time ({MAX_BATCHES} batches), {EPOCHS} epochs × {REPETITIONS} runs each: "
              f"off {epochs[False]:.3f} s, "
              f"on (sampling every {FAST_INTERVAL:g} s) {epochs[True]:.3f} s, difference {1000 * difference:+.1f} ms")
        samples = epochs[True] / DEFAULT_INTERVAL
        print(f"at the default {DEFAULT_INTERVAL:g} s interval: {samples:.2f} samples per epoch × "
              f"{1000 * per_sample:.2f} ms = {1000 * samples * per_sample:.2f} ms per epoch "
              f"({100 * samples * per_sample / epochs[False]:.2f}% of the epoch); from the epoch times: "
              f"{1000 * difference * FAST_INTERVAL / DEFAULT_INTERVAL:+.1f} ms per epoch")


if __name__ == "__main__":
    main()
