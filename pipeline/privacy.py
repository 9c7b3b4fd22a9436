"""Pseudonymous user ids: a keyed hash (HMAC-SHA256) whose key lives only in the environment.

The same key maps the same id to the same pseudonym in every run, so lists, contact logs and
measurements still join; without the key nobody can recompute the mapping (unlike a plain hash of an
e-mail address, which a dictionary of addresses reverses). The key is read from an environment
variable and never written anywhere: not to params, outputs, MLflow or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import numpy as np
import pandas as pd

from pipeline.config import ConfigError, PrivacyParams

# 24 hex digits = 96 bits: no collision to expect among billions of users
PSEUDONYM_HEX = 24
MIN_KEY_BYTES = 16


def pseudonym_key(pp: PrivacyParams) -> bytes | None:
    """The key from the environment when pseudonymisation is on (None when off); a missing or short key is an error."""
    if not pp.pseudonymise_user_ids:
        return None
    key = os.environ.get(pp.key_env, "")
    if len(key.encode()) < MIN_KEY_BYTES:
        state = "unset" if not key else f"shorter than {MIN_KEY_BYTES} bytes"
        raise ConfigError(
            f"privacy.pseudonymise_user_ids is on but ${pp.key_env} is {state}: set it to a secret of at least "
            f"{MIN_KEY_BYTES} bytes (e.g. `export {pp.key_env}=$(openssl rand -hex 32)`) and keep it: "
            "the same key gives the same pseudonyms, so lists and contact logs keep joining"
        )
    return key.encode()


def pseudonymise(ids: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 of each id under `key`, as PSEUDONYM_HEX hex digits; nulls stay null."""
    present = ids.notna().to_numpy()
    uniques, inverse = np.unique(ids[present].astype(str).to_numpy(), return_inverse=True)
    hashed = np.array(
        [hmac.new(key, u.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX] for u in uniques], dtype=object
    )
    out = pd.Series(pd.NA, index=ids.index, dtype="object")
    out[present] = hashed[inverse] if len(uniques) else []
    return out.astype(ids.dtype if pd.api.types.is_string_dtype(ids.dtype) else "object")


def redact_rejects(rejects: pd.DataFrame, keep: set[str], id_column: str, key: bytes) -> pd.DataFrame:
    """Quarantined rows with only the meta columns and the mapped source columns, the user id pseudonymised.

    Unmapped source columns (names, e-mail addresses, free text) never reach an output; source_file and
    source_row still point at the original row for whoever may read the source.
    """
    from pipeline.ingest import REJECT_META

    cols = [c for c in rejects.columns if c in REJECT_META or c in keep]
    out = rejects[cols].copy()
    if id_column in out.columns:
        ids = out[id_column].where(out[id_column].notna())
        out[id_column] = pseudonymise(ids, key)
    return out
