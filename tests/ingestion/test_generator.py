"""The synthetic survey generator: files shaped like the real RTV extract, with known errors.

No database and no Django: the generator is plain numpy/pandas.  A small reference validator at
the bottom of this file checks the contract's rules on the *written text*, the way an ingesting
system sees it.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from python_calamine import CalamineWorkbook

from ingestion.synthetic import ERROR_COLUMNS, FORMATS, RULES, errors_path, generate, load_profile, write
from ingestion.synthetic.generator import ALLOWED_VALUES, RANGE_VALUES
from rtv.contract import (
    CURRENCY_PAIRS,
    FIELDS_BY_NAME,
    HOUSEHOLD_ID_PATTERN,
    PER_DAY_IDENTITIES,
    RAW_HEADER,
    SUM_IDENTITIES,
    SURVEY_FIELDS,
    TARGET_COMPONENTS,
    UGX_PER_USD,
)

NAMES = [f.name for f in SURVEY_FIELDS]
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "rtv" / "DataScientist_01_Assessment.csv"


@cache
def sample(rows: int, seed: int = 0, bad_rate: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(rows, seed=seed, bad_rate=bad_rate)


def clean(data: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
    return data.drop(index=errors["row_number"].to_numpy() - 2)


def num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s.astype(object), errors="coerce").astype(float)


# --- shape, header and types ---------------------------------------------------------------------

def test_data_has_the_75_contract_fields_in_order_with_sensible_types() -> None:
    data, errors = sample(2000, bad_rate=0.0)
    assert list(data.columns) == NAMES and len(data) == 2000
    assert list(errors.columns) == ERROR_COLUMNS and errors.empty
    for f in SURVEY_FIELDS:
        dtype = str(data[f.name].dtype)
        if f.type in ("text", "multiselect") or f.name == "business_number":
            assert dtype == "str", f.name
        elif f.type == "decimal" or f.name == "composts":
            assert dtype == "float64", f.name
        else:
            assert dtype == "Int64", f.name
    assert data["business_number"].dropna().isin(["0", "1", "2", "`"]).all()


def test_csv_uses_the_exact_real_header_duplicates_and_misspellings_included(tmp_path: Path) -> None:
    data, errors = sample(50)
    path = write(data, errors, tmp_path / "s.csv", "csv")
    with path.open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == list(RAW_HEADER)
    assert header.count("VSLA_Profits") == 2 and header.count("Assets") == 2
    assert {"Season2VegatableIncome", "HouseholdIcome", "PerenialCropIncome", "HouseHoldID"} <= set(header)
    # UGX copy first (an integer), USD second.
    first = pd.read_csv(path, header=None, skiprows=1, names=NAMES, nrows=50)
    assert (first["vsla_profits_ugx"] % 1 == 0).all() and (first["assets_ugx"] % 1 == 0).all()


def test_xlsx_uses_the_exact_real_header(tmp_path: Path) -> None:
    data, errors = sample(50)
    rows = CalamineWorkbook.from_path(str(write(data, errors, tmp_path / "s.xlsx", "xlsx"))).get_sheet_by_index(0)
    assert rows.to_python()[0] == list(RAW_HEADER)



def test_xlsx_keeps_its_text_in_a_shared_strings_table_as_excel_does(tmp_path: Path) -> None:
    """Excel, LibreOffice, openpyxl and XlsxWriter store each distinct text once and cells name it by
    index; a workbook of inline strings is twice the XML, and would make the reader's benchmark
    measure a file nobody sends.  openpyxl reads the same cells as calamine."""
    import zipfile

    from openpyxl import load_workbook

    data, errors = sample(60, seed=4, bad_rate=0.05)
    path = write(data, errors, tmp_path / "s.xlsx", "xlsx")
    with zipfile.ZipFile(path) as zf:
        sheet = zf.read("xl/worksheets/sheet1.xml").decode()
        strings = zf.read("xl/sharedStrings.xml").decode()
    body = sheet.split("</row>", 1)[1]  # the header row stays inline
    assert 't="s"' in body and "inlineStr" not in body
    assert data["household_id"].iloc[0] in strings and strings.count("<si>") == len(set(re.findall(r"<si>(.*?)</si>", strings)))
    ws = load_workbook(path, read_only=True).worksheets[0]
    via_openpyxl = [[norm(c) for c in row] for row in ws.iter_rows(min_row=2, values_only=True)]
    assert via_openpyxl == [[norm(v) for v in row] for row in read_back(path, "xlsx")[1]]

# --- money identities and the label ----------------------------------------------------------------

def close(a: pd.Series, b: pd.Series, rel: float = 1e-9) -> bool:
    return bool((np.abs(a - b) <= rel * np.maximum(1.0, np.abs(b))).all())


def test_every_identity_holds_to_float_precision_on_rows_without_injected_errors() -> None:
    data, errors = sample(5000, seed=1, bad_rate=0.02)
    ok = clean(data, errors)
    money = {n: num(ok[n]) for n in NAMES if FIELDS_BY_NAME[n].role in ("money", "derived", "label", "feature")
             and FIELDS_BY_NAME[n].type == "decimal"}
    for result, terms in SUM_IDENTITIES:
        expected = sum((sign * money[t] for sign, t in terms), pd.Series(0.0, index=ok.index))
        assert close(money[result], expected), result
    for result, annual in PER_DAY_IDENTITIES:
        assert close(money[result], money[annual] / 365.0), result
    for usd, ugx in CURRENCY_PAIRS:
        assert (money[ugx] % 1 == 0).all(), f"{ugx} is a whole number of shillings"
        assert close(money[usd], money[ugx] / UGX_PER_USD), usd
    label = sum(money[c] for c in TARGET_COMPONENTS) / 365.0
    assert close(money["income_consumption_residues_per_day"], label)
    assert all((money[n] >= 0).all() for n in money if FIELDS_BY_NAME[n].role != "feature")


def test_status_bands_are_shared_like_the_real_extract() -> None:
    data, _ = sample(20000, seed=2)
    y = data["income_consumption_residues_per_day"]
    shares = {
        "On Track": (y >= 2.15).mean(),
        "At Risk": ((y >= 1.77) & (y < 2.15)).mean(),
        "Struggling": ((y >= 1.25) & (y < 1.77)).mean(),
        "Severely Struggling": (y < 1.25).mean(),
    }
    real = {"On Track": 0.437, "At Risk": 0.137, "Struggling": 0.231, "Severely Struggling": 0.194}
    for band, share in shares.items():
        assert abs(share - real[band]) <= 0.08, (band, share)


def test_features_predict_vulnerability_modestly_not_perfectly() -> None:
    """Without money columns a model should find a real but modest signal (real extract: AUC ~0.78)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    data, _ = sample(12000, seed=3)
    features = [f.name for f in SURVEY_FIELDS if f.role == "feature" and f.type not in ("multiselect",)]
    x = pd.DataFrame({n: num(data[n]) for n in features})
    x = pd.concat([x.fillna(x.median()), pd.get_dummies(data["district"], dtype=float)], axis=1)
    x = (x - x.mean()) / x.std().replace(0, 1)
    y = (data["income_consumption_residues_per_day"] < 1.77).to_numpy()
    model = LogisticRegression(max_iter=1000).fit(x[:8000], y[:8000])
    auc = roc_auc_score(y[8000:], model.predict_proba(x[8000:])[:, 1])
    assert 0.68 <= auc <= 0.86, auc


