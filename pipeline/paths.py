"""Where each stage reads and writes, relative to one output root (the repo by default)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

# a published list's directory name: its as_of date
LIST_DIR = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Paths:
    """File layout of one pipeline run under `root`."""

    root: Path = Path(".")

    def _p(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def raw_events(self) -> Path:
        return self._p("data", "raw", "events.parquet")

    @property
    def truth(self) -> Path:
        return self._p("data", "raw", "truth.parquet")

    @property
    def raw_contacts(self) -> Path:
        return self._p("data", "raw", "contacts.parquet")

    @property
    def campaign_truth(self) -> Path:
        return self._p("data", "raw", "campaign.json")

    @property
    def events(self) -> Path:
        return self._p("data", "ingested", "events.parquet")

    @property
    def contacts(self) -> Path:
        return self._p("data", "ingested", "contacts.parquet")

    @property
    def contact_rejects(self) -> Path:
        return self._p("data", "ingested", "contact_rejects.parquet")

    @property
    def rejects(self) -> Path:
        return self._p("data", "ingested", "rejects.parquet")

    @property
    def snapshots(self) -> Path:
        return self._p("data", "features", "snapshots.parquet")

    @property
    def churn_rate_by_cutoff(self) -> Path:
        return self._p("data", "features", "churn_rate_by_cutoff.csv")

    @property
    def train_info(self) -> Path:
        return self._p("models", "train.json")

    @property
    def champion_info(self) -> Path:
        return self._p("models", "champion.json")

    @property
    def audit_log(self) -> Path:
        """models/audit.jsonl: every move of @champion (and refused promotion) with who, when, metrics, reason."""
        return self._p("models", "audit.jsonl")

    @property
    def predictions(self) -> Path:
        return self._p("data", "evaluate", "predictions.parquet")

    @property
    def backtest_metrics(self) -> Path:
        return self._p("data", "evaluate", "backtest_metrics.csv")

    @property
    def reports(self) -> Path:
        return self._p("reports")

    @property
    def plots(self) -> Path:
        return self._p("plots")

    def metrics(self, stage: str) -> Path:
        """metrics/<stage>.json"""
        return self._p("metrics", f"{stage}.json")

    def winback_dir(self, as_of: dt.date) -> Path:
        """outputs/winback/<as_of>/"""
        return self.lists_root / as_of.isoformat()

    def previous_list(self, as_of: dt.date) -> Path | None:
        """The most recent published win-back list strictly before `as_of`, if any."""
        root = self.lists_root
        dates = sorted(
            d.name
            for d in root.glob("*")
            if LIST_DIR.fullmatch(d.name) and d.name < as_of.isoformat() and (d / "winback.parquet").exists()
        )
        return root / dates[-1] / "winback.parquet" if dates else None

    @property
    def lists_root(self) -> Path:
        """outputs/winback/: one published directory (a symlink) per list date, plus the run log."""
        return self._p("outputs", "winback")

    @property
    def latest_score(self) -> Path:
        return self._p("outputs", "latest.json")

    @property
    def latest_report(self) -> Path:
        return self._p("outputs", "report.json")
