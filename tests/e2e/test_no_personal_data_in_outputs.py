"""With pseudonymous ids on, no e-mail address or phone number planted in the input reaches any output or artifact.

The input is the synthetic shop with every user id replaced by an e-mail address and extra columns
holding a phone number, the address again and free text quoting both; a few rows are broken so they
go to the quarantine file. After `winback run`, every file under the output directory is searched:
Parquet files value by value (their pages are compressed, so a byte search would miss), every other
file (CSV, JSON, HTML, the MLflow sqlite store, model artifacts) byte by byte.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from dvc_project import run_winback_config

from pipeline.config import GenerateParams
from pipeline.synthetic import write_shop

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
KEY_ENV = "WINBACK_TEST_PSEUDONYM_KEY"
EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}")
PHONE = re.compile(rb"\+44 ?7700 ?9\d{5}")
PLANTED = re.compile(rb"@example-shop\.co\.uk")


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _phone(i: int) -> str:
    return f"+44 7700 9{i:05d}"


def _planted_input(tmp: Path) -> Path:
    write_shop(GenerateParams(users=1500, seed=11), tmp / "shop.parquet", tmp / "truth.parquet")
    ev = pd.read_parquet(tmp / "shop.parquet")
    users = sorted(ev["user_id"].unique())
    number = {u: i for i, u in enumerate(users)}
    email = {u: f"customer.{number[u]}@example-shop.co.uk" for u in users}
    ev["customer_email"] = ev["user_id"].map(email)
    ev["phone"] = ev["user_id"].map(lambda u: _phone(number[u]))
    ev["note"] = "call " + ev["phone"] + " or write to " + ev["customer_email"]
    ev["user_id"] = ev["customer_email"]
    ev.loc[ev.index[:25], "event_time"] = pd.NaT  # quarantined rows carry the planted values too
    ev.loc[ev.index[25:40], "event_time"] = pd.Timestamp("2099-01-01", tz="UTC")
    path = tmp / "events.csv"
    ev.to_csv(path, index=False)
    return path


def _texts(path: Path) -> list[bytes]:
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return ["\n".join(map(str, col.to_pylist())).encode() for col in table.columns] + [str(table.schema).encode()]
    return [path.read_bytes()]


def test_no_planted_email_or_phone_reaches_an_output_or_artifact(tmp_path: Path, monkeypatch) -> None:
    source = _planted_input(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source=str(source), contacts=None, columns={"user_id": "user_id"}, event_types={})
    params["privacy"] = {"pseudonymise_user_ids": True, "key_env": KEY_ENV}
    params["generate"]["users"] = 1500
    config = tmp_path / "private.yaml"
    config.write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    run_winback_config(config, out, cwd=tmp_path, env={KEY_ENV: "test-key-" + "x" * 24})
    assert EMAIL.search(source.read_bytes()) and PHONE.search(source.read_bytes())  # the search finds plants

    lst = pd.read_csv(next((out / "outputs" / "winback").glob("*/winback.csv")))
    assert len(lst) > 100 and lst["user_id"].str.fullmatch(r"[0-9a-f]{24}").all()
    rejects = pd.read_parquet(out / "data" / "ingested" / "rejects.parquet")
    assert len(rejects) == 40
    # everything the run wrote: its outputs and the MLflow store and artifacts (under the working directory)
    inputs = {source, config, tmp_path / "shop.parquet", tmp_path / "truth.parquet"}
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p not in inputs]
    assert any(p.suffix == ".db" for p in files) and any(p.name == "reference.json" for p in files)
    key = ("test-key-" + "x" * 24).encode()
    leaks = []
    for path in files:
        for text in _texts(path):
            # any e-mail address in text; in binary files (PNG, the sqlite store) the planted domain and phones
            hits = (EMAIL.findall(text) if _is_text(text) else []) + PLANTED.findall(text) + PHONE.findall(text)
            hits += [key] if key in text else []
            if hits:
                leaks.append((str(path.relative_to(tmp_path)), hits[:3]))
    assert not leaks, leaks