# --- geography and household ids -------------------------------------------------------------------

def test_geography_has_real_shares_and_structure_with_synthetic_names() -> None:
    data, _ = sample(20000, seed=2)
    shares = data["district"].value_counts(normalize=True)
    for district, rows in {"Rukungiri": 1319, "Mitooma": 986, "Kanungu": 825, "Rubanda": 767}.items():
        assert abs(shares[district] - rows / 3897) < 0.015, district
    clusters = data.groupby("district")["cluster"].nunique().to_dict()
    assert clusters == {"Kanungu": 4, "Mitooma": 4, "Rubanda": 3, "Rukungiri": 5}
    assert data["village"].nunique() == 153
    assert data.groupby(["cluster", "village"]).ngroups == 155  # a name reused in two clusters
    assert data.groupby("cluster")["district"].nunique().max() == 1
    assert data["village"].str.fullmatch(r"[A-Z][a-z]+(_([A-Z][a-z]+|\d))?").all()
    assert data["village"].str.endswith(("_1", "_2")).any()
    # Rows come grouped by district in the real file's order.
    assert list(dict.fromkeys(data["district"])) == ["Kanungu", "Rukungiri", "Mitooma", "Rubanda"]


def test_no_real_cluster_or_village_name_is_used() -> None:
    if not REAL.exists():
        pytest.skip("real extract not available")
    real = pd.read_csv(REAL, usecols=[1, 2], dtype=str)
    real_tokens = {t.lower() for name in pd.unique(real.to_numpy().ravel()) for t in re.split(r"[_\s]+", name)}
    profile = load_profile()
    ours = [c["name"] for d in profile["districts"] for c in d["clusters"]]
    ours += [v["name"] for d in profile["districts"] for c in d["clusters"] for v in c["villages"]]
    our_tokens = {t.lower() for name in ours for t in re.split(r"[_\s]+", name) if not t.isdigit()}
    assert not (our_tokens - {"east"}) & real_tokens


