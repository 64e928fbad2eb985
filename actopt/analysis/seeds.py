"""Seeds counted once: a configuration trained twice at one seed (a rerun, an extended grid, `train --study` beside a
sweep) is one seed, not two; a mean over seeds and its interval count each seed once."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def distinct_seeds(runs: pd.DataFrame, identity: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs with one run per value of the ``identity`` columns (configuration, seed, data; the first started
    is kept), and the others with the reason each is left out: ``run_name, run_id, status, reason``."""
    ordered = runs.sort_values(["start_time", "run_id"], kind="stable")
    columns = [name for name in identity if name in runs]
    keys = ordered[columns].astype(str).apply(tuple, axis=1)
    repeated = keys.duplicated()
    kept_ids = pd.Series(ordered["run_id"].values, index=keys.values).groupby(level=0).first()
    dropped = ordered[repeated]
    reasons = [f"a second run of the same configuration and seed {row['seed']} (run {kept_ids[key][:8]} is kept)"
               for key, (_, row) in zip(keys[repeated], dropped.iterrows())]
    left_out = dropped[["run_name", "run_id", "status"]].assign(reason=reasons)
    return runs[~runs["run_id"].isin(dropped["run_id"])].reset_index(drop=True), left_out.reset_index(drop=True)
