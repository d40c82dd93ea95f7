"""Synthetic RTV Annual Household Survey files that look like the real extract.

Pure numpy/pandas/pyarrow (no Django).  The real file is never copied: ``fit_profile`` reduces it
to aggregate statistics (district/cluster/village shares, per-district marginal tables, one
correlation matrix, quirk rates) stored in ``profile.json``; ``generate`` draws from them.

Model
-----
* Geography: districts in the real order and shares, clusters and villages with the real counts
  and shares but synthetic names.
* A Gaussian copula over 53 latent variables (features, the independent money components in UGX,
  and shares that split a total into parts).  Marginals are per district: probability tables for
  codes and counts, zero mass + quantile table for amounts and shares.  Some marginals are
  conditional on a *gate* decoded before them (formal income only when ``work_salaried`` > 0,
  VSLA profit only when ``save_mode_7`` = 1, ...), which reproduces the structural zeros.
* Every derived money column is computed from the stored values in the order the contract's
  identities check them, so each identity holds to float precision on clean rows.
* Quirks (ID styles, duplicate IDs, sentinels, text ``business_number``, missing values) are
  injected at the fitted rates; they are warnings, never errors.
* ``bad_rate`` rows get exactly one unambiguous error each, listed in the ``errors`` frame.

Usage::

    data, errors = generate(10_000, seed=1, bad_rate=0.02)
    write(data, errors, "survey.csv", "csv")   # + survey.csv.errors.csv

CSV and XLSX carry the real header (duplicates, misspellings); JSON, NDJSON and Parquet the
canonical names.  A numeric column holding an injected non-numeric token is written as text in
JSON and Parquet (one type per key/column).  Writers format whole columns with Arrow kernels on
every core; the XLSX writer streams SpreadsheetML itself (inline strings), far faster than
openpyxl.  Refit the profile with ``python -m ingestion.synthetic.fit PATH``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.special import ndtr, ndtri

from ingestion.readers import column_letters
from rtv.contract import (
    FIELDS_BY_NAME,
    PER_DAY_IDENTITIES,
    RAW_HEADER,
    SUM_IDENTITIES,
    SURVEY_FIELDS,
    UGX_PER_USD,
    FieldSpec,
)

PROFILE_PATH = Path(__file__).with_name("profile.json")
PROFILE_VERSION = 2
FORMATS: tuple[str, ...] = ("csv", "xlsx", "json", "ndjson", "parquet")
ERROR_COLUMNS: list[str] = ["row_number", "household_id", "field", "column", "rule", "severity", "value"]
RULES: tuple[str, ...] = ("required", "type", "range", "allowed", "sum_identity", "per_day_identity")
FIELD_NAMES: list[str] = [f.name for f in SURVEY_FIELDS]
XLSX_MAX_ROWS = 1_048_575

# Float columns the real CSV prints without a decimal point (pandas wrote them as int64).
_INT_STYLE_FLOATS = frozenset({"time_to_opd", "vsla_profits_ugx", "assets_ugx"})
# Integer-valued contract fields kept as text (lenient: '' and '`' occur in the real file).
_TEXT_INTEGERS = frozenset({"business_number"})


# --------------------------------------------------------------------------------------------
# Latent variables of the copula
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Latent:
    name: str
    kind: str  # "pmf" (codes, counts, heaped values), "amount" (UGX), "share" (fraction/ratio)
    gate: str | None = None  # an earlier latent: rows split into gate <= 0 (group 0) and gate > 0 (group 1)
    positive_kind: str | None = None  # kind of group 1 when it differs (livestock consumed: a ratio)


_FLAGS = ("latrine_constructed", "tippy_tap_available", "soap_ash_available", "standard_hangline",
          "kitchen_house", "bathroom_constructed", "swept_compound", "dish_rack_present")

LATENTS: tuple[Latent, ...] = (
    *(Latent(n, "pmf") for n in (
        "household_size", "time_to_opd", "time_to_water", "agriculture_land", "season1_crops_planted",
        "season2_crops_planted", "perennial_crops_grown", "hhh_sex", "hhh_read_write", "material_walls",
        "radios_owned", "phones_owned", "business_number", "work_casual", "work_salaried", "save_mode_7",
        "loan_any", "household_fertilizer", "daily_meals", *_FLAGS, "composts", "non_bio_waste_mgt_present",
        "apply_liquid_manure", "organic_pesticide_expenditure", "soil_management", "banana_any",
        "postharvest_food_storage")),
    Latent("vsla_ugx", "amount", "save_mode_7"),
    Latent("formal_ugx", "amount", "work_salaried"),
    Latent("business_ugx", "amount", "business_number"),
    Latent("casual_ugx", "amount", "work_casual"),
    Latent("remittances_ugx", "amount"),
    Latent("rent_ugx", "amount"),
    Latent("s1_agric_ugx", "amount", "season1_crops_planted"),
    Latent("s2_agric_ugx", "amount", "season2_crops_planted"),
    Latent("perennial_agric_ugx", "amount", "perennial_crops_grown"),
    Latent("livestock_income_ugx", "amount"),
    Latent("livestock_assets_ugx", "amount"),
    Latent("livestock_consumed_ugx", "amount", "livestock_income_ugx", positive_kind="share"),
    Latent("s1_crop_share", "share", "s1_agric_ugx"),
    Latent("s2_crop_share", "share", "s2_agric_ugx"),
    Latent("perennial_crop_share", "share", "perennial_agric_ugx"),
    Latent("s1_vegval_share", "share", "s1_agric_ugx"),
    Latent("s2_vegval_share", "share", "s2_agric_ugx"),
    Latent("s1_veginc_share", "share", "s1_vegval_share"),
    Latent("s2_veginc_share", "share", "s2_vegval_share"),
)
LATENT_NAMES: list[str] = [v.name for v in LATENTS]

# Fields reported by quirks, outliers handled outside the copula.
_LAND_OUTLIER = 30.0
_RADIO_OUTLIER = 10
_DERIVED_STEP = 500.0  # UGX rounding of amounts obtained by splitting a total
_MIN_CELL = 30  # fewer rows than this in a (district, group) cell: use the pooled marginal

# --------------------------------------------------------------------------------------------
# Injected errors: candidates (each breaks exactly one rule on one field)
# --------------------------------------------------------------------------------------------

REQUIRED_FIELDS: tuple[str, ...] = ("district", "cluster", "village", "household_id", "household_size")
TYPE_FIELDS: tuple[str, ...] = ("household_size", "time_to_opd", "time_to_water", "agriculture_land",
                                "season1_crops_planted", "season2_crops_planted", "perennial_crops_grown",
                                "radios_owned", "phones_owned")
TYPE_TOKENS: tuple[str, ...] = ("abc", "xyz", "ten", "two", "1O", "3x", "??")
RANGE_VALUES: dict[str, tuple[float, ...]] = {
    "household_size": (0, -2, 75),
    "time_to_opd": (-10.0, 2000.0),
    "time_to_water": (-5.0, 1500.0),
    "agriculture_land": (-1.5, 750.0),
    "season1_crops_planted": (-1, 45),
    "season2_crops_planted": (-3, 40),
    "perennial_crops_grown": (-1, 35),
    "radios_owned": (-1, 80),
    "phones_owned": (-3, 64),
    "organic_pesticide_expenditure": (-5000.0,),
}
ALLOWED_VALUES: dict[str, tuple[float, ...]] = {
    "hhh_sex": (0, 3),
    "daily_meals": (0, 4, 7),
    "work_salaried": (3, 5),
    "material_walls": (0, 3),
    "household_fertilizer": (0, 4, 98),
    "latrine_constructed": (2,),
    "tippy_tap_available": (2,),
    "composts": (0.25, 2.0),
}
MULTISELECT_UNKNOWN: dict[str, tuple[int, ...]] = {"loan_from": (9, 12, 42), "food_banana_wilt_diseases": (4, 9)}
SUM_IDENTITY_FIELDS: tuple[str, ...] = ("vegetable_income", "seasonal_vegetable_value")
PER_DAY_FIELDS: tuple[str, ...] = ("consumption_per_day", "household_income_per_day")

# Head-of-household first names (HouseHoldID's third part is the first three letters).
_MALE_NAMES = ("John", "Benon", "Tumwesigye", "Elias", "Byaruhanga", "Alex", "Francis", "Turyahabwe", "Robert",
               "Fred", "Joseph", "Muhwezi", "William", "George", "James", "Godfrey", "Moses", "Samuel", "Jackson",
               "Patrick", "Justus", "David", "Barigye", "Niwagaba", "Julius", "Charles", "Christopher", "Emmanuel",
               "Isaac", "Kenneth", "Onesmus", "Ferdinand", "Amos", "Gideon", "Herbert", "Wilson", "Twinomujuni",
               "Mugisha", "Ahimbisibwe", "Kamugisha", "Tukahirwa", "Bosco", "Edison", "Nathan", "Simon")
_FEMALE_NAMES = ("Mary", "Annet", "Grace", "Jovia", "Peace", "Gloria", "Edith", "Night", "Ainembabazi",
                 "Kyomuhendo", "Asiimwe", "Agnes", "Beatrice", "Christine", "Dorcus", "Esther", "Florence",
                 "Juliet", "Margaret", "Provia", "Rose", "Scovia", "Teddy", "Allen", "Betty", "Judith",
                 "Kellen", "Lydia", "Monica", "Olivia", "Prossy", "Ruth", "Sarah", "Tumuhairwe", "Winnie")


# --------------------------------------------------------------------------------------------
# Profile: fitting and loading
# --------------------------------------------------------------------------------------------

def _read_real(path: str | Path) -> pd.DataFrame:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh))
    if len(header) != len(SURVEY_FIELDS):
        raise ValueError(f"{path}: expected {len(SURVEY_FIELDS)} columns, found {len(header)}")
    return pd.read_csv(path, header=None, skiprows=1, names=FIELD_NAMES, dtype=str, keep_default_na=False)


def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s.str.strip().replace("", np.nan), errors="coerce").to_numpy(dtype=float)


def _observed_latents(raw: pd.DataFrame) -> dict[str, np.ndarray]:
    """The value of every latent variable on every real row (NaN: not observed / a quirk)."""
    n = len(raw)
    num = {f.name: _num(raw[f.name]) for f in SURVEY_FIELDS if f.type not in ("text", "multiselect")}
    obs: dict[str, np.ndarray] = {}
    for v in LATENTS:
        if v.kind == "pmf" and v.name in num:
            obs[v.name] = num[v.name].copy()
    land = obs["agriculture_land"]
    land[land > _LAND_OUTLIER] = np.nan
    obs["radios_owned"][obs["radios_owned"] >= _RADIO_OUTLIER] = np.nan
    obs["phones_owned"][obs["phones_owned"] < 0] = np.nan
    fert = obs["household_fertilizer"]
    fert[fert == 99] = 0  # 'none' sorts first
    pest = obs["organic_pesticide_expenditure"]
    pest[np.isnan(pest)] = -1.0  # missing sorts first, decoded back to empty
    obs["loan_any"] = (raw["loan_from"].str.strip() != "").to_numpy(dtype=float)
    obs["banana_any"] = (raw["food_banana_wilt_diseases"].str.strip() != "").to_numpy(dtype=float)

    def ugx(name: str) -> np.ndarray:
        return np.round(num[name] * UGX_PER_USD)

    obs["vsla_ugx"] = num["vsla_profits_ugx"].copy()
    for latent, field in (("formal_ugx", "formal_employment"), ("business_ugx", "personal_business"),
                          ("casual_ugx", "casual_labour"), ("remittances_ugx", "remittances_and_gifts"),
                          ("rent_ugx", "rent_income"), ("s1_agric_ugx", "season1_agric_value"),
                          ("s2_agric_ugx", "season2_agric_value"), ("perennial_agric_ugx", "perennial_agric_value"),
                          ("livestock_income_ugx", "livestock_income")):
        obs[latent] = ugx(field)
    obs["livestock_assets_ugx"] = num["assets_ugx"].copy()
    li, lc = obs["livestock_income_ugx"], ugx("livestock_income_consumed")
    with np.errstate(divide="ignore", invalid="ignore"):
        obs["livestock_consumed_ugx"] = np.where(li > 0, np.maximum(lc / li, 1.0), lc)

    def share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(whole > 0, np.clip(part / whole, 0.0, 1.0), 0.0)

    s1a, s2a, pa_ = obs["s1_agric_ugx"], obs["s2_agric_ugx"], obs["perennial_agric_ugx"]
    s1v, s2v = ugx("season1_vegetable_value"), ugx("season2_vegetable_value")
    obs["s1_crop_share"] = share(ugx("season1_crop_income"), s1a)
    obs["s2_crop_share"] = share(ugx("season2_crop_income"), s2a)
    obs["perennial_crop_share"] = share(ugx("perennial_crop_income"), pa_)
    obs["s1_vegval_share"] = share(s1v, s1a)
    obs["s2_vegval_share"] = share(s2v, s2a)
    obs["s1_veginc_share"] = share(ugx("season1_vegetable_income"), s1v)
    obs["s2_veginc_share"] = share(ugx("season2_vegetable_income"), s2v)
    assert all(len(a) == n for a in obs.values())
    return obs


def _quantile_table(x: np.ndarray) -> list[float]:
    k = int(np.clip(len(x) // 3, 11, 201))
    return [float(q) for q in np.quantile(x, np.linspace(0.0, 1.0, k))]


def _fit_marginal(x: np.ndarray, kind: str, step: float) -> dict[str, Any]:
    x = x[~np.isnan(x)]
    if kind == "pmf":
        vals, counts = np.unique(x, return_counts=True)
        return {"kind": "pmf", "v": [float(v) for v in vals], "p": [round(float(c) / len(x), 6) for c in counts]}
    pos = x[x > 0]
    if len(pos) == 0:
        return {"kind": "zero"}
    m: dict[str, Any] = {"kind": kind, "p0": round(float(np.mean(x <= 0)), 6)}
    if kind == "amount":
        m["q"] = [round(q) for q in _quantile_table(pos)]
        m["step"] = step
    else:
        m["q"] = [round(q, 6) for q in _quantile_table(pos)]
    return m


def _amount_step(x: np.ndarray) -> float:
    pos = x[(x > 0) & ~np.isnan(x)]
    for step in (5000.0, 1000.0, 500.0, 100.0):
        if len(pos) and np.mean(np.mod(pos, step) == 0) >= 0.85:
            return step
    return 1.0


def _normal_scores(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised ranks (ties broken at random) mapped to standard normal scores."""
    order = np.lexsort((rng.random(len(x)), x))
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    return np.asarray(ndtri((ranks + 0.5) / len(x)))


