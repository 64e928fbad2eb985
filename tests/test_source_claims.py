"""Source claims judged on a run table with known values, and the study file's checks of them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from actopt.analysis import source_claims
from actopt.errors import ConfigError
from actopt.sweeps import study


def table(gap_sigmoid=(0.13, 0.12, 0.14), gap_relu=(0.02, 0.03, 0.01)) -> pd.DataFrame:
    rows = [{"run_id": f"{name}{seed}", "seed": seed, "activation": name, "dropout": 0.0, "max_batches": 0,
             "final_gap": gap, "last_val_accuracy": 0.85 if name == "sigmoid" else 0.93}
            for name, gaps in (("sigmoid", gap_sigmoid), ("relu", gap_relu)) for seed, gap in enumerate(gaps)]
    return pd.DataFrame(rows)


SIGMOID, RELU = {"activation": "sigmoid", "dropout": 0.0}, {"activation": "relu", "dropout": 0.0}


def verdict(claim: dict, runs: pd.DataFrame) -> str:
    return source_claims.judge({"claim": "c", "source": "s", **claim}, runs, pd.DataFrame())["verdict"]


def test_each_form_is_judged_on_the_interval_over_seeds():
    runs = table()
    assert verdict({"metric": "last_val_accuracy", "where": SIGMOID, "value": 0.85, "tolerance": 0.01}, runs) == \
        "reproduced"
    assert verdict({"metric": "last_val_accuracy", "where": RELU, "value": 0.85, "tolerance": 0.01}, runs) == \
        "not reproduced"
    assert verdict({"metric": "final_gap", "where": SIGMOID, "above": 0.05}, runs) == "reproduced"
    assert verdict({"metric": "final_gap", "where": RELU, "above": 0.05}, runs) == "not reproduced"
    assert verdict({"metric": "final_gap", "where": RELU, "less_than": SIGMOID}, runs) == "reproduced"
    assert verdict({"metric": "final_gap", "where": RELU, "greater_than": SIGMOID}, runs) == "not reproduced"
    # Seeds that disagree in sign: the paired interval straddles zero.
    mixed = table(gap_sigmoid=(0.1, 0.0, 0.05), gap_relu=(0.0, 0.1, 0.05))
    assert verdict({"metric": "final_gap", "where": RELU, "less_than": SIGMOID}, mixed) == "undecided"
    assert verdict({"testable": False, "reason": "no runs can"}, runs) == "not testable here: no runs can"
    assert verdict({"metric": "nothing", "where": RELU, "above": 0}, runs) == "not testable here: no run logged nothing"


def test_the_section_lists_every_claim_and_flags_smoke_tests():
    claims = [{"claim": "gap", "source": "source 004", "metric": "final_gap", "where": SIGMOID, "above": 0.05}]
    text = source_claims.claims_section(table(), pd.DataFrame(), claims)
    assert text.startswith("## Claims of the source") and "| gap | source 004 |" in text
    assert "0.1300 [" in text and "Smoke test" not in text
    assert "Smoke test" in source_claims.claims_section(table().assign(max_batches=5), pd.DataFrame(), claims)
    assert source_claims.claims_section(table(), pd.DataFrame(), []) == ""


def test_presets_declare_their_sources_claims_and_bad_claims_are_refused(tmp_path):
    for name in ("fashion-activations", "mnist-depth", "mnist-overfitting"):
        assert study.declared_claims(name), name
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"description": "d", "grid": {"activation": ["relu"]},
                                "claims": [{"claim": "c", "source": "s", "metric": "m", "above": 1, "below": 2}]}))
    with pytest.raises(ConfigError, match=r"claims\[1\] needs exactly one of value, above, below"):
        study.load_study(str(path))