def test_household_ids_follow_the_real_styles_and_some_are_shared() -> None:
    data, _ = sample(20000, seed=2)
    ids = data["household_id"]
    assert ids.notna().all()
    standard = ids.str.fullmatch(HOUSEHOLD_ID_PATTERN)
    assert 0.70 <= standard.mean() <= 0.82  # real: 74.8% match; Rubanda's style and lower case do not
    rubanda = ids[data["district"] == "Rubanda"]
    assert rubanda.str.fullmatch(r"RUB-[A-Z]{3}-[MF]-\d+").all()
    lower = ids.str.fullmatch(r"(Kan|Ruk|Mit)-[a-z]{3}-[a-z]{3}-[kmr]\d+")
    assert 0.04 <= lower.mean() <= 0.11
    kan = data[standard & (data["district"] == "Kanungu")]
    assert (kan["household_id"].str[4:7] == kan["village"].str[:3].str.upper()).all()
    assert kan["household_id"].str.fullmatch(r"KAN-[A-Z]{3}-[A-Z]{3}-K\d+").all()
    shared = ids.duplicated(keep=False)
    assert 0.012 <= shared.mean() <= 0.03  # real: 83 of 3897 rows
    assert (data[shared].groupby("household_id")["village"].nunique() == 1).all()
    big, _ = sample(50000, seed=4)
    assert big["household_id"].str.contains(",").sum() >= 1  # the stray comma (1 in 3897)


# --- quirks -------------------------------------------------------------------------------------

def test_real_quirks_appear_at_realistic_rates() -> None:
    data, _ = sample(50000, seed=4)
    n = len(data)
    assert 0.50 <= (data["household_fertilizer"] == 99).mean() <= 0.58
    assert set(data["household_fertilizer"].unique()) == {1, 2, 3, 99}
    loan = data["loan_from"]
    assert 0.74 <= loan.isna().mean() <= 0.82 and (loan == "7 8").any()
    banana = data["food_banana_wilt_diseases"]
    assert 0.30 <= banana.isna().mean() <= 0.40 and (banana == "1 2").any()
    assert 0.78 <= data["organic_pesticide_expenditure"].isna().mean() <= 0.86
    assert 0.010 <= data["agriculture_land"].isna().mean() <= 0.023
    assert (data["agriculture_land"] > 30).sum() >= 1  # the 90-acre farm kind of outlier
    assert set(data["composts"].unique()) == {0.0, 0.5, 1.0}
    assert (data["water_control_practise"] == 1).all()
    assert (data["perennial_cropping"] == (data["perennial_crops_grown"] > 0).astype(int)).all()
    bn = data["business_number"]
    assert 0.003 <= bn.isna().mean() <= 0.012 and 1 <= (bn == "`").sum() <= 40
    assert 1 <= (data["phones_owned"] == -99).sum() <= 40
    assert 1 <= (data["radios_owned"] >= 10).sum() <= 40
    assert data["household_size"].between(1, 30).all()
    assert (data.loc[data["work_salaried"] == 0, "formal_employment"] == 0).all()
    assert (data.loc[data["save_mode_7"] == 0, "vsla_profits_ugx"] == 0).all()
    assert (data["season1_crop_income"] <= data["season1_agric_value"]).all()
    assert (data["livestock_income_consumed"] >= data["livestock_income"]).all()
    assert n == 50000


