"""One sweep of a study at a time, through nothing but the store: a claim run per sweep start.

MLflow has no lock, and two sweeps of one study started at the same moment would both find no parent run, or
both plan every configuration. Before it looks at the parent, each sweep creates a claim run (RUNNING, tagged
with the study and its process) and then reads every live claim of that study. The rule:

- a sweep that sees no other live claim has won and goes on;
- a sweep that sees another ends its own claim and waits for the others' decisions: if one of them won, this
  sweep is refused ("already being swept"); if all of them gave up too, it tries again after a random pause.

Why two sweeps can never both win: each reads after its own claim is stored, so of two claims the one stored
second is seen by the other's read or by its own, and whoever sees another does not win. This holds for any
store that shows a committed write to every later read (sqlite, and a server over one database). Claims whose
process is gone (same host, no such process) are ended and ignored; a won claim is ended and deleted when its
sweep ends.

A reply can be lost after the store committed the claim (a proxy answering 504): the client's retry then
stores a second run of the same claim. Each attempt tags its claim with a token of its own, so a sweep
recognises every run that carries its token as itself, ends the extra ones and does not refuse itself.
"""

from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from actopt.errors import UserError
from actopt.tracking.records import (
    ERROR_TAG,
    HOST_TAG,
    KIND_TAG,
    PID_TAG,
    ensure_experiment,
    owner_gone,
    process_tags,
    search_all,
)
from actopt.tracking.store import configure, quick_http

CLAIM_KIND = "sweep-claim"
# Which study (digest) and mode a claim is for: its own tag, so that no search for parents finds claims.
CLAIM_TAG = "actopt.claim_for"
# pending while the claim reads the others; won, or yielded (then the run ends KILLED).
DECISION_TAG = "actopt.claim_decision"
PENDING, WON, YIELDED = "pending", "won", "yielded"
# A token per claim attempt: the runs a retried create_run stored twice carry the same one.
TOKEN_TAG = "actopt.claim_token"
# Tries when every contender gave way at once (each saw the others); a random pause separates them.
ATTEMPTS = 8
PAUSE_SECONDS = (0.05, 0.5)
# How long a sweep waits for another claim's decision, which comes one request after its read.
DECISION_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Claim:
    run_id: str
    host: str
    pid: int | None
    decision: str
    status: str
    token: str = ""


def as_claim(run: Any) -> Claim:
    tags = run.data.tags
    pid = tags.get(PID_TAG, "")
    return Claim(run.info.run_id, tags.get(HOST_TAG, ""), int(pid) if pid.isdigit() else None,
                 tags.get(DECISION_TAG, PENDING), run.info.status, tags.get(TOKEN_TAG, ""))


def claim_key(study_digest: str, quick: bool) -> str:
    return f"{study_digest}/{str(quick).lower()}"


def gone(claim: Claim) -> bool:
    """A claim whose process, on this host, no longer exists: its sweep is over, however it ended."""
    return owner_gone(claim.host, claim.pid)


def end_claim(client: MlflowClient, run_id: str, decision: str, status: str, reason: str | None = None) -> None:
    tags = [RunTag(DECISION_TAG, decision)] + ([RunTag(ERROR_TAG, reason)] if reason else [])
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status)
    client.delete_run(run_id)


def live_claims(client: MlflowClient, experiment_id: str, key: str) -> list[Claim]:
    """The RUNNING claims of this study; those whose process is gone are ended on the way."""
    found = [as_claim(run) for run in search_all(client, experiment_id, f"tags.`{CLAIM_TAG}` = '{key}' and "
                                                                          "attributes.status = 'RUNNING'")]
    live = []
    for claim in found:
        if gone(claim):
            end_claim(client, claim.run_id, YIELDED, "FAILED", f"process {claim.pid} on {claim.host} is gone")
        else:
            live.append(claim)
    return live


def decided(client: MlflowClient, run_id: str) -> Claim:
    """Another claim once it has decided (or ended), read again until then."""
    deadline = time.monotonic() + DECISION_WAIT_SECONDS
    while True:
        claim = as_claim(client.get_run(run_id))
        if claim.decision != PENDING or claim.status != "RUNNING" or gone(claim):
            return claim
        if time.monotonic() > deadline:
            return claim  # undecided for too long: treated as the holder, which is the safe side
        time.sleep(POLL_SECONDS)


def refusal(holder: Claim) -> str:
    where = f"process {holder.pid}" + ("" if holder.host == socket.gethostname() else f" on {holder.host}")
    return (f"this study is already being swept by {where} (claim run {holder.run_id}); stop it first, or wait "
            f"for it; if that process is gone from another machine, run `mlflow runs delete --run-id "
            f"{holder.run_id}`")


def claim_sweep(experiment_name: str, study: str, study_digest: str, quick: bool,
                sleep: Callable[[float], None] = time.sleep) -> str:
    """This process's won claim on the study (its run id), or a UserError naming the sweep that holds it."""
    client = configure()
    experiment_id = ensure_experiment(client, experiment_name)
    key = claim_key(study_digest, quick)
    tags = {KIND_TAG: CLAIM_KIND, CLAIM_TAG: key, DECISION_TAG: PENDING, "mlflow.runName": f"{study} (sweep claim)",
            **process_tags()}
    for _ in range(ATTEMPTS):
        token = uuid.uuid4().hex
        own = client.create_run(experiment_id, tags={**tags, TOKEN_TAG: token},
                                run_name=tags["mlflow.runName"]).info.run_id
        live = live_claims(client, experiment_id, key)
        for copy in live:
            if copy.token == token and copy.run_id != own:  # stored twice by a retried request
                end_claim(client, copy.run_id, YIELDED, "KILLED", "a second copy of this sweep's own claim")
        others = [claim for claim in live if claim.token != token]
        if not others:
            client.set_tag(own, DECISION_TAG, WON)
            return own
        end_claim(client, own, YIELDED, "KILLED", "another sweep of this study claimed it at the same moment")
        for other in others:
            seen = decided(client, other.run_id)
            if seen.status == "RUNNING" and not gone(seen) and seen.decision != YIELDED:
                raise UserError(refusal(seen))
        sleep(random.uniform(*PAUSE_SECONDS))
    raise UserError("another sweep of this study kept starting at the same moment; start this one again")


def release(run_id: str) -> None:
    """End and delete a won claim: the sweep is over. With the short retry window: a sweep ending because its
    server is gone says so at once, not after another whole window (a claim left RUNNING is ended by the next
    sweep, once its process is gone)."""
    with quick_http():
        end_claim(configure("check"), run_id, WON, "FINISHED")
