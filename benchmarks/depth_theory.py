"""Issue 16's acceptance: predicted against measured gradient decay at initialisation on real MNIST.

    python benchmarks/depth_theory.py --data-dir ../shared/data            # ~12 min on 2 cores
    python benchmarks/depth_theory.py --store /tmp/store/mlflow.db         # an existing sweep's store

Runs ``depth-theory-study.json`` (the mnist-depth study at depth 20, width 128, seeds 0, 1, 2) with
``actopt sweep --quick`` into a fresh sqlite store in a temporary folder — only step 0, logged before
any training, matters here — or reads the store given with ``--store``. Then it prints, per
activation × init, the measured per-layer decay of the step-0 weight-gradient norm (decades per
layer, least-squares slope over hidden layers 2..20, mean over seeds) of the minibatch gradient and
of each example's own gradient, the mean-field prediction (``actopt.analysis.propagation``), and
whether the prediction lies within 20% of the measurement (or both within 0.02 of zero).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actopt.analysis import depth_theory, tables  # noqa: E402
from actopt.tracking import queries  # noqa: E402

STUDY = Path(__file__).resolve().parent / "depth-theory-study.json"
EXPERIMENT = "depth-theory-study-quick"


def run_study(store: Path, data_dir: str) -> None:
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "actopt", "sweep", str(STUDY), "--quick", "true", "--data-dir", data_dir,
               "--download", "false", "--device", "cpu"]
    subprocess.run(command, env=environment, cwd=store.parent, check=True)


def acceptance_table(store: Path) -> str:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    runs = queries.load_runs(EXPERIMENT)
    histories = queries.load_histories(runs)
    table = tables.run_table(runs, histories)
    theory = depth_theory.derive_theory(table, histories)
    configs, layers = theory.configs, theory.layers
    runs_by_config = depth_theory.run_comparison(table, layers, depth_theory.predictions(table, histories))
    last = layers.loc[layers.groupby("run_id")["layer"].idxmax()].merge(table[["run_id", "activation", "init"]])
    header = ["activation", "init", "seeds", "decay measured (minibatch)", "seed range", "decay measured (per example)",
              "decay predicted", "error", "within 20%", "span measured", "span predicted", "q^20 measured",
              "q^20 predicted"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in configs.iterrows():
        same = (runs_by_config["activation"] == row["activation"]) & (runs_by_config["init"] == row["init"])
        seeds = runs_by_config.loc[same, "measured_decay"]
        q = last[(last["activation"] == row["activation"]) & (last["init"] == row["init"])]
        error = "–" if row["relative_error"] != row["relative_error"] else f"{row['relative_error']:.1%}"
        lines.append("| " + " | ".join([
            row["activation"], row["init"], str(row["seeds"]), f"{row['measured_decay']:.4f}",
            f"{seeds.min():.4f} … {seeds.max():.4f}", f"{row['example_decay']:.4f}", f"{row['predicted_decay']:.4f}",
            error, "yes" if row["agrees"] else "**no**", f"{row['measured_span']:.2f}", f"{row['predicted_span']:.2f}",
            f"{q['measured_q'].mean():.4g}", f"{q['predicted_q'].mean():.4g}"]) + " |")
    met = int(configs["agrees"].sum())
    lines += ["", f"{met} of {len(configs)} configurations within the target."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("ACTOPT_DATA_DIR", "data"))
    parser.add_argument("--store", type=Path, help="an sqlite store that already holds the study's runs")
    arguments = parser.parse_args()
    if arguments.store:
        print(acceptance_table(arguments.store.resolve()))
        return
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "mlflow.db"
        run_study(store, arguments.data_dir)
        print(acceptance_table(store))


if __name__ == "__main__":
    main()
