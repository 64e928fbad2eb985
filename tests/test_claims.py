"""One sweep of a study at a time (issue 14): claims that race, on sqlite and through a real `mlflow server`, and
identical sweeps started at the same moment, none of whose configurations ever gets two FINISHED runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweeping import write_study

from actopt.errors import UserError
from actopt.tracking import claims, records

# Contenders per round and rounds: enough that claims land within milliseconds of each other many times.
CONTENDERS = 4
ROUNDS = 12
REFUSAL = "this study is already being swept by process"


def race(experiment: str, study_digest: str) -> tuple[list[str], list[str]]:
    """CONTENDERS threads claim the same study at one instant; returns (won claim ids, refusal messages)."""
    barrier = threading.Barrier(CONTENDERS)
    won: list[str] = []
    refused: list[str] = []
    failures: list[BaseException] = []

    def contend() -> None:
        barrier.wait()
        try:
            won.append(claims.claim_sweep(experiment, "tiny", study_digest, quick=False))
        except UserError as error:
            refused.append(str(error))
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)

    threads = [threading.Thread(target=contend) for _ in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert failures == []
    return won, refused


def assert_one_claim_wins_every_round(experiment: str) -> None:
    for round_number in range(ROUNDS):
        won, refused = race(experiment, f"digest{round_number % 3}")
        # Safety: never two. And the others are refused with the README's words, naming the holder.
        assert len(won) == 1, (won, refused)
        assert len(refused) == CONTENDERS - 1
        assert all(message.startswith(REFUSAL) and won[0] in message for message in refused), refused
        claims.release(won[0])


def test_claims_that_race_on_sqlite_let_exactly_one_sweep_go_on(tracking_store):
    assert_one_claim_wins_every_round("race")
    client = MlflowClient(tracking_store)
    experiment = client.get_experiment_by_name("race")
    # Ended claims are deleted: nothing stays in the experiment's run list.
    assert client.search_runs([experiment.experiment_id]) == []


@pytest.mark.slow
def test_claims_that_race_through_a_server_let_exactly_one_sweep_go_on(mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert_one_claim_wins_every_round(f"race-{tmp_path.name}")


def test_a_claim_whose_process_is_gone_is_ended_and_does_not_block(tracking_store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client = MlflowClient(tracking_store)
    experiment_id = records.ensure_experiment(client, "stale")
    key = claims.claim_key("digest", False)
    left = client.create_run(experiment_id, tags={claims.CLAIM_TAG: key, claims.DECISION_TAG: claims.WON,
                                                  records.HOST_TAG: os.uname().nodename,
                                                  records.PID_TAG: dead.stdout.strip()}).info.run_id
    won = claims.claim_sweep("stale", "tiny", "digest", quick=False)
    assert won != left
    assert client.get_run(left).info.status == "FAILED"
    assert "is gone" in client.get_run(left).data.tags[records.ERROR_TAG]


def test_a_live_claim_refuses_the_second_sweep_with_the_readme_message(tracking_store):
    holder = claims.claim_sweep("held", "tiny", "digest", quick=False)
    with pytest.raises(UserError) as refused:
        claims.claim_sweep("held", "tiny", "digest", quick=False)
    assert str(refused.value).startswith(f"{REFUSAL} {os.getpid()} (claim run {holder}); stop it first, or wait")
    # Another study, or the quick mode of this one, is another claim.
    other = claims.claim_sweep("held", "tiny", "digest", quick=True)
    for claim in (holder, other):
        claims.release(claim)


# --- whole sweeps started at the same moment ----------------------------------------------------------------------

SWEEPS_AT_ONCE = 3


def start_sweeps(path: Path, data_dir: Path, experiment: str, folder: Path) -> list[tuple[int, str]]:
    """SWEEPS_AT_ONCE identical sweeps started together; their exit codes and stderr."""
    command = [sys.executable, "-m", "actopt", "sweep", str(path), "--data-dir", str(data_dir), "--experiment-name",
               experiment]
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(folder / f"err{index}.txt", "w"))
                 for index in range(SWEEPS_AT_ONCE)]
    codes = [process.wait(timeout=600) for process in processes]
    return [(code, (folder / f"err{index}.txt").read_text()) for index, code in enumerate(codes)]


def finished_per_digest(uri: str, experiment: str) -> Counter:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
    return Counter(run.data.tags[records.CONFIG_DIGEST_TAG] for run in runs
                   if records.CONFIG_DIGEST_TAG in run.data.tags)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_identical_sweeps_started_at_once_never_finish_a_configuration_twice(tmp_path, data_dir, request,
                                                                            monkeypatch, where):
    rounds = 2
    path = write_study(tmp_path, {"activation": ["relu", "tanh"]}, hidden_sizes=[16], epochs=1, max_batches=2,
                       gradient_statistics=False, log_model=False)
    for round_number in range(rounds):
        if where == "sqlite":  # a fresh store each round: its creation races too
            uri = f"sqlite:///{tmp_path / f'fresh{round_number}.db'}"
        else:
            uri = request.getfixturevalue("mlflow_server")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        experiment = f"at-once-{tmp_path.name}-{round_number}"
        outcomes = start_sweeps(path, data_dir, experiment, tmp_path)
        for code, stderr in outcomes:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            # Each either ran (or found everything finished), or was refused with the README's line.
            assert code == 0 or (code == 1 and last.startswith(f"Error: {REFUSAL}")), stderr[-3000:]
            assert "Traceback" not in stderr and "IntegrityError" not in stderr
        assert any(code == 0 for code, _ in outcomes)
        counts = finished_per_digest(uri, experiment)
        assert len(counts) == 2 and set(counts.values()) == {1}, counts


def test_the_analysis_leaves_a_live_claim_run_out(tracking_store):
    from fake_runs import history, log_run

    from actopt.analysis import frames
    from actopt.tracking import queries

    client = MlflowClient(tracking_store)
    trained = log_run(client, "study", {"activation": "relu"}, history("relu"))
    claim = claims.claim_sweep("study", "tiny", "digest", quick=False)  # a sweep of it is going on
    runs, left_out = frames.select_runs(queries.load_runs("study", kinds=None), "study", None, "")
    assert list(runs["run_id"]) == [trained]
    assert left_out.set_index("run_id").loc[claim, "reason"] == "a sweep's claim run (that sweep is still going)"