def _pairwise_corr(z: np.ndarray) -> np.ndarray:
    m = (~np.isnan(z)).astype(float)
    zz = np.where(np.isnan(z), 0.0, z)
    n = m.T @ m
    sx = zz.T @ m
    sxx = (zz**2).T @ m
    sxy = zz.T @ zz
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy / n - (sx / n) * (sx.T / n)
        var_x = sxx / n - (sx / n) ** 2
        corr = cov / np.sqrt(var_x * var_x.T)
    corr[~np.isfinite(corr) | (n < 20)] = np.nan  # too few joint observations to tell
    np.fill_diagonal(corr, 1.0)
    return corr


def _nearest_correlation(c: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    c = (c + c.T) / 2
    w, v = np.linalg.eigh(c)
    c = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(c))
    c = c / np.outer(d, d)
    np.fill_diagonal(c, 1.0)
    return c


_ONSETS = ("Ka", "Ki", "Ku", "Ru", "Rwa", "Nya", "Bu", "Bwa", "Mu", "Kya", "Kye", "Rwe", "Nte", "Ihe", "Ishe",
           "Kaga", "Kabi", "Nyabu", "Buhu", "Kiru", "Muhi", "Rushe", "Kashe", "Bugo", "Kati", "Nyaka", "Mi",
           "Bi", "Ryo", "Nyamu")
