"""Every rejected input of docs/bad-input.md, run as written: one line, the documented message and
exit code, and no run in the store. The test reads the table, so the two cannot drift apart."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from sweeping import without_announcement

from actopt.cli import main

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TABLE = PROJECT_ROOT / "docs" / "bad-input.md"
ROW = re.compile(r"^\| `(?P<command>[^`]+)` \| (?P<exit>\d+) \| `(?P<message>[^`]+)` \|$")
START, END = "<!-- rejected-inputs", "<!-- end of rejected-inputs -->"


@dataclass(frozen=True)
class Case:
    command: str
    exit_code: int
    message: str


def documented_cases() -> list[Case]:
    text = TABLE.read_text()
    rows = text.split(START, 1)[1].split(END, 1)[0].splitlines()[1:]
    table = [row for row in rows if row.startswith("| `")]
    cases = [Case(match["command"], int(match["exit"]), match["message"]) for match in map(ROW.match, table) if match]
    assert len(cases) == len(table), "a row of docs/bad-input.md does not read as | `command` | exit | `message` |"
    return cases


CASES = documented_cases()


def test_the_table_covers_every_command():
    commands = [shlex.split(case.command) for case in CASES]
    names = [words[[index for index, word in enumerate(words) if word == "actopt"][0] + 1] for words in commands]
    assert len(CASES) >= 15
    assert {"train", "sweep", "analyze"} <= set(names)
    assert {2, 1} == {case.exit_code for case in CASES}


@pytest.fixture
def placeholders(tmp_path: Path, data_dir: Path, tracking_store: str) -> dict[str, str]:
    """The folders and files the table's commands name, as it describes them."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "empty").mkdir()
    truncated, corrupt = inputs / "truncated", inputs / "corrupt"
    shutil.copytree(data_dir, truncated)
    shutil.copytree(data_dir, corrupt)
    labels = truncated / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:100])
    (corrupt / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"<html>Not Found</html>")
    (inputs / "broken.json").write_text('{"description": "x", "grid": {\n')
    (inputs / "typo.json").write_text('{"description": "x", "grid": {"activaton": ["relu", "tanh"]}}\n')
    (inputs / "file").write_text("")
    (inputs / "bigseed.json").write_text('{"description": "x", "seeds": [18446744073709551616], '
                                         '"grid": {"activation": ["relu"]}}\n')
    (inputs / "twice.json").write_text('{"description": "x", "grid": {"activation": ["relu"], '
                                       '"activation": ["tanh"]}}\n')
    (inputs / "deep.json").write_text('{"description": "x", "grid": {"activation": ' + "[" * 100_000
                                      + "]" * 100_000 + "}}\n")
    values = list(range(1, 1001))
    (inputs / "huge.json").write_text(json.dumps({"description": "x", "grid": {"epochs": values,
                                                                                "batch_size": values}}))
    (inputs / "clash").mkdir()
    (inputs / "clash" / "Default").write_text("")
    (inputs / "reportdir" / "Default" / "report.md").mkdir(parents=True)
    client = MlflowClient(tracking_store)
    client.delete_experiment(client.create_experiment("gone"))
    return {"$BIGSEED": str(inputs / "bigseed.json"), "$LONG": "x" * 501,
            "$TRUNCATED": str(truncated), "$CORRUPT": str(corrupt), "$EMPTY": str(inputs / "empty"),
            "$DATA": str(data_dir), "$BROKEN": str(inputs / "broken.json"), "$TYPO": str(inputs / "typo.json"),
            "$FILE": str(inputs / "file"), "$STORE": tracking_store, "$TWICE": str(inputs / "twice.json"),
            "$DEEP": str(inputs / "deep.json"), "$HUGE": str(inputs / "huge.json"), "$CLASH": str(inputs / "clash"),
            "$REPORTDIR": str(inputs / "reportdir")}


def resolve(text: str, placeholders: dict[str, str]) -> str:
    for name, value in placeholders.items():
        text = text.replace(name, value)
    return text


def split_command(command: str) -> tuple[dict[str, str], list[str]]:
    """``NAME=value ... actopt ARGS`` as the environment it sets and the arguments after ``actopt``."""
    words = shlex.split(command)
    environment = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        environment[name] = value
    assert words[0] == "actopt"
    return environment, words[1:]


def runs_in(uri: str) -> list:
    client = MlflowClient(uri)
    experiments = [item.experiment_id for item in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(experiments, run_view_type=ViewType.ALL)


@pytest.mark.parametrize("case", CASES, ids=[case.command for case in CASES])
def test_rejected_input_is_one_documented_line_and_creates_no_run(case, placeholders, tracking_store,
                                                                   monkeypatch):
    environment, arguments = split_command(resolve(case.command, placeholders))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == case.exit_code, result.output
    assert without_announcement(result.output) == [resolve(case.message, placeholders)]
    assert runs_in(tracking_store) == []
    assert [experiment.name for experiment in MlflowClient(tracking_store).search_experiments()] == ["Default"]


# A sample that also goes through a real process: the message is all of stderr, stdout is empty. One of
# each kind (click's usage error, a store that does not answer, with a password to mask; a store that
# cannot be created): each costs a process that imports torch and MLflow, and the in-process test above
# checks every row's message.
IN_A_PROCESS = [case for case in CASES if case.command in (
    "actopt train --foo 1", "MLFLOW_TRACKING_URI=http://user:secret@127.0.0.1:1 actopt train --data-dir $DATA",
    "MLFLOW_TRACKING_URI=sqlite:///$FILE/mlflow.db actopt train --data-dir $DATA")]


@pytest.mark.slow
@pytest.mark.parametrize("case", IN_A_PROCESS, ids=[case.command for case in IN_A_PROCESS])
def test_rejected_input_in_a_real_process(case, placeholders, tracking_store):
    assert len(IN_A_PROCESS) == 3  # a row renamed in CASES must not drop out of this sample silently
    environment, arguments = split_command(resolve(case.command, placeholders))
    completed = subprocess.run([sys.executable, "-m", "actopt", *arguments], capture_output=True, text=True,
                               timeout=120, env={**os.environ, **environment})
    assert completed.returncode == case.exit_code
    assert completed.stdout == ""
    assert completed.stderr.strip().splitlines() == [resolve(case.message, placeholders)]
    assert runs_in(tracking_store) == []
