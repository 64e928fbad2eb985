"""Which runs the gradient-histogram figure shows: the loader and the figure must pick the same ones."""

import pandas as pd

from actopt.analysis import tables
from actopt.core.metric_names import BEST_VAL_ACCURACY


def runs_frame() -> pd.DataFrame:
    # Sigmoid: every run collapsed to chance (a tie); relu: one learned best, two tied at chance, one diverged.
    rows = [("s1", "sigmoid", 0.116, False), ("s2", "sigmoid", 0.116, False), ("s3", "sigmoid", 0.116, False),
            ("r1", "relu", 0.116, False), ("r2", "relu", 0.95, False), ("r3", "relu", 0.116, False),
            ("r4", "relu", None, True)]
    return pd.DataFrame(rows, columns=["run_id", "activation", BEST_VAL_ACCURACY, "diverged"])


def test_ties_pick_the_same_runs_whatever_the_order_of_the_rows():
    frame = runs_frame()
    picks = [set(tables.histogram_runs(frame.sample(frac=1.0, random_state=seed))) for seed in range(8)]
    assert all(pick == picks[0] for pick in picks)
    # The best by score, the worst a diverged run; among tied runs the last run id is "best", the first "worst".
    assert picks[0] == {"s3", "s1", "r2", "r4"}