_MIDDLES = ("ba", "bi", "bu", "ga", "gi", "go", "gu", "hi", "ho", "hu", "ka", "ki", "ko", "ku", "ma", "mi", "na",
            "ni", "nyi", "ra", "ri", "ro", "ru", "sha", "shi", "ta", "te", "tu", "ya", "yo", "za", "zi", "nga",
            "mba", "nda", "ndo", "nzi", "rwe", "nja", "bare", "tembe", "haro")
_ENDINGS = ("", "ro", "ra", "ga", "go", "ko", "ngo", "nzi", "mba", "she", "zi", "ye", "ju", "ndo", "re", "ta",
            "nga", "ka", "ha", "ngye", "ma", "si", "be", "ni", "ke", "mbo", "ngu", "ma")


def _synthetic_names(count: int, forbidden: set[str], rng: np.random.Generator) -> list[str]:
    """Plausible Runyankole/Rukiga-sounding place names, none equal to a real one."""
    out: list[str] = []
    seen = {f.lower() for f in forbidden}
    while len(out) < count:
        parts = [_ONSETS[rng.integers(len(_ONSETS))]]
        parts += [_MIDDLES[rng.integers(len(_MIDDLES))] for _ in range(int(rng.integers(0, 3)))]
        parts.append(_ENDINGS[rng.integers(len(_ENDINGS))])
        name = "".join(parts)
        name = name[0].upper() + name[1:].lower()
        if not 5 <= len(name) <= 12 or name.lower() in seen or re.search(r"([a-z]{2,})\1", name.lower()):
            continue
        seen.add(name.lower())
        out.append(name)
    return out


