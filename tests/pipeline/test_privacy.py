"""Keyed pseudonyms: stable under one key, different under another, never the raw id, key required."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import ConfigError, PrivacyParams
from pipeline.privacy import PSEUDONYM_HEX, pseudonym_key, pseudonymise

KEY = b"k" * 32


def test_same_key_same_pseudonym_other_key_other_pseudonym_nulls_stay_null() -> None:
    ids = pd.Series(["alice@example.com", "bob", None, "alice@example.com"], dtype="string")
    a = pseudonymise(ids, KEY)
    assert a[0] == a[3] and a[0] != a[1] and pd.isna(a[2]) and a.dtype == ids.dtype
    assert a[0] != "alice@example.com" and len(a[0]) == PSEUDONYM_HEX and int(a[0], 16) >= 0
    b = pseudonymise(ids, b"x" * 32)
    assert b[0] != a[0]
    assert pseudonymise(ids[:2], KEY).tolist() == a[:2].tolist()  # independent of the other rows


def test_the_key_comes_from_the_environment_and_must_be_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    pp = PrivacyParams(pseudonymise_user_ids=True, key_env="WB_TEST_KEY")
    monkeypatch.delenv("WB_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\$WB_TEST_KEY is unset.*openssl rand"):
        pseudonym_key(pp)
    monkeypatch.setenv("WB_TEST_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        pseudonym_key(pp)
    monkeypatch.setenv("WB_TEST_KEY", "a-long-enough-secret-key")
    assert pseudonym_key(pp) == b"a-long-enough-secret-key"
    assert pseudonym_key(PrivacyParams()) is None  # off by default: no key needed


def test_ingest_writes_pseudonyms_and_redacted_rejects_and_contacts_still_join(tmp_path) -> None:
    from pipeline.config import DataParams
    from pipeline.contacts import ingest_contacts
    from pipeline.ingest import ingest

    (tmp_path / "events.csv").write_text(
        "customer,ts,kind,phone\n"
        "ann@example.com,2024-01-01 10:00:00,view,+44 7700 900001\n"
        "bob@example.com,2024-01-02 10:00:00,view,+44 7700 900002\n"
        "bob@example.com,not a time,view,+44 7700 900002\n"
    )
    (tmp_path / "contacts.csv").write_text(
        "customer,sent,channel\nann@example.com,2024-01-03 09:00:00,email\nzed@example.com,2024-01-03 09:00:00,x\n"
    )
    data = DataParams(
        source=str(tmp_path / "events.csv"),
        columns={"user_id": "customer", "event_time": "ts", "event_type": "kind"},
        contacts=str(tmp_path / "contacts.csv"),
        contact_columns={"user_id": "customer", "contacted_at": "sent", "action": "channel"},
    )
    out = tmp_path / "out"
    now = pd.Timestamp("2024-06-01", tz="UTC")
    m = ingest(data, tmp_path / "x", out / "events.parquet", out / "rejects.parquet", out / "m.json", now=now, key=KEY)
    assert (m["accepted"], m["rejected"]) == (2, 1)
    events = pd.read_parquet(out / "events.parquet")
    ann, bob = (pseudonymise(pd.Series([u], dtype="string"), KEY)[0] for u in ("ann@example.com", "bob@example.com"))
    assert sorted(events["user_id"]) == sorted([ann, bob]) and events["user_id"].is_monotonic_increasing
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert list(rejects.columns) == ["source_file", "source_row", "reason", "customer", "ts", "kind"]
    assert rejects["customer"].tolist() == [bob] and "phone" not in rejects
    c = ingest_contacts(
        data, [tmp_path / "contacts.csv"], out / "events.parquet", out / "c.parquet", out / "cr.parquet", now, KEY
    )
    assert (c["accepted"], c["rejected"]) == (1, 1)  # ann joins her pseudonymised events; zed has none
    assert pd.read_parquet(out / "c.parquet")["user_id"].tolist() == [ann]
    assert "zed@example.com" not in pd.read_parquet(out / "cr.parquet").to_string()
