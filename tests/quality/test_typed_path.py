"""Re-validation of typed values (and validation of text) gives exactly what the engine gave before its
typed-path speed-ups (``frozen_engine``): the same findings in the same order, typed frame and scores."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingestion.synthetic.generator import generate
from quality import engine
from quality.rules import contract_rules
from rtv import contract
from rtv.selectors import current_schema

from . import frozen_engine
from .test_small_inputs import assert_same

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _fields() -> list[object]:
    return list(current_schema().fields)


def _raw(n: int, seed: int) -> pd.DataFrame:
    data, _ = generate(n, seed=seed, bad_rate=0.05)
    return pd.DataFrame({c: [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
                             for v in data[c].tolist()] for c in data.columns})


@pytest.mark.parametrize("n,seed", [(5000, 3), (1500, 11)])
def test_typed_revalidation_matches_frozen_engine(n: int, seed: int) -> None:
    fields, rules = _fields(), contract_rules()
    raw = _raw(n, seed)
    first = engine.validate_frame(raw, fields, rules=rules, now=NOW)  # type: ignore[arg-type]
    assert_same(first, frozen_engine.validate_frame(raw, fields, rules=rules, now=NOW))  # type: ignore[arg-type]
    assert len(first.issues)
    typed = first.typed
    again = engine.validate_frame(typed, fields, rules=rules, now=NOW)  # type: ignore[arg-type]
    assert_same(again, frozen_engine.validate_frame(typed, fields, rules=rules, now=NOW))  # type: ignore[arg-type]
    # typed values whose text repeats as distinct objects, with fresh copies, blanks and missing values
    copied = typed.copy()
    for name in ("district", "village", "cluster"):
        col = copied[name].to_numpy(dtype=object, copy=True)
        col[::7] = np.array([v if v is None else (v + " ")[:-1] for v in col[::7]], dtype=object)  # new objects
        col[3::13] = np.array([v if v is None else " " + v for v in col[3::13]], dtype=object)  # to strip
        col[5::97] = float("nan")
        col[6::101] = " "
        copied[name] = pd.Series(col, index=copied.index, dtype=object)
    assert_same(engine.validate_frame(copied, fields, rules=rules, now=NOW),  # type: ignore[arg-type]
                frozen_engine.validate_frame(copied, fields, rules=rules, now=NOW))  # type: ignore[arg-type]


PATTERN_TEXT = ["KAN-KAG-PAT-K21420", "KAN-KAG-PAT-K2", "KAN-KAG-PAT-K", "KAN-KAG-PAT-21", "kan-KAG-PAT-K1",
                "KAN-KAG-PAT-K1a", "KAN-KAG-PAT-K1 ", "KAN-KAG-PAT-KK1", "KAN-KAG-PAT-K١", "KAN-KAG-PATK-1",
                "ÉAN-KAG-PAT-K1", "KAN-KAG-PAT-K1\n", "", "K", "KAN-KAG-PAT-K" + "1" * 40, "KAN_KAG-PAT-K1",
                "KAN-KAG-PAT-K12345678901234567890", "[AN-KAG-PAT-K1", "@AN-KAG-PAT-K1", "KAN-KAG-PAT-Z0"]


@pytest.mark.parametrize("pattern", [
    contract.HOUSEHOLD_ID_PATTERN, r"^[A-Z]{3}-\d{2,4}$", r"^[a-fA-F0-9]+$", r"^AB?C*$", r"^[A-Z]{3}-[A-Z]{3}",
    r"^(a|b)+$", r"^[^A]+$", r"^.+$", r"^\w+$", r"^[A-Z-]{3}\d*$", r"^-\d+$",
])
def test_byte_pattern_matches_regex(pattern: str) -> None:
    text = pa.array(PATTERN_TEXT * 40, type=pa.large_string())
    anchored = f"^(?:{pattern.removeprefix('^').removesuffix('$')})$"
    expected = pc.match_substring_regex(text, anchored).to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(engine._fullmatch(text, pattern), expected)
    np.testing.assert_array_equal(engine._fullmatch(text.slice(7, 300), pattern), expected[7:307])


def test_household_pattern_takes_the_byte_check() -> None:
    assert engine._byte_pattern(contract.HOUSEHOLD_ID_PATTERN.removeprefix("^").removesuffix("$")) is not None
