"""Make the README's screenshots of the MLflow UI from a real three-seed study: the study's children in the runs
table, a child's run page (its description and logged model), and the analysis run's description.

    PYTHONPATH=. python docs/screenshots.py --data-dir /work/shared/data               # runs the study first
    PYTHONPATH=. python docs/screenshots.py --store sqlite:////tmp/study/mlflow.db     # a study already run

Without ``--store`` it runs ``actopt sweep mnist-overfitting --workers 2`` (18 runs, minutes) and ``actopt analyze``
into a temporary sqlite store; with it, the store must hold that study and its analysis run. A private
``mlflow server`` on 127.0.0.1 serves the store, headless Chromium (Debian's ``chromium``) opens the pages, and
the PNGs go to docs/images/, reduced to a small palette so that they stay small in the repository.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the browser and server helpers the UI test uses

from browser import screenshot  # noqa: E402
from conftest import free_port, start_mlflow_server  # noqa: E402

IMAGES = ROOT / "docs" / "images"
STUDY = "mnist-overfitting"
# The runs table is wide (params, metrics, tags as columns) and the 3.17 UI opens its assistant panel beside it.
STUDY_WINDOW = "2300,900"
# The run page puts the description below the run's details, tags and logged models: a tall window reaches it.
RUN_WINDOW = "1400,1700"
ANALYSIS_WINDOW = "1400,2400"
# Screenshots keep this many colours: the UI's flat colours survive, the files shrink several times.
PALETTE = 64


def run_study(data_dir: str, folder: Path) -> str:
    """The study and its analysis, by the commands a user types, into a sqlite store in ``folder``."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    for command in (["sweep", STUDY, "--workers", "2", "--data-dir", data_dir],
                    ["analyze", "--experiment", STUDY, "--output-dir", str(folder / "analysis")]):
        subprocess.run([sys.executable, "-m", "actopt", *command], check=True, cwd=folder, env=environment)
    return uri


def shrink(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(PALETTE).save(path, optimize=True)


def pages(address: str) -> dict[str, tuple[str, str]]:
    """Each screenshot's file, address and window."""
    from mlflow.tracking import MlflowClient

    from actopt.tracking import notes

    client = MlflowClient(address)
    experiment = client.get_experiment_by_name(STUDY).experiment_id
    runs = client.search_runs([experiment], order_by=["metrics.best_val_accuracy DESC"])
    analysis = next(run for run in runs if run.data.tags.get("actopt.kind") == "analysis")
    # A child whose diagnosis found something, so that the description shows a rule with its evidence.
    child = next((run for run in runs if run.data.tags.get(f"{notes.DIAGNOSIS_PREFIX}overfitting") == "true"),
                 next(run for run in runs if run.info.run_name.endswith("-seed1")))
    return {"study-runs.png": (notes.study_page_url(address, experiment), STUDY_WINDOW),
            "run-description.png": (notes.run_page_url(address, experiment, child.info.run_id), RUN_WINDOW),
            "analysis-description.png": (notes.run_page_url(address, experiment, analysis.info.run_id),
                                         ANALYSIS_WINDOW)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder with torchvision's raw MNIST files (to run the study)")
    parser.add_argument("--store", help="a tracking store that holds the study and its analysis already")
    arguments = parser.parse_args()
    if not (arguments.store or arguments.data_dir):
        parser.error("give --store, or --data-dir to run the study first")
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="actopt-screenshots-") as temporary:
        folder = Path(temporary)
        store = arguments.store or run_study(arguments.data_dir, folder)
        port = free_port()
        server = start_mlflow_server(folder / "server", port, store)
        address = f"http://127.0.0.1:{port}"
        try:
            for file_name, (url, window) in pages(address).items():
                shrink(screenshot(url, IMAGES / file_name, window))
                print(f"{IMAGES / file_name}: {url}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