def _fit_geography(raw: pd.DataFrame, rng: np.random.Generator) -> list[dict[str, Any]]:
    real_names: set[str] = set()
    for col in ("cluster", "village"):
        for name in raw[col].unique():
            real_names.add(name)
            real_names.update(re.split(r"[_\s]+", name))
    districts = list(dict.fromkeys(raw["district"]))  # order of first appearance
    n_clusters = raw.groupby("district")["cluster"].nunique()
    pairs = raw.groupby(["district", "cluster", "village"], sort=True).size()
    cluster_names = _synthetic_names(int(n_clusters.sum()), real_names, rng)
    village_names = _synthetic_names(len(pairs) + 40, real_names | set(cluster_names), rng)
    village_iter = iter(village_names)
    # The real file's village naming quirks: base_1/base_2 pairs, compound names, a name reused
    # by villages of two clusters of the same district.
    real_villages = pd.Series(raw["village"].unique())
    n_suffixed = int(real_villages.str.contains(r"_\d+$").sum())
    n_compound = int(real_villages.str.contains("_").sum()) - n_suffixed
    n_shared = len(pairs) - raw["village"].nunique()
    two_words = {int(rng.integers(len(cluster_names)))}

    geo: list[dict[str, Any]] = []
    ci = 0
    all_villages: list[dict[str, Any]] = []
    for d in districts:
        sub = raw[raw["district"] == d]
        clusters = []
        for _, csub in sub.groupby("cluster", sort=True):
            cname = cluster_names[ci] + (" East" if ci in two_words else "")
            ci += 1
            counts = csub.groupby("village").size().to_numpy()
            villages = [{"name": next(village_iter), "share": round(float(c) / counts.sum(), 6)} for c in counts]
            all_villages.extend({"district": d, "cluster": cname, **v} for v in villages)
            clusters.append({"name": cname, "share": round(len(csub) / len(sub), 6), "villages": villages})
        ids = sub["household_id"]
        serial = pd.to_numeric(ids.str.extract(r"(\d+)\s*$")[0], errors="coerce")
        sex_letter = ids.str.fullmatch(r"[A-Z]{3}-[A-Z]{3}-[MF]-\d+")
        lower = ids.str.fullmatch(r"[A-Z][a-z]{2}-[a-z]{3}-[a-z]{3}-[a-z]\d+")
        sex = _num(sub["hhh_sex"])
        letter = ids.str.split("-").str[2]
        agree = ((letter == "M") & (sex == 1)) | ((letter == "F") & (sex == 2))
        geo.append({
            "name": d,
            "code": d[:3].upper(),
            "letter": d[0].upper(),
            "rows": len(sub),
            "share": round(len(sub) / len(raw), 6),
            "id_style": "sex_letter" if sex_letter.mean() > 0.5 else "standard",
            "id_lower_rate": round(float(lower.mean()), 6),
            "id_sex_agreement": round(float(agree[sex_letter].mean()) if sex_letter.any() else 1.0, 4),
            "serial_min": int(serial.min()),
            "serial_max": int(serial.max()),
            "clusters": clusters,
        })
    # Naming quirks applied to the synthetic villages (deterministic given rng).
    order = rng.permutation(len(all_villages))
    pos = 0
    for _ in range(n_suffixed // 2):
        a, b = all_villages[order[pos]], all_villages[order[pos + 1]]
        pos += 2
        base = next(village_iter)
        a["name"], b["name"] = f"{base}_1", f"{base}_2"
    for _ in range(n_compound):
        v = all_villages[order[pos]]
        pos += 1
        v["name"] = f"{v['name']}_{next(village_iter)}"
    shared_done = 0
    for d in geo:
        if shared_done >= n_shared or len(d["clusters"]) < 2:
            continue
        mine = [v for v in all_villages if v["district"] == d["name"] and "_" not in v["name"]]
        first = [v for v in mine if v["cluster"] == d["clusters"][0]["name"]]
        second = [v for v in mine if v["cluster"] == d["clusters"][1]["name"]]
        while shared_done < n_shared and first and second:
            second.pop()["name"] = first.pop()["name"]
            shared_done += 1
    names = iter(all_villages)
    for d in geo:
        for c in d["clusters"]:
            for v in c["villages"]:
                v["name"] = next(names)["name"]
    return geo


def _multiselect_pmf(s: pd.Series) -> dict[str, Any]:
    s = s.str.strip()
    vc = s[s != ""].value_counts()
    return {"values": [str(v) for v in vc.index], "p": [round(float(c) / vc.sum(), 6) for c in vc.to_numpy()]}


def _score_matrix(obs: dict[str, np.ndarray], district: np.ndarray,
                  marginals: dict[str, dict[str, dict[str, Any]]], rng: np.random.Generator) -> np.ndarray:
    """Normal scores of every latent within its (district, gate group) cell; NaN where the cell is
    constant (a structural zero) or the value is not observed."""
    n = len(district)
    scores = np.full((n, len(LATENTS)), np.nan)
    for j, v in enumerate(LATENTS):
        x = obs[v.name]
        grp = np.zeros(n, dtype=int) if v.gate is None else (np.nan_to_num(obs[v.gate], nan=0.0) > 0).astype(int)
        for d, cells in marginals[v.name].items():
            for g, m in cells.items():
                cell = (district == d) & (grp == int(g)) & ~np.isnan(x)
                if m["kind"] != "zero" and cell.sum() >= 2:
                    scores[cell, j] = _normal_scores(x[cell], rng)
    return scores


def _calibrate(target: np.ndarray, profile: dict[str, Any], rng: np.random.Generator, rows: int = 40_000,
               rounds: int = 6) -> np.ndarray:
    """The latent Gaussian correlation whose *decoded* data has the target normal-score correlations.

    Discrete and zero-inflated marginals attenuate correlations twice (once in the fitted scores,
    once when decoding), so the plain estimate under-states binary features' links to income.
    Fixed-point iteration on simulated data (NORTA-style correlation matching), for one district."""
    name = profile["districts"][0]["name"]
    latent = _nearest_correlation(target)
    for _ in range(rounds):
        sim = {**profile, "correlation": {name: latent}}
        blocks = _blocks(sim, rows, rng)
        lat = _sample_latents(sim, blocks, rows, rng)
        achieved = _pairwise_corr(_score_matrix(lat, np.full(rows, name, dtype=object), profile["marginals"], rng))
        step = np.nan_to_num(target - achieved, nan=0.0)
        latent = _nearest_correlation(np.clip(latent + step, -0.995, 0.995))
    return latent


_DISTRICT_WEIGHT = 0.75  # district correlation shrunk towards the pooled one (small cells are noisy)


def fit_profile(real_csv_path: str | Path) -> dict[str, Any]:
    """Aggregate statistics of the real extract (no row, no real place name) for ``generate``."""
    raw = _read_real(real_csv_path)
    rng = np.random.default_rng(20240917)
    n = len(raw)
    geo = _fit_geography(raw, rng)
    obs = _observed_latents(raw)
    district = raw["district"].to_numpy(dtype=object)

    steps = {v.name: _amount_step(obs[v.name]) for v in LATENTS if v.kind == "amount"}
    marginals: dict[str, dict[str, dict[str, Any]]] = {}
    for v in LATENTS:
        x = obs[v.name]
        grp = np.zeros(n, dtype=int) if v.gate is None else (np.nan_to_num(obs[v.gate], nan=0.0) > 0).astype(int)
        per_district: dict[str, dict[str, Any]] = {}
        for d in geo:
            in_d = district == d["name"]
            cells: dict[str, Any] = {}
            for g in sorted(set(grp.tolist())) if v.gate else [0]:
                kind = v.positive_kind if (g == 1 and v.positive_kind) else v.kind
                cell = in_d & (grp == g) & ~np.isnan(x)
                source = cell if cell.sum() >= _MIN_CELL else (grp == g) & ~np.isnan(x)
                cells[str(g)] = _fit_marginal(x[source], kind, steps.get(v.name, 1.0))
            per_district[d["name"]] = cells
        marginals[v.name] = per_district
    scores = _score_matrix(obs, district, marginals, rng)
    pooled = np.nan_to_num(_pairwise_corr(scores), nan=0.0)
    corr: dict[str, list[list[float]]] = {}
    for d in geo:
        own = _pairwise_corr(scores[district == d["name"]])
        target = np.where(np.isnan(own), pooled, _DISTRICT_WEIGHT * own + (1 - _DISTRICT_WEIGHT) * pooled)
        latent = _calibrate(target, {"districts": [{**d, "share": 1.0}], "marginals": marginals}, rng)
        corr[d["name"]] = [[round(float(c), 6) for c in row] for row in latent]

    ids = raw["household_id"]
    num = {name: _num(raw[name]) for name in ("agriculture_land", "radios_owned", "phones_owned")}
    bn = raw["business_number"].str.strip()
    label = _num(raw["income_consumption_residues_per_day"])
    bands = {"On Track": float(np.mean(label >= 2.15)),
             "At Risk": float(np.mean((label >= 1.77) & (label < 2.15))),
             "Struggling": float(np.mean((label >= 1.25) & (label < 1.77))),
             "Severely Struggling": float(np.mean(label < 1.25))}
    return {
        "version": PROFILE_VERSION,
        "source": {"rows": n, "columns": len(SURVEY_FIELDS), "note": "aggregate statistics only"},
        "ugx_per_usd": UGX_PER_USD,
        "districts": geo,
        "latents": LATENT_NAMES,
        "marginals": marginals,
        "correlation": corr,
        "multiselect": {"loan_from": _multiselect_pmf(raw["loan_from"]),
                        "food_banana_wilt_diseases": _multiselect_pmf(raw["food_banana_wilt_diseases"])},
        "quirks": {
            "land_missing_rate": round(float(np.mean(np.isnan(num["agriculture_land"]))), 6),
            "land_outlier_rate": round(float(np.mean(num["agriculture_land"] > _LAND_OUTLIER)), 6),
            "land_outlier_max": float(np.nanmax(num["agriculture_land"])),
            "radios_outlier_rate": round(float(np.mean(num["radios_owned"] >= _RADIO_OUTLIER)), 6),
            "radios_outlier_max": int(np.nanmax(num["radios_owned"])),
            "phones_sentinel_rate": round(float(np.mean(num["phones_owned"] == -99)), 6),
            "business_missing_rate": round(float(np.mean(bn == "")), 6),
            "business_odd_rate": round(float(np.mean((bn != "") & ~bn.str.fullmatch(r"\d+"))), 6),
            "id_comma_rate": round(float(ids.str.contains(",").mean()), 6),
            "id_duplicate_row_rate": round(float(ids.duplicated(keep=False).mean()), 6),
        },
        "reference": {"label_bands": {k: round(v, 4) for k, v in bands.items()}},
    }


def save_profile(profile: dict[str, Any], path: str | Path = PROFILE_PATH) -> Path:
    path = Path(path)
    path.write_text(json.dumps(profile, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8")
    return path


@lru_cache(maxsize=4)
def _load_profile_cached(path: str) -> dict[str, Any]:
    profile: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    if profile.get("version") != PROFILE_VERSION or profile.get("latents") != LATENT_NAMES:
        raise ValueError(f"{path} was fitted for another generator version: run python -m ingestion.synthetic.fit")
    return profile


def load_profile(path: str | Path | None = None) -> dict[str, Any]:
    return _load_profile_cached(str(path or PROFILE_PATH))


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

def _decode(m: dict[str, Any], u: np.ndarray) -> np.ndarray:
    kind = m["kind"]
    if kind == "zero":
        return np.zeros(len(u))
    if kind == "pmf":
        cum = np.cumsum(np.asarray(m["p"], dtype=float))
        cum /= cum[-1]
        idx = np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
        return np.asarray(m["v"], dtype=float)[idx]
    p0 = float(m["p0"])
    q = np.asarray(m["q"], dtype=float)
    t = np.clip((u - p0) / max(1.0 - p0, 1e-12), 0.0, 1.0)
    x = np.interp(t, np.linspace(0.0, 1.0, len(q)), q)
    if kind == "amount":
        step = float(m["step"])
        x = np.maximum(np.round(x / step) * step, step)
    return np.where(u < p0, 0.0, x)


def _round_step(x: np.ndarray, step: float = _DERIVED_STEP) -> np.ndarray:
    return np.round(x / step) * step


def _blocks(profile: dict[str, Any], rows: int, rng: np.random.Generator) -> list[tuple[dict[str, Any], int, int]]:
    shares = np.asarray([d["share"] for d in profile["districts"]], dtype=float)
    counts = rng.multinomial(rows, shares / shares.sum())
    out, start = [], 0
    for d, c in zip(profile["districts"], counts, strict=True):
        out.append((d, start, start + int(c)))
        start += int(c)
    return out


def _reranked(u: np.ndarray) -> np.ndarray:
    """Uniform scores of ``u`` by rank.  A gated marginal is fitted *given* its gate, but the rows
    that pass the gate have skewed latents (the gate correlates with the variable); re-ranking
    within the cell gives the cell exactly its fitted marginal and keeps the copula's ordering."""
    order = np.argsort(u, kind="stable")
    ranks = np.empty(len(u))
    ranks[order] = np.arange(len(u))
    return (ranks + 0.5) / len(u)


def _sample_latents(profile: dict[str, Any], blocks: list[tuple[dict[str, Any], int, int]], rows: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    u = np.empty((len(LATENTS), rows))  # one contiguous row per latent
    for d, a, b in blocks:
        corr = _nearest_correlation(np.asarray(profile["correlation"][d["name"]], dtype=float), floor=1e-6)
        u[:, a:b] = np.linalg.cholesky(corr) @ rng.standard_normal((len(LATENTS), b - a))
    ndtr(u, out=u)
    out: dict[str, np.ndarray] = {}
    for j, v in enumerate(LATENTS):
        x = np.empty(rows)
        col = u[j]
        for d, a, b in blocks:
            cells = profile["marginals"][v.name][d["name"]]
            if v.gate is None:
                x[a:b] = _decode(cells["0"], col[a:b])
                continue
            pos = out[v.gate][a:b] > 0
            seg = np.empty(b - a)
            for g, mask in (("0", ~pos), ("1", pos)):
                if mask.any():
                    m = cells.get(g) or cells.get("1" if g == "0" else "0") or {"kind": "zero"}
                    seg[mask] = _decode(m, _reranked(col[a:b][mask]))
            x[a:b] = seg
        out[v.name] = x
    return out


def _ids(profile: dict[str, Any], blocks: list[tuple[dict[str, Any], int, int]], village: pa.Array,
         village_code: np.ndarray, sex: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """HouseHoldIDs in the real styles; ~2% share an ID with another row of the same village."""
    rows = len(village)
    q = profile["quirks"]
    male = pa.array([n[:3].upper() for n in _MALE_NAMES])
    female = pa.array([n[:3].upper() for n in _FEMALE_NAMES])
    zipf_m = 1.0 / np.arange(1, len(male) + 1) ** 0.6
    zipf_f = 1.0 / np.arange(1, len(female) + 1) ** 0.6
    head = pc.if_else(pa.array(sex == 2),
                      pc.take(female, pa.array(rng.choice(len(female), rows, p=zipf_f / zipf_f.sum()))),
                      pc.take(male, pa.array(rng.choice(len(male), rows, p=zipf_m / zipf_m.sum()))))
    vcode = pc.utf8_upper(pc.utf8_slice_codeunits(village, 0, 3))
    parts: list[pa.Array] = []
    for d, a, b in blocks:
        n = b - a
        if n == 0:
            continue
        lo, hi = int(d["serial_min"]), int(d["serial_max"])
        hi = max(hi, lo + int(n * 1.3))
        serial = pc.cast(pa.array(lo + rng.choice(hi - lo + 1, n, replace=False)), pa.string())
        dv = vcode.slice(a, n)
        code = d["code"]
        if d["id_style"] == "sex_letter":
            agree = rng.random(n) < float(d["id_sex_agreement"])
            letter = pa.array(np.where((sex[a:b] == 1) == agree, "M", "F"))
            ids = pc.binary_join_element_wise(code, dv, letter, serial, "-")
        else:
            h = head.slice(a, n)
            lower = rng.random(n) < float(d["id_lower_rate"])
            comma = rng.random(n) < float(q["id_comma_rate"])
            letter = d["letter"]
            std = pc.binary_join_element_wise(code, dv, h, pc.binary_join_element_wise(letter, serial, ""), "-")
            low = pc.binary_join_element_wise(code.title(), pc.utf8_lower(dv), pc.utf8_lower(h),
                                              pc.binary_join_element_wise(letter.lower(), serial, ""), "-")
            com = pc.binary_join_element_wise(code, dv, pc.binary_join_element_wise(
                pc.utf8_slice_codeunits(h, 0, 2), ",", ""), pc.binary_join_element_wise(letter, serial, ""), "-")
            ids = pc.if_else(pa.array(comma), com, pc.if_else(pa.array(lower), low, std))
        parts.append(ids)
    if not parts:
        return pa.array([], type=pa.string())
    ids_all = pa.concat_arrays([p.cast(pa.string()) for p in parts])
    # Shared IDs: a row takes the ID of its neighbour in the same village.
    n_pairs = int(rng.binomial(rows, float(q["id_duplicate_row_rate"]) / 2)) if rows > 1 else 0
    if n_pairs:
        order = np.argsort(village_code, kind="stable")
        sv = village_code[order]
        same_next = np.flatnonzero(sv[:-1] == sv[1:])
        if len(same_next):
            pick = rng.choice(same_next, min(n_pairs, len(same_next)), replace=False)
            src = np.arange(rows)
            src[order[pick + 1]] = order[pick]
            ids_all = pc.take(ids_all, pa.array(src))
    return ids_all


def _geography(profile: dict[str, Any], blocks: list[tuple[dict[str, Any], int, int]], rows: int,
               rng: np.random.Generator) -> tuple[pa.Array, pa.Array, pa.Array, np.ndarray]:
    """District, cluster and village of every row (and a village number for grouping)."""
    names_d: list[str] = []
    names_c: list[str] = []
    names_v: list[str] = []
    code = np.empty(rows, dtype=np.int64)
    for d, a, b in blocks:
        base = len(names_v)
        p = []
        for c in d["clusters"]:
            for v in c["villages"]:
                names_d.append(d["name"])
                names_c.append(c["name"])
                names_v.append(v["name"])
                p.append(c["share"] * v["share"])
        pr = np.asarray(p) / np.sum(p)
        code[a:b] = base + rng.choice(len(pr), b - a, p=pr)
    idx = pa.array(code)
    return (pc.take(pa.array(names_d, type=pa.string()), idx), pc.take(pa.array(names_c, type=pa.string()), idx),
            pc.take(pa.array(names_v, type=pa.string()), idx), code)


def _money(lat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All 35 money columns (USD, and the two UGX copies) from the independent components."""
    r = UGX_PER_USD
    s1a, s2a, pa_ = lat["s1_agric_ugx"], lat["s2_agric_ugx"], lat["perennial_agric_ugx"]
    s1c = np.minimum(_round_step(lat["s1_crop_share"] * s1a), s1a)
    s2c = np.minimum(_round_step(lat["s2_crop_share"] * s2a), s2a)
    pc_ = np.minimum(_round_step(lat["perennial_crop_share"] * pa_), pa_)
    s1v = np.minimum(_round_step(lat["s1_vegval_share"] * s1a), s1a)
    s2v = np.minimum(_round_step(lat["s2_vegval_share"] * s2a), s2a)
    s1vi = np.minimum(np.minimum(_round_step(lat["s1_veginc_share"] * s1v), s1v), s1c)
    s2vi = np.minimum(np.minimum(_round_step(lat["s2_veginc_share"] * s2v), s2v), s2c)
    li = lat["livestock_income_ugx"]
    raw_lc = lat["livestock_consumed_ugx"]
    lc = np.where(li > 0, np.maximum(_round_step(li * np.maximum(raw_lc, 1.0)), li), raw_lc)

    m: dict[str, np.ndarray] = {
        "vsla_profits_ugx": lat["vsla_ugx"],
        "season1_vegetable_income": s1vi / r,
        "season2_vegetable_income": s2vi / r,
        "season1_vegetable_value": s1v / r,
        "season2_vegetable_value": s2v / r,
        "formal_employment": lat["formal_ugx"] / r,
        "personal_business": lat["business_ugx"] / r,
        "casual_labour": lat["casual_ugx"] / r,
        "remittances_and_gifts": lat["remittances_ugx"] / r,
        "rent_income": lat["rent_ugx"] / r,
        "season1_crop_income": s1c / r,
        "season2_crop_income": s2c / r,
        "perennial_crop_income": pc_ / r,
        "livestock_income": li / r,
        "season1_agric_value": s1a / r,
        "season2_agric_value": s2a / r,
        "perennial_agric_value": pa_ / r,
        "livestock_income_consumed": lc / r,
        "assets_ugx": lat["livestock_assets_ugx"],
    }
    m["vsla_profits_usd"] = m["vsla_profits_ugx"] / r
    m["livestock_asset_value"] = m["assets_ugx"] / r
    _apply_identities(m)
    return m


def _apply_identities(m: dict[str, np.ndarray]) -> None:
    """Derived columns from the stored terms, term by term in the contract's order."""
    for result, terms in SUM_IDENTITIES:
        acc = np.zeros_like(m[terms[0][1]])
        for sign, name in terms:
            acc = acc + m[name] if sign > 0 else acc - m[name]
        if result == "consumption_residues":
            acc = np.where((acc < 0) & (acc > -1e-6), 0.0, acc)  # float dust when nothing is consumed
        m[result] = acc
    for result, annual in PER_DAY_IDENTITIES:
        m[result] = m[annual] / 365.0


def _column_dtype(f: FieldSpec) -> str:
    if f.type in ("text", "multiselect") or f.name in _TEXT_INTEGERS:
        return "str"
    if f.type == "decimal":
        return "float64"
    if f.type == "code" and any(isinstance(a, float) for a in f.allowed):
        return "float64"
    return "Int64"


def _choice_strings(pmf: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    p = np.asarray(pmf["p"], dtype=float)
    return np.asarray(pmf["values"], dtype=object)[rng.choice(len(p), n, p=p / p.sum())]


def generate(rows: int, *, seed: int = 0, bad_rate: float = 0.0,
             profile: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rows`` synthetic households and the list of errors injected into ``bad_rate`` of them.

    ``data`` has the 75 contract fields in contract order, keyed by canonical name.  ``errors`` has
    one row per injected error: row_number (header = 1), household_id, field, column, rule,
    severity ('error') and the injected value as text.
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    if not 0.0 <= bad_rate <= 1.0:
        raise ValueError("bad_rate must be between 0 and 1")
    profile = profile or load_profile()
    rng = np.random.default_rng(seed)
    blocks = _blocks(profile, rows, rng)
    district, cluster, village, village_code = _geography(profile, blocks, rows, rng)
    lat = _sample_latents(profile, blocks, rows, rng)
    q = profile["quirks"]
    cols: dict[str, Any] = {}

    # Features.
    for name in ("household_size", "time_to_opd", "time_to_water", "agriculture_land", "season1_crops_planted",
                 "season2_crops_planted", "perennial_crops_grown", "hhh_sex", "hhh_read_write", "material_walls",
                 "radios_owned", "phones_owned", "work_casual", "work_salaried", "save_mode_7", "daily_meals",
                 *_FLAGS, "composts", "non_bio_waste_mgt_present", "apply_liquid_manure", "soil_management",
                 "postharvest_food_storage"):
        cols[name] = lat[name]
    fert = lat["household_fertilizer"].copy()
    fert[fert == 0] = 99
    cols["household_fertilizer"] = fert
    pest = lat["organic_pesticide_expenditure"].copy()
    pest[pest < 0] = np.nan
    cols["organic_pesticide_expenditure"] = pest
    cols["perennial_cropping"] = (lat["perennial_crops_grown"] > 0).astype(float)
    cols["water_control_practise"] = np.ones(rows)
    bn = lat["business_number"].astype(np.int64).astype(str).astype(object)
    u = rng.random(rows)
    bn[u < q["business_missing_rate"]] = None
    bn[(u >= q["business_missing_rate"]) & (u < q["business_missing_rate"] + q["business_odd_rate"])] = "`"
    cols["business_number"] = bn
    for name, flag in (("loan_from", "loan_any"), ("food_banana_wilt_diseases", "banana_any")):
        s = np.full(rows, None, dtype=object)
        has = lat[flag] > 0
        s[has] = _choice_strings(profile["multiselect"][name], int(has.sum()), rng)
        cols[name] = s
    # Rare real quirks outside the copula.
    land = cols["agriculture_land"]
    u = rng.random(rows)
    out_land = u < q["land_outlier_rate"]
    land[out_land] = np.round(rng.uniform(_LAND_OUTLIER + 1, q["land_outlier_max"], int(out_land.sum())))
    land[(u >= q["land_outlier_rate"]) & (u < q["land_outlier_rate"] + q["land_missing_rate"])] = np.nan
    radios = cols["radios_owned"]
    big = rng.random(rows) < q["radios_outlier_rate"]
    radios[big] = rng.integers(_RADIO_OUTLIER, int(q["radios_outlier_max"]) + 1, int(big.sum()))
    phones = cols["phones_owned"]
    phones[rng.random(rows) < q["phones_sentinel_rate"]] = -99

    cols.update(_money(lat))
    cols["district"], cols["cluster"], cols["village"] = district, cluster, village
    cols["household_id"] = _ids(profile, blocks, village, village_code, lat["hhh_sex"], rng)

    data = pd.DataFrame({f.name: _typed(cols[f.name], _column_dtype(f)) for f in SURVEY_FIELDS})
    errors = _inject_errors(data, bad_rate, rng)
    return data, errors


def _typed(values: np.ndarray | pa.Array, dtype: str) -> pd.Series:
    if dtype == "str":
        if isinstance(values, pa.Array):
            return pd.Series(pd.array(values.cast(pa.string()), dtype="str"))
        return pd.Series(values, dtype="str")
    arr = np.asarray(values, dtype=float)
    if dtype == "Int64":
        nan = np.isnan(arr)
        return pd.Series(pd.arrays.IntegerArray(np.where(nan, 0, arr).astype(np.int64), nan))
    return pd.Series(arr)


# --------------------------------------------------------------------------------------------
# Error injection
# --------------------------------------------------------------------------------------------

def _value_text(field: str, value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)  # type: ignore[arg-type]
    if field in _INT_STYLE_FLOATS and v.is_integer():
        return str(int(v))
    return repr(v)


def _inject_errors(data: pd.DataFrame, bad_rate: float, rng: np.random.Generator) -> pd.DataFrame:
    rows = len(data)
    n_bad = round(bad_rate * rows)
    if n_bad == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row_number" else "str") for c in ERROR_COLUMNS})
    idx = np.sort(rng.choice(rows, n_bad, replace=False))
    rules = np.asarray(RULES)[rng.integers(len(RULES), size=n_bad)]
    fields = np.empty(n_bad, dtype=object)
    values = np.empty(n_bad, dtype=object)
    for rule, cands in (("required", REQUIRED_FIELDS), ("type", TYPE_FIELDS),
                        ("range", tuple(RANGE_VALUES)),
                        ("allowed", (*ALLOWED_VALUES, *MULTISELECT_UNKNOWN)),
                        ("sum_identity", SUM_IDENTITY_FIELDS), ("per_day_identity", PER_DAY_FIELDS)):
        sel = np.flatnonzero(rules == rule)
        fields[sel] = np.asarray(cands, dtype=object)[rng.integers(len(cands), size=len(sel))]
    cache: dict[str, np.ndarray] = {}

    def current_values(field: str) -> np.ndarray:  # the field's values on the bad rows, by error
        if field not in cache:
            cache[field] = data[field].iloc[idx].to_numpy(dtype=object)
        return cache[field]

    for i in range(n_bad):  # a loop over the injected errors only
        rule, field = rules[i], fields[i]
        current = current_values(field)[i]
        if rule == "required":
            values[i] = None
        elif rule == "type":
            values[i] = TYPE_TOKENS[rng.integers(len(TYPE_TOKENS))]
        elif rule == "range":
            opts = RANGE_VALUES[field]
            values[i] = opts[rng.integers(len(opts))]
        elif rule == "allowed" and field in MULTISELECT_UNKNOWN:
            unknown = MULTISELECT_UNKNOWN[field][rng.integers(len(MULTISELECT_UNKNOWN[field]))]
            values[i] = f"{current} {unknown}" if isinstance(current, str) and current else str(unknown)
        elif rule == "allowed":
            opts = ALLOWED_VALUES[field]
            values[i] = opts[rng.integers(len(opts))]
        elif rule == "sum_identity":
            values[i] = float(current) + round(float(rng.uniform(15.0, 60.0)), 2)
        else:
            values[i] = float(current) + round(float(rng.uniform(0.3, 1.5)), 2)
    for field in pd.unique(fields):
        sel = fields == field
        rows_f = idx[sel]
        vals = values[sel]
        col = data[field]
        new: Any
        if col.dtype == "str":
            new = pd.array([None if v is None else str(v) for v in vals], dtype="str")
        elif any(isinstance(v, str) for v in vals):  # a non-numeric token: the column becomes object
            col = col.astype(object)
            new = np.asarray([None if v is None else v for v in vals], dtype=object)
        elif col.dtype == "Int64":
            new = pd.array([None if v is None else int(v) for v in vals], dtype="Int64")
        else:
            new = np.asarray([np.nan if v is None else float(v) for v in vals], dtype=float)
        col = col.copy()
        col.iloc[rows_f] = new
        data[field] = col
    hh = data["household_id"].iloc[idx].to_numpy(dtype=object)
    return pd.DataFrame({
        "row_number": (idx + 2).astype(np.int64),
        "household_id": pd.Series([h if isinstance(h, str) else "" for h in hh], dtype="str"),
        "field": pd.Series(fields, dtype="str"),
        "column": pd.Series([FIELDS_BY_NAME[f].header for f in fields], dtype="str"),
        "rule": pd.Series(rules, dtype="str"),
        "severity": pd.Series(["error"] * n_bad, dtype="str"),
        "value": pd.Series([_value_text(f, v) for f, v in zip(fields, values, strict=True)], dtype="str"),
    })


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------

def _num_text(values: Any, field: str, is_int: bool) -> pa.Array:
    """Numbers as text (shortest round-trip form); NaN -> null.  Floats keep a '.0' like pandas."""
    if is_int:
        return pc.cast(pa.array(values, type=pa.int64(), from_pandas=True), pa.string())
    v = np.asarray(values, dtype=float)
    s = pc.cast(pa.array(v, from_pandas=True), pa.string())
    if field in _INT_STYLE_FLOATS:
        return s
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 1e21)
    return pc.if_else(pa.array(whole), pc.binary_join_element_wise(s, ".0", ""), s)


def _str_arrow(series: pd.Series) -> pa.Array:
    arr = pa.array(series.array) if series.dtype == "str" else pa.array(series.to_numpy(dtype=object),
                                                                         type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.string())


def _column_text(series: pd.Series, field: str) -> tuple[pa.Array, np.ndarray | None]:
    """(text of every value, null for missing; mask of text cells in a numeric column or None)."""
    spec = FIELDS_BY_NAME[field]
    is_int = _column_dtype(spec) == "Int64"
    if series.dtype == "str":
        return _str_arrow(series), None
    if series.dtype == object:  # numbers plus injected non-numeric tokens
        nums = pd.to_numeric(series, errors="coerce")
        is_text = (nums.isna() & series.notna()).to_numpy(dtype=bool)
        values = nums.to_numpy(dtype=float)
        text = _num_text(pd.array(values).astype("Int64") if is_int else values, field, is_int)
        tokens = pa.array(np.where(is_text, series.to_numpy(dtype=object), None), type=pa.string())
        return pc.if_else(pa.array(is_text), tokens, text), is_text
    if is_int:
        return _num_text(series.array, field, True), None
    return _num_text(series.to_numpy(dtype=float), field, False), None


def _concat_lines(parts: list[pa.Array | str]) -> pa.Buffer:
    """The element-wise concatenation of ``parts`` as one buffer (no separator between rows)."""
    joined = pc.binary_join_element_wise(*parts, "")
    if not isinstance(joined, pa.Array):
        joined = pa.array([joined.as_py()], type=pa.string())
    width = np.int64 if pa.types.is_large_string(joined.type) else np.int32
    offsets = np.frombuffer(joined.buffers()[1], dtype=width)[joined.offset: joined.offset + len(joined) + 1]
    data = joined.buffers()[2]
    if data is None or len(offsets) == 0:
        return pa.py_buffer(b"")
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _fix_rare(text: pa.Array, pattern: str, fix: Callable[[str], str]) -> pa.Array:
    needs = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    if not pc.any(needs).as_py():
        return text
    out = text.to_numpy(zero_copy_only=False).astype(object)
    for i in np.flatnonzero(needs.to_numpy(zero_copy_only=False)):
        out[i] = fix(str(out[i]))
    return pa.array(out, type=pa.string())


def _csv_escape(text: pa.Array) -> pa.Array:
    return _fix_rare(text, r'[,"\r\n]', lambda v: '"' + v.replace('"', '""') + '"')


def _json_string(text: pa.Array) -> pa.Array:
    text = _fix_rare(text, r'["\\\x00-\x1f]', lambda v: json.dumps(v)[1:-1])
    return pc.binary_join_element_wise('"', text, '"', "")


_CHUNK = 100_000
_WORKERS = max(1, min(4, os.cpu_count() or 1))


def _parallel(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Arrow kernels release the GIL: format columns / join chunks on every core."""
    if len(items) < 2 or _WORKERS == 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(_WORKERS) as ex:
        return list(ex.map(fn, items))


def _write_chunks(fh: Any, n: int, build: Callable[[int], list[pa.Array | str]]) -> None:
    """Join row chunks on worker threads, a few at a time, and write them in order."""
    starts = list(range(0, n, _CHUNK))
    wave = 2 * _WORKERS
    for w in range(0, len(starts), wave):
        for buf in _parallel(lambda a: _concat_lines(build(a)), starts[w: w + wave]):
            fh.write(buf)


def _write_csv(data: pd.DataFrame, path: Path) -> None:
    def fmt(name: str) -> pa.Array:
        t, mask = _column_text(data[name], name)
        if data[name].dtype == "str" or mask is not None:
            t = _csv_escape(t)
        return pc.fill_null(t, "")

    texts = _parallel(fmt, FIELD_NAMES)

    def build(a: int) -> list[pa.Array | str]:
        part: list[pa.Array | str] = []
        for j, t in enumerate(texts):
            if j:
                part.append(",")
            part.append(t.slice(a, _CHUNK))
        part.append("\n")
        return part

    with open(path, "wb") as fh:
        fh.write((",".join(RAW_HEADER) + "\n").encode())
        _write_chunks(fh, len(data), build)


def _json_values(data: pd.DataFrame) -> list[pa.Array]:
    """Per field, the JSON text of each value.  A numeric column holding an injected non-numeric
    token is written as strings throughout (JSON readers that infer one type per key need it)."""
    def fmt(name: str) -> pa.Array:
        t, text_mask = _column_text(data[name], name)
        if data[name].dtype == "str" or text_mask is not None:
            t = _json_string(t)
        return pc.fill_null(t, "null")

    return _parallel(fmt, FIELD_NAMES)


def _write_json(data: pd.DataFrame, path: Path, ndjson: bool) -> None:
    values = _json_values(data)
    keys = [json.dumps(n) + ":" for n in FIELD_NAMES]
    n = len(data)
    end = "}\n" if ndjson else "},\n"

    def build(a: int) -> list[pa.Array | str]:
        part: list[pa.Array | str] = ["{"]
        for j, (k, v) in enumerate(zip(keys, values, strict=True)):
            part.append(("," if j else "") + k)
            part.append(v.slice(a, _CHUNK))
        part.append(end)
        return part

    with open(path, "wb") as fh:
        if not ndjson:
            fh.write(b"[\n")
        _write_chunks(fh, n, build)
        if not ndjson:
            if n:  # drop the last record's comma
                fh.seek(-2, os.SEEK_END)
                fh.truncate()
                fh.write(b"\n")
            fh.write(b"]\n")


def _write_parquet(data: pd.DataFrame, path: Path) -> None:
    def arrow(name: str) -> pa.Array:
        s = data[name]
        if s.dtype == object:  # an injected non-numeric token: the column is text
            return _column_text(s, name)[0]
        if s.dtype == "str":
            return _str_arrow(s).cast(pa.string())
        if s.dtype == "Int64":
            return pa.array(s.array, type=pa.int64())
        return pa.array(s.to_numpy(dtype=float), from_pandas=True)  # NaN -> null (missing)

    table = pa.Table.from_arrays([arrow(n) for n in FIELD_NAMES], names=FIELD_NAMES)
    pq.write_table(table, path, compression="zstd")


def _xml_escape(text: pa.Array) -> pa.Array:
    def fix(v: str) -> str:
        v = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", v)
        return v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    return _fix_rare(text, r"[&<>\x00-\x08\x0b\x0c\x0e-\x1f]", fix)


_XLSX_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        '</Types>'),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>'),
    "xl/workbook.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
        'Target="worksheets/sheet1.xml"/>'
        '<Relationship Id="rId2" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" '
        'Target="styles.xml"/>'
        '<Relationship Id="rId3" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
        'Target="sharedStrings.xml"/></Relationships>'),
    "xl/styles.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        '</styleSheet>'),
}


def _write_xlsx(data: pd.DataFrame, path: Path) -> None:
    """A minimal SpreadsheetML workbook streamed from vectorised XML: text in a shared-strings table
    (as Excel, LibreOffice, openpyxl and XlsxWriter write it: each distinct text once, cells name it
    by index), numbers as numbers, empty cells omitted.  Much faster than openpyxl; openpyxl and
    calamine read it."""
    n = len(data)
    if n > XLSX_MAX_ROWS:
        raise ValueError(f"XLSX holds at most {XLSX_MAX_ROWS} data rows, not {n}")
    letters = [column_letters(i) for i in range(len(FIELD_NAMES))]
    row_ref = pc.cast(pa.array(np.arange(2, n + 2, dtype=np.int64)), pa.string())

    def texts(j: int) -> tuple[pa.Array, pa.Array | None]:
        """(the column's cell text, null when empty; which cells are text, or None: all, for a text column)."""
        name = FIELD_NAMES[j]
        t, text_mask = _column_text(data[name], name)
        return t, (None if data[name].dtype == "str" else pa.array(text_mask) if text_mask is not None else None)

    columns = _parallel(texts, list(range(len(FIELD_NAMES))))
    text_cells = [t if data[FIELD_NAMES[j]].dtype == "str" else pc.filter(t, mask) if mask is not None else None
                  for j, (t, mask) in enumerate(columns)]
    shared = pc.unique(pa.concat_arrays([c.drop_null() for c in text_cells if c is not None]
                                        or [pa.array([], type=pa.string())]))

    def cell(j: int) -> pa.Array:
        t, mask = columns[j]
        ref = pc.binary_join_element_wise(f'<c r="{letters[j]}', row_ref, "")
        is_str = data[FIELD_NAMES[j]].dtype == "str"
        if is_str or mask is not None:
            index = pc.cast(pc.index_in(t, value_set=shared), pa.string())
            as_text = pc.binary_join_element_wise(ref, '" t="s"><v>', index, "</v></c>", "")
            if is_str:
                return pc.fill_null(as_text, "")
        as_num = pc.binary_join_element_wise(ref, '"><v>', t, "</v></c>", "")
        if mask is not None:
            as_num = pc.if_else(mask, as_text, as_num)
        return pc.fill_null(as_num, "")

    cells = _parallel(cell, list(range(len(FIELD_NAMES))))
    header = "".join(
        f'<c r="{letters[j]}1" t="inlineStr"><is><t>{h}</t></is></c>' for j, h in enumerate(RAW_HEADER))

    def build(a: int) -> list[pa.Array | str]:
        part: list[pa.Array | str] = [pc.binary_join_element_wise('<row r="', row_ref.slice(a, _CHUNK), '">', "")]
        part += [c.slice(a, _CHUNK) for c in cells]
        part.append("</row>")
        return part

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, text in _XLSX_PARTS.items():
            zf.writestr(name, text)
        with zf.open("xl/sharedStrings.xml", "w", force_zip64=True) as fh:
            fh.write(('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                      '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
                      f'count="{sum(len(c) - c.null_count for c in text_cells if c is not None)}" '
                      f'uniqueCount="{len(shared)}">').encode())
            items = pc.binary_join_element_wise('<si><t xml:space="preserve">', _xml_escape(shared), "</t></si>", "")
            for a in range(0, len(items), _CHUNK):
                fh.write(_concat_lines([items.slice(a, _CHUNK)]))
            fh.write(b"</sst>")
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as fh:
            fh.write(('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                      '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                      f'<dimension ref="A1:{letters[-1]}{n + 1}"/><sheetData>'
                      f'<row r="1">{header}</row>').encode())
            _write_chunks(fh, n, build)
            fh.write(b"</sheetData></worksheet>")


def errors_path(path: str | Path) -> Path:
    """Where ``write`` puts the error sidecar of ``path``."""
    return Path(f"{path}.errors.csv")


def write(data: pd.DataFrame, errors: pd.DataFrame, path: str | Path, fmt: str) -> Path:
    """Write ``data`` as csv/xlsx (the real header) or json/ndjson/parquet (canonical names), and the
    errors sidecar ``PATH.errors.csv``.  Returns the data file's path."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if list(data.columns) != FIELD_NAMES:
        raise ValueError("data must have the 75 contract fields in contract order (as generate returns)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[], None]] = {
        "csv": lambda: _write_csv(data, path),
        "xlsx": lambda: _write_xlsx(data, path),
        "json": lambda: _write_json(data, path, ndjson=False),
        "ndjson": lambda: _write_json(data, path, ndjson=True),
        "parquet": lambda: _write_parquet(data, path),
    }
    writers[fmt]()
    side = errors.reindex(columns=ERROR_COLUMNS)
    side.to_csv(errors_path(path), index=False)
    return path


__all__ = [
    "ERROR_COLUMNS",
    "FORMATS",
    "PROFILE_PATH",
    "RULES",
    "errors_path",
    "fit_profile",
    "generate",
    "load_profile",
    "save_profile",
    "write",
]
