"""Wall time of a study through Ray (a local instance of 2 CPUs) vs the local process pool (2 workers).

    python benchmarks/executors.py --data-dir ../shared/data [--study fashion-activations] [--quick]
        [--backend-store-uri postgresql://USER@127.0.0.1:5432/DB]

Both executors log to the same kind of store: a local ``mlflow server`` (proxied artifacts in a
temporary folder) whose backend is a sqlite file there, or the database ``--backend-store-uri``
names (give an empty one: each executor gets an experiment of its own, and the runs stay there).
Each runs the whole study in a fresh experiment: the process pool first, then Ray, after the
dataset has been read once so that both find it in the page cache. The table gives each one's
wall time (from creating the executor to the sweep's end), the time until its first run started,
and for Ray the seconds ``ray.init`` took; Ray's start-up cost is its extra time to the first run.
``--quick`` runs the first 2 configurations for 1 epoch each instead: a check, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from history_loading import start_server  # noqa: E402  (this folder is on sys.path when run as a script)

from actopt.core.data import load_raw  # noqa: E402
from actopt.sweeps.executors import ProcessExecutor  # noqa: E402
from actopt.sweeps.ray_executor import RayExecutor  # noqa: E402
from actopt.sweeps.study import configurations, load_study  # noqa: E402
from actopt.sweeps.sweep import ensure_datasets, run_sweep  # noqa: E402
from actopt.tracking import records  # noqa: E402

CPUS = 2
QUICK_CONFIGURATIONS = 2


def first_run_start(parent_run_id: str) -> float:
    """When the sweep's first child run started (seconds since the epoch)."""
    return min(run.start_time for run in records.sweep_children(parent_run_id)) / 1000


def measure(name: str, make_executor, study, configs) -> dict[str, float | str]:
    started = time.time()
    executor = make_executor()
    connect = executor.connect().seconds if isinstance(executor, RayExecutor) else None
    result = run_sweep(study, configs, executor)
    wall = time.time() - started
    finished = sum(row.status in ("finished", "diverged") for row in result.rows)
    return {"executor": name, "wall": wall, "first_run": first_run_start(result.parent_run_id) - started,
            "connect": connect, "finished": f"{finished}/{len(result.rows)}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("ACTOPT_DATA_DIR", "./data"))
    parser.add_argument("--study", default="fashion-activations")
    parser.add_argument("--quick", action="store_true",
                        help=f"the first {QUICK_CONFIGURATIONS} configurations, 1 epoch each")
    parser.add_argument("--backend-store-uri", default="",
                        help="the server's database [default: sqlite in a temporary folder]")
    arguments = parser.parse_args()
    data_dir = os.path.abspath(arguments.data_dir)
    study = load_study(arguments.study)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        os.chdir(folder)
        server, uri = start_server(folder, arguments.backend_store_uri or f"sqlite:///{folder}/server.db")
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # a line per run would bury the table
        try:
            rows = []
            for name, make_executor in ((f"process pool, {CPUS} workers", lambda: ProcessExecutor(CPUS)),
                                        (f"Ray, local instance of {CPUS} CPUs", lambda: RayExecutor(local_cpus=CPUS))):
                configs = configurations(study, data_dir=data_dir, download=False,
                                         experiment_name=f"{study.name}: {name}")
                if arguments.quick:
                    configs = [config.replace(epochs=1, log_model=False) for config in configs[:QUICK_CONFIGURATIONS]]
                ensure_datasets(configs)
                load_raw(configs[0].dataset, data_dir, False)  # into the page cache, for both alike
                rows.append(measure(name, make_executor, study, configs))
        finally:
            server.terminate()
            server.wait(timeout=30)
    pool, ray = rows
    print(f"{study.name}{' (--quick)' if arguments.quick else ''}, store: mlflow server on "
          f"{'PostgreSQL' if arguments.backend_store_uri else 'sqlite'}, {os.cpu_count()} cores")
    print("| executor | finished | wall time | first run started after | ray.init |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        connect = f"{row['connect']:.1f} s" if row["connect"] is not None else "-"
        print(f"| {row['executor']} | {row['finished']} | {row['wall']:.1f} s | {row['first_run']:.1f} s | {connect} |")
    print(f"\nwall time Ray / process pool: {ray['wall'] / pool['wall']:.2f}; "
          f"Ray's start-up cost (extra time to the first run): {ray['first_run'] - pool['first_run']:+.1f} s")


if __name__ == "__main__":
    main()
