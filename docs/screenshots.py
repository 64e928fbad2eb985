"""Make the README's two screenshots of the MLflow UI from a real sweep: a run page with its description, and the
runs table filtered by a diagnosis tag.

    PYTHONPATH=. python docs/screenshots.py --data-dir /work/shared/data

Starts a private `mlflow server` on 127.0.0.1 (sqlite in a temporary folder), trains a small Fashion-MNIST
study into it as single runs (six configurations, two epochs of 100 batches each; single runs, because the
runs table folds a sweep's children under their parent), then points headless Chromium
(Debian's ``chromium``) at the pages and writes docs/images/run-description.png and
docs/images/runs-filtered.png, reduced to a small palette so that they stay small in the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the browser and server helpers the UI test uses

from browser import screenshot  # noqa: E402
from conftest import free_port, start_mlflow_server  # noqa: E402

IMAGES = ROOT / "docs" / "images"
STUDY = {
    "description": "Screenshot study: ReLU, GELU and tanh under SGD at a sane and an excessive learning rate.",
    "fixed": {"dataset": "fashion-mnist", "hidden_sizes": [256, 128], "epochs": 2, "max_batches": 100,
              "batch_size": 128, "log_model": False, "device": "cpu"},
    "grid": {"activation": ["relu", "gelu", "tanh"], "optimizer": {"sgd": {"learning_rate": [0.1, 5.0]}}},
}
# The diagnosis shown, in order of preference: the first that holds for some run.
PREFERRED = ("dead_units", "inactive_units", "saturation", "vanishing_gradients", "exploding_gradients",
             "divergence", "overfitting")
# The run page puts the description below the run's details and tags: a tall window reaches it.
RUN_WINDOW = "1400,1500"
RUNS_WINDOW = "1400,600"
# Screenshots keep this many colours: the UI's flat colours survive, the files shrink several times.
PALETTE = 64


def train_study(data_dir: str, folder: Path) -> str:
    """Train the study's configurations as single runs into the server that MLFLOW_TRACKING_URI names, with
    the study's description on the experiment; returns the experiment's name."""
    from actopt.sweeps.study import configurations, load_study
    from actopt.sweeps.sweep import ensure_datasets
    from actopt.tracking import notes, runlog, store

    path = folder / "ui-screenshots.json"
    path.write_text(json.dumps(STUDY))
    study = load_study(str(path))
    configs = configurations(study, data_dir=data_dir, download=False)
    ensure_datasets(configs)
    for config in configs:
        runlog.run_training(config)
        print(f"trained {config.run_name}")
    client = store.configure()
    notes.mark_experiment(client, client.get_experiment_by_name(study.name).experiment_id, study.description)
    return study.name


def shrink(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(PALETTE).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder with torchvision's raw FashionMNIST files")
    arguments = parser.parse_args()
    import os

    from mlflow.tracking import MlflowClient

    from actopt.tracking import notes

    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="actopt-screenshots-") as temporary:
        folder = Path(temporary)
        port = free_port()
        server = start_mlflow_server(folder / "server", port)
        address = f"http://127.0.0.1:{port}"
        os.environ["MLFLOW_TRACKING_URI"] = address
        try:
            name = train_study(arguments.data_dir, folder)
            client = MlflowClient(address)
            experiment = client.get_experiment_by_name(name).experiment_id
            for rule in PREFERRED:
                search = f"tags.`{notes.DIAGNOSIS_PREFIX}{rule}` = 'true'"
                found = client.search_runs([experiment], search)
                if found:
                    break
            else:
                raise SystemExit("no run of the study had a diagnosis to show; change STUDY")
            run = found[0]
            pages = {"run-description.png": (notes.run_page_url(address, experiment, run.info.run_id), RUN_WINDOW),
                     "runs-filtered.png": (notes.runs_page_url(address, experiment, search), RUNS_WINDOW)}
            for file_name, (url, window) in pages.items():
                shrink(screenshot(url, IMAGES / file_name, window))
                print(f"{IMAGES / file_name}: {url}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
