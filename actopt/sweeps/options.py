"""How a sweep runs: the one options value that ``actopt sweep`` parses and ``sweep.run_sweep`` reads.

Light on purpose (no torch, no MLflow): the CLI builds it, and says what the sweep will run, before the
slow imports.
"""

from __future__ import annotations

from dataclasses import dataclass

# Members per group. Memory grows with each distinct seed in a group (its own split of the data:
# about 240 MB of float32 for (Fashion-)MNIST) and little with each member (a 784-256-128-10 net
# with Adam's moments is under 4 MB; its activations at batch 128 under 1 MB): 8 members of 3 seeds
# stay under 1 GB per worker, and 8 is where the benchmark measured the speed-up on 2 CPU cores.
DEFAULT_GROUP_SIZE = 8


@dataclass(frozen=True)
class SweepOptions:
    """Everything about a sweep beyond its study and configurations; the defaults are ``actopt sweep``'s."""

    study: str = ""  # a preset's name or a study file's path, as given on the command line
    workers: int = 1  # groups trained at once (local worker processes when 2 or more)
    group_size: int = DEFAULT_GROUP_SIZE
    executor: str = "process"  # "process" or "ray"
    ray_address: str = ""  # the Ray cluster to join; empty: RAY_ADDRESS, else a local instance
    quick: bool = False  # a smoke run: one epoch of a few batches, in the experiment STUDY-quick
    data_dir: str | None = None
    download: bool = True
    device: str | None = None
    experiment_name: str | None = None
    until_decided: bool = False  # add seeds until the comparisons are decided (analysis.adaptive)
    max_seeds: int = 0  # with until_decided; 0: the study file's, else its default
    max_runs: int = 0  # with until_decided; 0: the study file's, else no limit
    launcher_run_id: str | None = None  # the run `mlflow run` made for this process: it becomes the parent
    epoch_lines: bool = False  # a line per group and epoch while it trains (on a terminal)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def first_line(study_name: str, runs: int, options: SweepOptions, store: str) -> str:
    """What the sweep will run, said before anything slow (imports, checks, data, the first epoch)."""
    if options.executor == "ray":
        where = f"on Ray ({options.ray_address or 'RAY_ADDRESS, else a local instance'})"
    elif options.workers > 1:
        where = f"on {options.workers} worker processes"
    else:
        where = "in this process"
    return (f"sweep {study_name}: {plural(runs, 'run')} {where}, in groups of up to {options.group_size}; "
            f"store {store}; checking the store and the data before the first run")
