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