# --- injected errors ------------------------------------------------------------------------------

def read_csv_text(path: Path) -> pd.DataFrame:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(RAW_HEADER)
    return pd.DataFrame(rows[1:], columns=NAMES, dtype=str)


def test_each_bad_row_breaks_exactly_the_listed_rule_and_nothing_else(tmp_path: Path) -> None:
    data, errors = sample(20000, seed=5, bad_rate=0.03)
    assert len(errors) == 600 and errors["row_number"].is_unique
    assert set(errors["rule"]) == set(RULES) and (errors["severity"] == "error").all()
    assert (errors["column"] == errors["field"].map(lambda f: FIELDS_BY_NAME[f].header)).all()
    assert "business_number" not in set(errors["field"])  # lenient: never an error
    assert not (errors["field"] == "income_consumption_residues_per_day").any()  # the label stays intact

    path = write(data, errors, tmp_path / "bad.csv", "csv")
    text = read_csv_text(path)
    found = reference_errors(text)
    listed = set(zip(errors["row_number"], errors["field"], errors["rule"], strict=True))
    assert found == listed
    # The listed value is what the file holds, and the household id is the row's.
    cells = [text.at[r - 2, f] for r, f in zip(errors["row_number"], errors["field"], strict=True)]
    assert list(errors["value"]) == cells
    kept = errors["field"] != "household_id"
    assert (errors.loc[kept, "household_id"].to_numpy() == text["household_id"].to_numpy()[
        errors.loc[kept, "row_number"].to_numpy() - 2]).all()
    assert (errors.loc[kept, "household_id"] != "").all()
    sidecar = pd.read_csv(errors_path(path), dtype=str, keep_default_na=False)
    assert list(sidecar.columns) == ERROR_COLUMNS and len(sidecar) == 600
    assert list(sidecar["value"]) == cells


def test_error_count_follows_bad_rate_and_clean_files_have_none(tmp_path: Path) -> None:
    for rows, rate in ((1000, 0.02), (777, 0.1), (3000, 0.0)):
        _, errors = generate(rows, seed=9, bad_rate=rate)
        assert len(errors) == round(rows * rate)
    data, errors = sample(3000)
    path = write(data, errors, tmp_path / "clean.csv", "csv")
    assert reference_errors(read_csv_text(path)) == set()
    assert pd.read_csv(errors_path(path)).columns.tolist() == ERROR_COLUMNS
    assert len(pd.read_csv(errors_path(path))) == 0


def test_injected_values_break_the_contract_limits() -> None:
    for field, values in RANGE_VALUES.items():
        f = FIELDS_BY_NAME[field]
        assert all((f.min is not None and v < f.min) or (f.max is not None and v > f.max) for v in values), field
        assert not f.lenient and not set(values) & set(f.sentinels)
    for field, values in ALLOWED_VALUES.items():
        assert not set(values) & set(FIELDS_BY_NAME[field].allowed), field


# --- determinism and formats ------------------------------------------------------------------------

def test_same_seed_same_data_other_seed_other_data() -> None:
    a, ea = generate(500, seed=7, bad_rate=0.05)
    b, eb = generate(500, seed=7, bad_rate=0.05)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ea, eb)
    c, _ = generate(500, seed=8, bad_rate=0.05)
    assert not a["household_id"].equals(c["household_id"])


