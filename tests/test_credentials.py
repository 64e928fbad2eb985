"""No password of a tracking URI in any output (issue 14): messages, MLflow's log lines and warnings, tags, params,
the report and its analysis run."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from sweeping import write_study

from actopt.cli import main
from actopt.tracking import masking, runlog

SECRET = "s3cret-pw"


@pytest.fixture
def restore_masking(monkeypatch):
    monkeypatch.delenv(masking.SUPPRESS_URL_VARIABLE, raising=False)
    original = warnings.formatwarning
    yield
    warnings.formatwarning = original


def test_mlflow_log_lines_and_warnings_are_masked(restore_masking):
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logger = logging.getLogger("mlflow.tracking.somewhere")
    logging.getLogger("mlflow").addHandler(handler)
    try:
        masking.hide_credentials(f"http://user:{SECRET}@127.0.0.1:5000")
        logger.warning("request to %s failed", f"http://user:{SECRET}@127.0.0.1:5000/api")
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    assert SECRET not in buffer.getvalue() and "http://user:***@127.0.0.1:5000/api" in buffer.getvalue()
    text = warnings.formatwarning(f"retrying https://me:{SECRET}@host/x", UserWarning, "file.py", 1)
    assert SECRET not in text and "https://me:***@host/x" in text


def test_mlflow_prints_no_run_url_for_a_uri_with_a_password(restore_masking):
    import os

    masking.hide_credentials("http://127.0.0.1:5000")
    assert masking.SUPPRESS_URL_VARIABLE not in os.environ  # nothing to hide: MLflow's link stays
    masking.hide_credentials(f"http://user:{SECRET}@127.0.0.1:5000")
    assert os.environ[masking.SUPPRESS_URL_VARIABLE] == "true"


def test_tags_that_mlflow_sets_with_a_password_are_masked(tracking_store):
    client = MlflowClient(tracking_store)
    tags = {"mlflow.source.git.repoURL": f"https://bot:{SECRET}@git.example.org/lab/actopt.git", "plain": "kept"}
    run_id = client.create_run(client.create_experiment("tags"), tags=tags).info.run_id
    runlog.mask_tags(client, run_id)
    tags = client.get_run(run_id).data.tags
    assert tags["mlflow.source.git.repoURL"] == "https://bot:***@git.example.org/lab/actopt.git"
    assert tags["plain"] == "kept"


def test_a_database_uri_with_a_password_is_masked_in_the_error(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://user:{SECRET}@127.0.0.1:1/mlflow")
    result = CliRunner().invoke(main, ["analyze", "--experiment", "x"])
    assert result.exit_code == 1
    assert SECRET not in result.output
    assert result.output.startswith("Error: cannot read the tracking store postgresql://user:***@127.0.0.1:1/mlflow: ")


def everything_logged(client: MlflowClient, experiment: str, folder: Path) -> str:
    """Every param, tag and text artifact of every run in ``experiment``, as one text."""
    found = client.get_experiment_by_name(experiment)
    parts = []
    for run in client.search_runs([found.experiment_id], max_results=1000):
        parts += [f"{key}={value}" for key, value in {**run.data.params, **run.data.tags}.items()]
        target = folder / run.info.run_id
        target.mkdir()
        local = Path(client.download_artifacts(run.info.run_id, "", str(target)))
        parts += [path.read_text(errors="replace") for path in local.rglob("*")
                  if path.is_file() and path.suffix in (".md", ".json", ".csv", ".txt", ".yaml", "")]
    return "\n".join(parts)


@pytest.mark.slow
def test_no_password_reaches_any_output_through_a_real_server(tmp_path, data_dir, mlflow_server, monkeypatch):
    host = mlflow_server.removeprefix("http://")
    uri = f"http://user:{SECRET}@{host}"  # a server without authentication ignores the credentials
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment = f"secret-{tmp_path.name}"
    path = write_study(tmp_path, {"activation": ["relu", "tanh"]}, hidden_sizes=[16], epochs=1, max_batches=2,
                       gradient_statistics=False, log_model=False)
    commands = [
        ["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--download", "false", "--hidden-sizes", "16",
         "--epochs", "1", "--max-batches", "2", "--log-model", "false", "--experiment-name", f"{experiment}-train"],
        ["sweep", str(path), "--data-dir", str(data_dir), "--experiment-name", experiment],
        ["analyze", "--experiment", experiment, "--output-dir", str(tmp_path / "analysis")],
    ]
    for command in commands:
        completed = subprocess.run([sys.executable, "-m", "actopt", *command], capture_output=True, text=True,
                                   timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert SECRET not in completed.stdout + completed.stderr, command[0]
    report = next((tmp_path / "analysis").rglob("report.md")).read_text()
    assert f"tracking store `http://user:***@{host}`" in report and SECRET not in report
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    client = MlflowClient(mlflow_server)
    logged = everything_logged(client, experiment, downloads) + everything_logged(client, f"{experiment}-train",
                                                                                    downloads)
    assert SECRET not in logged


@pytest.mark.parametrize(("text", "shown"), [
    (f"postgresql://user:two@{SECRET}@db.example.org:5432/mlflow",
     "postgresql://user:***@db.example.org:5432/mlflow"),
    (f"postgresql://user:pa/{SECRET}@db.example.org/mlflow", "postgresql://user:***@db.example.org/mlflow"),
    (f"postgresql://user@db.example.org/mlflow?sslmode=require&password={SECRET}",
     "postgresql://user@db.example.org/mlflow?sslmode=require&password=***"),
    (f"https://db.example.org/?token={SECRET}&x=1", "https://db.example.org/?token=***&x=1"),
    (f"http://{SECRET}@127.0.0.1:5000", "http://***@127.0.0.1:5000"),
    (f"cannot reach 'http://{SECRET}@host/api' now", "cannot reach 'http://***@host/api' now"),
    (f"https://bot:{SECRET}@git.example.org/lab/x.git and http://a:{SECRET}@b",
     "https://bot:***@git.example.org/lab/x.git and http://a:***@b"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("http://127.0.0.1/path/with@sign", "http://127.0.0.1/path/with@sign"),
    ("mail user@example.org", "mail user@example.org"),
])
def test_every_form_of_credential_in_a_uri_is_masked(text, shown):
    from actopt.errors import mask_credentials

    assert mask_credentials(text) == shown
    assert SECRET not in mask_credentials(text)
