"""Model quality benchmark: the rolling-origin backtest on the synthetic shop, Online Retail and CDNOW.

Usage: python benchmarks/quality.py [--datasets synthetic,online_retail,cdnow] [--keep DIR]
Runs `winback run` per dataset config and writes the mean ± spread of every metric per model into
docs/benchmarks.md (between the quality markers), with the date, commit and machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

from record import provenance, write_section

from pipeline.config import load_params
from pipeline.run import run_all

REPO = Path(__file__).resolve().parents[1]
DATASETS = {
    "synthetic": ("params.yaml", None),
    "online_retail": ("configs/online_retail.yaml", REPO.parent / "shared" / "data" / "online_retail.parquet"),
    "cdnow": ("configs/cdnow.yaml", "lifetimes"),
}
METRICS = [
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "lift_top10",
    "precision_at_k",
    "recall_at_k",
    "value_recall_at_k",
]


def _available(requirement: Path | str | None) -> bool:
    if requirement is None:
        return True
    if isinstance(requirement, Path):
        return requirement.exists()
    return importlib.util.find_spec(requirement) is not None


def _table(name: str, ev: dict, seconds: float) -> str:
    bt = ev["backtest"]
    lines = [
        f"#### {name}: {len(bt['cutoffs'])} test cutoffs {bt['cutoffs'][0]} .. {bt['cutoffs'][-1]} "
        f"(run took {seconds:.0f} s)",
        "",
        "| model | " + " | ".join(METRICS) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for model, means in bt["mean"].items():
        cells = [f"{means[m]:.3f} ± {bt['std'][model][m]:.3f}" for m in METRICS]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark, print and record its tables."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--keep", type=Path, help="keep every run's outputs under this directory")
    args = ap.parse_args()
    os.chdir(REPO)  # configs resolve data paths relative to the repository root
    header = (
        f"### Quality (`python benchmarks/quality.py`): {provenance()}\n\n"
        "Mean ± standard deviation over the rolling-origin backtest; `_at_k` metrics use "
        "`evaluate.contact_capacity` of each config.\n"
    )
    sections = [header]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name in args.datasets.split(","):
            config, requirement = DATASETS[name]
            if not _available(requirement):
                sections.append(f"#### {name}: skipped ({requirement} not available)\n")
                continue
            t0 = time.perf_counter()
            run_all(load_params(config), root / name)
            ev = json.loads((root / name / "metrics" / "evaluate.json").read_text())
            sections.append(_table(name, ev, time.perf_counter() - t0))
            print(sections[-1])
    write_section("quality", "\n".join(sections))


if __name__ == "__main__":
    main()