def norm(v: object) -> object:
    """A cell as None, a float or a string, whatever the format carried it as."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return str(v)


def read_back(path: Path, fmt: str) -> tuple[list[str], list[list[object]]]:
    if fmt == "csv":
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        return rows[0], [list(r) for r in rows[1:]]
    if fmt == "xlsx":
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python(skip_empty_area=False)
        return [str(h) for h in rows[0]], [list(r) + [""] * (75 - len(r)) for r in rows[1:]]
    if fmt == "json":
        records = json.loads(path.read_text())
        return list(records[0]), [list(r.values()) for r in records]
    if fmt == "ndjson":
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return list(records[0]), [list(r.values()) for r in records]
    table = pq.read_table(path)
    return table.column_names, [list(r.values()) for r in table.to_pylist()]


def cells(data: pd.DataFrame) -> Iterator[list[object]]:
    for row in data.astype(object).itertuples(index=False):
        yield list(row)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_the_same_values(tmp_path: Path, fmt: str) -> None:
    data, errors = sample(300, seed=6, bad_rate=0.05)
    path = write(data, errors, tmp_path / f"s.{fmt}", fmt)
    header, rows = read_back(path, fmt)
    assert header == (list(RAW_HEADER) if fmt in ("csv", "xlsx") else NAMES)
    assert len(rows) == len(data)
    for i, (got, want) in enumerate(zip(rows, cells(data), strict=True)):
        assert [norm(v) for v in got] == [norm(v) for v in want], f"row {i + 2}"
    side = pd.read_csv(errors_path(path), dtype=str, keep_default_na=False)
    assert side["row_number"].astype(int).tolist() == errors["row_number"].tolist()
    assert side["value"].tolist() == errors["value"].tolist()


def test_an_empty_survey_writes_headers_only(tmp_path: Path) -> None:
    data, errors = generate(0)
    assert list(data.columns) == NAMES and data.empty
    path = write(data, errors, tmp_path / "empty.csv", "csv")
    assert path.read_text().splitlines() == [",".join(RAW_HEADER)]
    assert json.loads(write(data, errors, tmp_path / "empty.json", "json").read_text()) == []


def test_unknown_formats_and_rates_are_refused(tmp_path: Path) -> None:
    data, errors = sample(50)
    with pytest.raises(ValueError):
        write(data, errors, tmp_path / "x.txt", "txt")
    with pytest.raises(ValueError):
        generate(10, bad_rate=1.5)


# --- a small reference validator (the contract's error rules on raw text) -------------------------

def reference_errors(text: pd.DataFrame) -> set[tuple[int, str, str]]:
    """(row_number, field, rule) for every contract *error* in a table of strings."""
    found: set[tuple[int, str, str]] = set()
    rows = np.arange(len(text)) + 2

    def add(mask: np.ndarray, field: str, rule: str) -> None:
        found.update((int(r), field, rule) for r in rows[np.asarray(mask, dtype=bool)])

    values: dict[str, pd.Series] = {}
    for f in SURVEY_FIELDS:
        s = text[f.name].str.strip()
        empty = (s == "").to_numpy()
        if f.required:
            add(empty, f.name, "required")
        if f.type == "text":
            continue
        if f.type == "multiselect":
            allowed = {str(a) for a in f.allowed}
            add(~empty & ~s.map(lambda v, allowed=allowed: set(v.split()) <= allowed).to_numpy(), f.name, "allowed")
            continue
        x = pd.to_numeric(s.where(~empty), errors="coerce").to_numpy(dtype=float)
        bad_type = ~empty & np.isnan(x)
        if f.type == "integer":
            bad_type |= ~np.isnan(x) & (np.mod(x, 1) != 0)
        if not f.lenient:
            add(bad_type, f.name, "type")
        x = np.where(bad_type, np.nan, x)
        checked = ~np.isnan(x) & ~np.isin(x, np.asarray(f.sentinels, dtype=float))
        if f.allowed:
            add(checked & ~np.isin(x, np.asarray(f.allowed, dtype=float)), f.name, "allowed")
        lo = -np.inf if f.min is None else f.min
        hi = np.inf if f.max is None else f.max
        add(checked & ((x < lo) | (x > hi)), f.name, "range")
        values[f.name] = pd.Series(x)

    def check(result: str, expected: pd.Series, rule: str) -> None:
        actual = values[result]
        add((actual - expected).abs() > 1e-9 * np.maximum(1.0, actual.abs()), result, rule)

    for result, terms in SUM_IDENTITIES:
        check(result, sum((sign * values[t] for sign, t in terms), pd.Series(0.0, index=values[result].index)),
              "sum_identity")
    for result, annual in PER_DAY_IDENTITIES:
        check(result, values[annual] / 365.0, "per_day_identity")
    for usd, ugx in CURRENCY_PAIRS:
        check(usd, values[ugx] / UGX_PER_USD, "currency_identity")
    return found
