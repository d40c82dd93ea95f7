"""Leak-free features, shared by training and serving: the fitted transformer is saved inside the
model, so serving cannot drift from training.

Only fields whose contract role is ``feature`` or ``location`` may enter.  Money, derived, label,
identifier and metadata fields are refused (``assert_leak_free``): the label is an exact sum of
the money columns, which is how public solutions reach a meaningless 95-99% accuracy.  The one
exception is the collection dates in ``TEMPORAL_INPUTS``: they are read only to derive the
temporal features (month, season, time since the previous survey), never passed on as such.

Speed: ``SurveyFeatures.transform`` works on whole columns with numpy (text columns are factorised
once, so the per-value work runs over the few distinct values), and ``FastColumnTransformer`` is
a ``ColumnTransformer`` whose ``transform`` reads the fitted state of the sklearn parts (imputer,
scaler, one-hot and target encoders) and computes the same numbers in a few array passes.  Fitting,
including ``TargetEncoder``'s out-of-fold ``fit_transform``, is sklearn's own, unchanged.

Output names (``get_feature_names_out()`` of the preprocessor) are sklearn's defaults with
``verbose_feature_names_out=False``; ``feature_sources`` maps each back to the field it came from.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted

from rtv import contract

LOW_CARDINALITY = ("district",)
HIGH_CARDINALITY = ("cluster", "village")
WASH_FLAGS = ("latrine_constructed", "tippy_tap_available", "soap_ash_available", "standard_hangline",
              "kitchen_house", "bathroom_constructed", "swept_compound", "dish_rack_present", "non_bio_waste_mgt_present")
FARMING_FLAGS = ("perennial_cropping", "apply_liquid_manure", "soil_management", "postharvest_food_storage",
                 "water_control_practise")
# Durable assets the survey asks about (the asset values are money: never inputs): owns a radio, a
# phone.  The index is the share of them owned, of those answered.
ASSET_FIELDS = ("radios_owned", "phones_owned")

# Collection dates: metadata, not contract features.  Read (when present) only to derive TEMPORAL_FEATURES.
TEMPORAL_INPUTS = ("collected_at", "previous_collected_at")
# collected_month_sin/cos: the month as an angle 2*pi*month/12 (December sits next to January);
# rainy_season: 1.0 in RAINY_MONTHS, else 0.0; days_since_previous_survey: fractional days, left as
# is even if negative (a "previous" survey dated later is a data problem to surface, not to hide).
# All NaN when the date(s) they need are missing.
TEMPORAL_FEATURES = ("collected_month_sin", "collected_month_cos", "rainy_season", "days_since_previous_survey")
RAINY_MONTHS = (3, 4, 5, 9, 10, 11)  # Uganda's two rainy seasons: March-May and September-November
LOCAL_UTC_OFFSET = pd.Timedelta(hours=3)  # months are taken in East Africa Time (UTC+3, no daylight saving)
# Every feature computed from other columns (not a contract field): its own source in feature_sources.
DERIVED_FEATURES = ("land_per_member", "crop_diversity", "wash_index", "farming_index", "uses_fertilizer",
                    "asset_index", *TEMPORAL_FEATURES)
MISSING_INDICATOR_PREFIX = "missingindicator_"
# The survey fields each derived feature is computed from (the dates behind the temporal ones are
# metadata, not survey fields): what a shift of the derived feature is a shift of.
DERIVED_INPUTS: dict[str, tuple[str, ...]] = {
    "land_per_member": ("agriculture_land", "household_size"),
    "crop_diversity": ("season1_crops_planted", "season2_crops_planted", "perennial_crops_grown"),
    "wash_index": WASH_FLAGS,
    "farming_index": FARMING_FLAGS,
    "uses_fertilizer": ("household_fertilizer",),
    "asset_index": ASSET_FIELDS,
    **{name: () for name in TEMPORAL_FEATURES},
}


def survey_fields_behind(sources: Sequence[str]) -> list[str]:
    """The survey fields behind feature sources, in their order, each once: a field as itself, a
    derived feature as the fields it is computed from (none for one computed from dates)."""
    out: list[str] = []
    for name in sources:
        for field in DERIVED_INPUTS.get(name, (name,)):
            if field not in out:
                out.append(field)
    return out

NAT = np.iinfo(np.int64).min  # NaT as an int64
_MONTH = np.arange(13, dtype=np.float64)  # index 1..12 is the calendar month
MONTH_SIN = np.sin(2 * np.pi * _MONTH / 12)
MONTH_COS = np.cos(2 * np.pi * _MONTH / 12)
RAINY = np.isin(np.arange(13), RAINY_MONTHS).astype(np.float64)


class LeakageError(ValueError):
    """A field that is the label, or computes it, was offered to a model."""


def assert_leak_free(columns: Iterable[str], roles: dict[str, str] | None = None) -> None:
    """Refuse any input column whose contract role is not an allowed model input (the collection
    dates in TEMPORAL_INPUTS excepted: only month, season and elapsed days are derived from them)."""
    roles = roles or {f.name: f.role for f in contract.ALL_FIELDS}
    bad = sorted(c for c in columns if c not in TEMPORAL_INPUTS and roles.get(c) not in contract.MODEL_INPUT_ROLES)
    if bad:
        raise LeakageError(f"fields not allowed as model inputs (role not feature/location): {', '.join(bad)}")


def input_fields(specs: Sequence[contract.FieldSpec] = contract.SURVEY_FIELDS) -> list[str]:
    """Every contract field a model may read."""
    return [f.name for f in specs if f.role in contract.MODEL_INPUT_ROLES]


def feature_sources(names: Sequence[str]) -> list[str]:
    """The source of each transformed column name: the contract field it was computed from, or, for a
    derived feature (``land_per_member``, ``rainy_season``, ...), the derived feature's own name.

    Names are those of ``get_feature_names_out()``: ``household_size``,
    ``missingindicator_household_size``, ``district_Kanungu``, ``loan_from_97``, ``loan_from_missing``,
    ``village`` (``village_<class>`` for a multi-class target encoding), ``land_per_member``.
    """
    fields = set(contract.FIELDS_BY_NAME)
    # Longest prefix first: a field whose name extends another's must win ("x_y_1" -> "x_y", not "x").
    prefixed = sorted((f for f in fields if contract.FIELDS_BY_NAME[f].role in contract.MODEL_INPUT_ROLES),
                      key=len, reverse=True)
    sources = []
    for name in names:
        base = name[len(MISSING_INDICATOR_PREFIX):] if name.startswith(MISSING_INDICATOR_PREFIX) else name
        if base in DERIVED_FEATURES or base in fields:
            sources.append(base)
            continue
        match = next((f for f in prefixed if base.startswith(f + "_")), None)
        if match is None:
            raise ValueError(f"transformed column {name!r} has no known source field")
        sources.append(match)
    return sources


@dataclass(frozen=True)
class _Layout:
    """Where each output column of SurveyFeatures comes from, for one list of fields."""

    categorical: tuple[str, ...]
    numeric: tuple[tuple[str, int, tuple[float, ...]], ...]  # (field, row in the numeric block, sentinels)
    multiselect: tuple[tuple[str, int, tuple[str, ...]], ...]  # (field, first row, codes as text)
    numeric_names: tuple[str, ...]  # rows of the numeric block, in output order
    columns: tuple[str, ...]  # every output column, in order
    position: dict[str, int]  # numeric name -> its row in the block


@functools.lru_cache(maxsize=32)
def _layout(fields: tuple[str, ...], assets: bool = True) -> _Layout:
    """``assets``: whether the asset index is among the derived features (False for a pipeline fitted
    before it existed, whose estimator knows one column fewer)."""
    specs = contract.FIELDS_BY_NAME
    order: list[str] = []
    numeric_names: list[str] = []
    categorical: list[str] = []
    numeric: list[tuple[str, int, tuple[float, ...]]] = []
    multiselect: list[tuple[str, int, tuple[str, ...]]] = []
    for name in fields:
        if name in TEMPORAL_INPUTS:
            continue
        spec = specs[name]
        if name in LOW_CARDINALITY or name in HIGH_CARDINALITY:
            categorical.append(name)
            order.append(name)
        elif spec.type == "multiselect":
            names = [f"{name}_{code}" for code in spec.allowed] + [f"{name}_missing"]
            multiselect.append((name, len(numeric_names), tuple(f"{code}" for code in spec.allowed)))
            numeric_names += names
            order += names
        elif spec.type in ("integer", "decimal", "code"):
            numeric.append((name, len(numeric_names), tuple(float(s) for s in spec.sentinels)))
            numeric_names.append(name)
            order.append(name)
    derived: list[str] = []
    if "household_size" in numeric_names:
        if "agriculture_land" in numeric_names:
            derived.append("land_per_member")
        derived.append("crop_diversity")
    if any(c in numeric_names for c in WASH_FLAGS):
        derived.append("wash_index")
    if any(c in numeric_names for c in FARMING_FLAGS):
        derived.append("farming_index")
    if "household_fertilizer" in numeric_names:
        derived.append("uses_fertilizer")
    if assets and any(c in numeric_names for c in ASSET_FIELDS):
        derived.append("asset_index")
    derived += TEMPORAL_FEATURES
    numeric_names += derived
    order += derived
    return _Layout(tuple(categorical), tuple(numeric), tuple(multiselect), tuple(numeric_names), tuple(order),
                   {name: i for i, name in enumerate(numeric_names)})


_FACTORISE_SAFE = {"string", "empty", "integer", "boolean"}


def _factorise(col: pd.Series) -> tuple[np.ndarray, pd.Series] | None:
    """Codes (-1: missing) and the distinct values, when distinct values cannot collide (1 == 1.0 == True
    would, yet their text differs).  None: the column must be handled value by value."""
    kind = col.dtype.kind
    if kind == "O":
        if pd.api.types.infer_dtype(col, skipna=True) not in _FACTORISE_SAFE:
            return None
    elif not (pd.api.types.is_string_dtype(col.dtype) or kind in "iub"):
        return None
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.intp), pd.Series(uniques)


def _as_text(values: pd.Series, missing: str) -> list[str]:
    """Exactly ``values.astype(object).where(values.notna(), missing).astype(str)``, as a list."""
    return values.astype(object).where(values.notna(), missing).astype(str).tolist()


def _plain_texts(items: list[Any], missing: str) -> list[str] | None:
    """``_as_text`` for the usual values (str, int, missing) without pandas; None for anything else."""
    texts = []
    for v in items:
        kind = type(v)
        if kind is str:
            texts.append(v)
        elif kind is int:
            texts.append(str(v))
        elif v is None or v is pd.NA or (kind is float and v != v):
            texts.append(missing)
        else:
            return None
    return texts


SMALL_BATCH = 64  # rows: below this, text values are converted one by one rather than factorised first


def _text_column(col: pd.Series, missing: str) -> tuple[np.ndarray, list[str]]:
    """(codes, texts): row i's text is texts[codes[i]]; missing values read as ``missing``."""
    if len(col) <= SMALL_BATCH:
        texts = _plain_texts(col.tolist(), missing)
        if texts is None:
            texts = _as_text(col, missing)
        return np.arange(len(texts), dtype=np.intp), texts
    found = _factorise(col)
    if found is None:
        texts = _as_text(col, missing)
        return np.arange(len(texts), dtype=np.intp), texts
    codes, uniques = found
    texts = _plain_texts(uniques.tolist(), missing) or _as_text(uniques, missing)
    texts.append(missing)  # code -1 picks the last entry
    return codes, texts


def _numeric_column(col: pd.Series) -> np.ndarray:
    """Exactly ``pd.to_numeric(col, errors="coerce").astype("float64")``, as an array."""
    kind = col.dtype.kind
    if kind in "iufb":
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    if len(col) > SMALL_BATCH and pd.api.types.is_string_dtype(col.dtype):
        found = _factorise(col)
        if found is not None:
            codes, uniques = found
            values = pd.to_numeric(uniques, errors="coerce").astype("float64").to_numpy()
            return np.append(values, np.nan)[codes]
    return pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()


class _Columns:
    """Column access on the input frame.  For a few rows (a household scored by the API) the frame is
    read once as one object array: a pandas lookup costs about 15 us a column, 75 columns a call.
    Only plain values are taken from it (numbers and text, as ``_numeric_column`` and ``_text_column``
    would read them); any other column is read through pandas exactly as before."""

    def __init__(self, X: pd.DataFrame) -> None:
        self.X = X
        self.small = len(X) <= SMALL_BATCH
        if self.small:
            self.values = X.to_numpy(dtype=object)
            self.where = {name: i for i, name in enumerate(X.columns)}
            self.kinds = [dtype.kind for dtype in X.dtypes]

    def __contains__(self, name: str) -> bool:
        return name in self.X

    def numeric(self, name: str) -> np.ndarray:
        if self.small and name in self.where and self.kinds[self.where[name]] in "iufb":
            out = _plain_floats(self.values[:, self.where[name]].tolist())
            if out is not None:
                return out
        return _numeric_column(self.X[name])

    def text(self, name: str, missing: str) -> tuple[np.ndarray, list[str]]:
        if self.small and name in self.where:
            texts = _plain_texts(self.values[:, self.where[name]].tolist(), missing)
            if texts is not None:
                return np.arange(len(texts), dtype=np.intp), texts
        return _text_column(self.X[name], missing)


def _plain_floats(items: list[Any]) -> np.ndarray | None:
    """What ``to_numpy(float64, na_value=nan)`` gives a numeric column, for plain Python values."""
    out = np.empty(len(items))
    for i, v in enumerate(items):
        kind = type(v)
        if kind is float or kind is int or kind is bool:
            out[i] = v
        elif v is None or v is pd.NA:
            out[i] = np.nan
        else:
            return None
    return out


def _epoch_ns(X: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """UTC nanoseconds since the epoch and a missing mask; None when the column is absent."""
    if name not in X:
        return None
    column = X[name]
    if isinstance(column.dtype, pd.DatetimeTZDtype) or (isinstance(column.dtype, np.dtype) and column.dtype.kind == "M"):
        # Already dates (stored records, a validated payload): nothing to parse; naive reads as UTC.
        ns = np.array(pd.DatetimeIndex(column).as_unit("ns").asi8, dtype=np.int64)
        return ns, ns == NAT
    if len(column) <= SMALL_BATCH and all(v is None or v is pd.NaT or v is pd.NA or (type(v) is float and v != v)
                                          for v in column.tolist()):
        return np.full(len(column), NAT, dtype=np.int64), np.ones(len(column), dtype=bool)  # no date at all
    # ISO 8601 in any of its spellings (with or without seconds, fractions, offset); naive reads as UTC.
    when = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
    missing = when.isna().to_numpy()
    ns = when.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").view(np.int64)
    return ns, missing


def survey_months(X: pd.DataFrame) -> pd.Series:
    """The calendar month (1-12, East Africa Time) each row was surveyed in; missing without a date.
    What the month features are computed from, so a reason can name the month itself."""
    current = _epoch_ns(X, "collected_at")
    if current is None:
        return pd.Series(pd.array([None] * len(X), dtype="Int64"))
    ns, missing = current
    local = np.where(missing, 0, ns) + LOCAL_UTC_OFFSET.value
    month = local.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64) % 12 + 1
    return pd.Series(pd.array(month, dtype="Int64")).mask(missing)


def _temporal(X: pd.DataFrame, block: np.ndarray, start: int) -> None:
    """Fill the four TEMPORAL_FEATURES rows of the block from the optional collection dates."""
    rows = block[start:start + len(TEMPORAL_FEATURES)]
    rows.fill(np.nan)
    current = _epoch_ns(X, "collected_at")
    if current is None:
        return
    ns, missing = current
    local = np.where(missing, 0, ns) + LOCAL_UTC_OFFSET.value  # East Africa Time, in nanoseconds
    month = (local.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(np.intp)
    month[missing] = 0
    rows[0] = MONTH_SIN[month]
    rows[1] = MONTH_COS[month]
    rows[2] = RAINY[month]
    rows[0:3, missing] = np.nan
    previous = _epoch_ns(X, "previous_collected_at")
    if previous is not None:
        pns, pmissing = previous
        days = (ns - pns).astype(np.float64) / 86_400e9
        days[missing | pmissing] = np.nan
        rows[3] = days


def _nan_sum(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise (over the first axis) sum skipping NaN, and the count of values present."""
    present = ~np.isnan(rows)
    total = np.zeros(rows.shape[1])
    for row, ok in zip(rows, present, strict=True):
        total += np.where(ok, row, 0.0)
    return total, present.sum(axis=0)


class FeatureArrays:
    """``SurveyFeatures``' output as arrays: the numeric block (one contiguous row per column) and the
    categorical columns.  Read like a frame where the scoring code needs single columns
    (``name in arrays``, ``arrays[name]`` is a Series); ``frame()`` builds the DataFrame."""

    def __init__(self, block: np.ndarray, layout: _Layout, categorical: dict[str, np.ndarray], index: pd.Index) -> None:
        self.block, self.layout, self.categorical, self.index = block, layout, categorical, index
        self.columns = layout.columns

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, name: object) -> bool:
        return name in self.layout.position or name in self.categorical

    def __getitem__(self, name: str) -> pd.Series:
        if name in self.categorical:
            return pd.Series(self.categorical[name], index=self.index, name=name, dtype=object)
        return pd.Series(self.block[self.layout.position[name]], index=self.index, name=name)

    def column(self, name: str) -> np.ndarray:
        """One column as an array (a view of the block for numeric columns)."""
        if name in self.categorical:
            return self.categorical[name]
        return self.block[self.layout.position[name]]

    def frame(self) -> pd.DataFrame:
        numeric = pd.DataFrame(self.block.T, index=self.index, columns=list(self.layout.numeric_names), copy=False)
        if not self.categorical:
            return numeric
        frame = pd.concat([pd.DataFrame(self.categorical, index=self.index, dtype=object), numeric], axis=1)
        columns = list(self.columns)
        return frame if list(frame.columns) == columns else frame[columns]


class SurveyFeatures(TransformerMixin, BaseEstimator):
    """Raw typed survey values -> numeric features plus the categorical columns.

    Sentinels become missing, text counts become numbers, multi-select codes become indicator
    columns, and a few ratios and indices are derived; so are month, season and days since the
    previous survey from the optional ``collected_at`` / ``previous_collected_at`` columns (all
    missing when absent, so training and serving always have the same columns).  Stateless: safe
    to share by design.
    """

    def __init__(self, fields: Sequence[str] | None = None) -> None:
        self.fields = fields

    def fit(self, X: pd.DataFrame, y: Any = None) -> SurveyFeatures:
        self.fields_ = list(self.fields) if self.fields is not None else input_fields()
        assert_leak_free(self.fields_)
        self.assets_ = True  # the asset index is one of its features (absent: fitted before it was)
        return self

    def _own_layout(self) -> _Layout:
        return _layout(tuple(self.fields_), getattr(self, "assets_", False))

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.arrays(X).frame()

    def arrays(self, X: pd.DataFrame) -> FeatureArrays:
        """``transform``'s output before it becomes a DataFrame: what serving hands straight to
        ``FastColumnTransformer`` (the same numbers; ``.frame()`` is ``transform(X)``)."""
        check_is_fitted(self, "fields_")
        layout = self._own_layout()
        index = X.index
        n = len(index)
        columns = _Columns(X)
        # One row per numeric output column: each is written once, contiguously.
        block = np.empty((len(layout.numeric_names), n))
        position = layout.position
        for name, row, sentinels in layout.numeric:
            if name not in columns:
                block[row] = np.nan
                continue
            block[row] = columns.numeric(name)
            if sentinels:
                block[row, np.isin(block[row], sentinels)] = np.nan
        for name, start, codes in layout.multiselect:
            if name in columns:
                row_codes, texts = columns.text(name, "")
            else:
                row_codes, texts = np.full(n, -1, dtype=np.intp), [""]
            # Each distinct text is split once: a code is present when it is one of the whitespace-separated tokens.
            table = np.zeros((len(texts), len(codes) + 1))
            for i, text in enumerate(texts):
                tokens = set(text.split())
                table[i, :-1] = [code in tokens for code in codes]
                table[i, -1] = text == ""
            for j in range(len(codes) + 1):
                block[start + j] = table[:, j][row_codes]
        categorical: dict[str, np.ndarray] = {}
        for name in layout.categorical:
            if name in columns:
                row_codes, texts = columns.text(name, "missing")
                categorical[name] = np.asarray(texts, dtype=object)[row_codes]
            else:
                categorical[name] = np.full(n, "missing", dtype=object)
        self._derive(block, position)
        _temporal(X, block, position[TEMPORAL_FEATURES[0]])
        return FeatureArrays(block, layout, categorical, index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The output columns of ``transform``, in order."""
        check_is_fitted(self, "fields_")
        return np.asarray(self._own_layout().columns, dtype=object)

    @staticmethod
    def _derive(block: np.ndarray, position: dict[str, int]) -> None:
        """Derived indices: fewer, steadier signals than their many 0/1 parts."""
        def row(name: str) -> np.ndarray:
            return block[position[name]]

        if "land_per_member" in position:
            row("land_per_member")[:] = row("agriculture_land") / np.maximum(row("household_size"), 1)
        if "crop_diversity" in position:
            crops = [position[c] for c in ("season1_crops_planted", "season2_crops_planted", "perennial_crops_grown")
                     if c in position]
            total, count = _nan_sum(block[crops])
            row("crop_diversity")[:] = np.where(count >= 1, total, np.nan)
        for index, flags in (("wash_index", WASH_FLAGS), ("farming_index", FARMING_FLAGS)):
            if index in position:
                total, count = _nan_sum(block[[position[c] for c in flags if c in position]])
                with np.errstate(invalid="ignore", divide="ignore"):
                    row(index)[:] = total / count
        if "uses_fertilizer" in position:
            row("uses_fertilizer")[:] = np.isin(row("household_fertilizer"), (1, 2, 3))
        if "asset_index" in position:
            owned = block[[position[c] for c in ASSET_FIELDS if c in position]]
            with np.errstate(invalid="ignore"):
                total, count = _nan_sum(np.where(np.isnan(owned), np.nan, owned > 0))
                row("asset_index")[:] = np.where(count >= 1, total / np.maximum(count, 1), np.nan)


def _column(X: pd.DataFrame | FeatureArrays, name: str) -> np.ndarray:
    return X.column(name) if isinstance(X, FeatureArrays) else X[name].to_numpy(dtype=object)


def _category_index(column: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Position of each value among the fitted categories; -1 when unknown (or missing).

    The column is factorised first, so the categories are looked up once per distinct value; a few
    plain text values are looked up one by one (what ``Index.get_indexer`` does for text)."""
    if len(column) <= SMALL_BATCH and all(type(v) is str for v in column):
        lookup = _category_lookup(categories)
        return np.fromiter((lookup.get(v, -1) for v in column), dtype=np.intp, count=len(column))
    codes, uniques = pd.factorize(np.asarray(column, dtype=object), use_na_sentinel=True)
    found = pd.Index(categories, dtype=object).get_indexer(pd.Index(uniques, dtype=object))
    return np.append(found, -1)[codes]


_LOOKUPS: dict[int, tuple[np.ndarray, dict[str, int]]] = {}


def _category_lookup(categories: np.ndarray) -> dict[str, int]:
    """Category -> position, built once per fitted category array (kept alive with it, by identity)."""
    held = _LOOKUPS.get(id(categories))
    if held is None or held[0] is not categories:
        if len(_LOOKUPS) >= 256:  # models come and go in a long-lived worker: start over
            _LOOKUPS.clear()
        lookup: dict[str, int] = {}
        for i, c in enumerate(categories.tolist()):
            lookup.setdefault(c, i)  # the first position, as get_indexer on unique categories
        held = _LOOKUPS[id(categories)] = (categories, lookup)
    return held[1]


def _plain_categories(categories: np.ndarray) -> bool:
    return bool(categories.dtype == object and not pd.isna(categories).any())


class FastColumnTransformer(ColumnTransformer):
    """``ColumnTransformer`` with the same fit (sklearn's) and a fast ``transform``.

    For the layout ``build_preprocessor`` makes (median imputer with indicators, optional standard
    scaler, one-hot encoder ignoring unknowns, target encoder), ``transform`` reads the fitted
    statistics, categories and encodings and writes the same numbers straight into one output
    array, without the per-transformer validation, copies and stacking.  The array is returned in
    column-major order (each output column contiguous); values are identical.  Any other
    configuration (or a non-DataFrame input, or pandas output) goes through
    ``ColumnTransformer.transform`` unchanged.
    """

    def transform(self, X: Any, **params: Any) -> Any:
        out = None if params else self._fast_transform(X)
        if out is None and isinstance(X, FeatureArrays):
            X = X.frame()
            out = None if params else self._fast_transform(X)
        return super().transform(X, **params) if out is None else out

    def _fast_transform(self, X: Any) -> np.ndarray | None:
        if not hasattr(self, "transformers_"):  # what check_is_fitted looks for, without its scan of vars()
            check_is_fitted(self)
        arrays = isinstance(X, FeatureArrays)
        if not (arrays or isinstance(X, pd.DataFrame)) or not hasattr(self, "feature_names_in_") or self.sparse_output_:
            return None
        if _get_output_config("transform", self)["dense"] != "default":
            return None
        parts: list[tuple[Any, list[str], int]] = []
        width = 0
        for _name, trans, columns in self.transformers_:
            if isinstance(trans, str):
                if trans != "drop":
                    return None
                continue
            columns = [columns] if isinstance(columns, str) else list(columns)
            if not columns:
                continue
            if not all(isinstance(c, str) and c in X for c in columns):
                return None
            size = self._width(trans)
            if size is None:
                return None
            parts.append((trans, columns, size))
            width += size
        if not parts:
            return None
        out = np.empty((width, len(X)))  # one row per output column; returned transposed
        row = 0
        for trans, columns, size in parts:
            if not self._fill(trans, X, columns, out[row:row + size]):
                return None
            row += size
        return out.T

    @staticmethod
    def _numeric_steps(trans: Any) -> tuple[SimpleImputer, StandardScaler | None] | None:
        steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
        imputer, scaler = steps[0], steps[1] if len(steps) == 2 else None
        if (type(imputer) is not SimpleImputer or len(steps) > 2 or not imputer.keep_empty_features
                or not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values))):
            return None
        if scaler is not None and type(scaler) is not StandardScaler:
            return None
        return imputer, scaler

    @classmethod
    def _width(cls, trans: Any) -> int | None:
        """How many output columns the fitted transformer makes; None if the fast path cannot do it."""
        numeric = cls._numeric_steps(trans)
        if numeric is not None:
            imputer = numeric[0]
            indicators = len(imputer.indicator_.features_) if imputer.add_indicator else 0
            return len(imputer.statistics_) + indicators
        if type(trans) is OneHotEncoder:
            if (trans.handle_unknown != "ignore" or trans.drop_idx_ is not None or trans.sparse_output
                    or trans._infrequent_enabled or np.dtype(trans.dtype) != np.float64
                    or not all(_plain_categories(c) for c in trans.categories_)):
                return None
            return sum(len(c) for c in trans.categories_)
        if type(trans) is TargetEncoder:
            if not all(_plain_categories(c) for c in trans.categories_):
                return None
            return len(trans.encodings_)
        return None

    @classmethod
    def _fill(cls, trans: Any, X: pd.DataFrame, columns: list[str], out: np.ndarray) -> bool:
        """Write the transformer's output columns into the rows of ``out``; False: use sklearn."""
        numeric = cls._numeric_steps(trans)
        if numeric is not None:
            imputer, scaler = numeric
            k = len(columns)
            values = out[:k]
            if isinstance(X, FeatureArrays):  # numeric rows of one block: one gather
                if not all(c in X.layout.position for c in columns):
                    return False
                # mode="clip" (the positions are valid): "raise", the default, gathers into a buffer
                # then copies it, three times slower.
                np.take(X.block, [X.layout.position[c] for c in columns], axis=0, out=values, mode="clip")
            elif out.shape[1] <= SMALL_BATCH:  # a few rows: one selection beats a column-by-column copy
                selected = X[columns]
                if not (selected.dtypes == np.float64).all():
                    return False
                values[:] = selected.to_numpy(dtype=np.float64).T
            else:
                for i, column in enumerate(columns):
                    array = X[column].to_numpy()
                    if array.dtype != np.float64:
                        return False
                    values[i] = array
            statistics = imputer.statistics_.astype(np.float64)
            if out.shape[1] <= SMALL_BATCH:  # a few rows: whole-block operations, not a call per feature
                if np.isinf(values).any():
                    return False  # sklearn refuses infinity: let it say so
                missing = np.isnan(values)
                if imputer.add_indicator:
                    out[k:k + len(imputer.indicator_.features_)] = missing[np.asarray(imputer.indicator_.features_,
                                                                                       dtype=np.intp)]
                np.copyto(values, statistics[:, None], where=missing)
            else:
                indicator = dict.fromkeys(range(k), -1)
                if imputer.add_indicator:
                    indicator.update({int(f): k + j for j, f in enumerate(imputer.indicator_.features_)})
                # Feature by feature: the temporary masks stay small (and in cache) however many rows.
                for i in range(k):
                    row = values[i]
                    missing = np.isnan(row)
                    if np.isinf(row).any():
                        return False  # sklearn refuses infinity: let it say so
                    if indicator[i] >= 0:
                        out[indicator[i]] = missing
                    np.copyto(row, statistics[i], where=missing)
            if scaler is not None:
                if scaler.with_mean:
                    out -= scaler.mean_[:, None]
                if scaler.with_std:
                    out /= scaler.scale_[:, None]
            return True
        if type(trans) is OneHotEncoder:
            out.fill(0.0)
            offset = 0
            for column, categories in zip(columns, trans.categories_, strict=True):
                index = _category_index(_column(X, column), categories)
                known = np.flatnonzero(index >= 0)
                out[offset + index[known], known] = 1.0
                offset += len(categories)
            return True
        if type(trans) is TargetEncoder:
            n_classes = len(trans.classes_) if trans.target_type_ == "multiclass" else 1
            means = np.atleast_1d(np.asarray(trans.target_mean_, dtype=np.float64))
            for f, (column, categories) in enumerate(zip(columns, trans.categories_, strict=True)):
                index = _category_index(_column(X, column), categories)
                unknown = index < 0
                for c in range(n_classes):
                    encoding = trans.encodings_[f * n_classes + c]
                    out[f * n_classes + c] = np.where(unknown, means[c], encoding[index])
            return True
        return False


def build_preprocessor(feature_frame: pd.DataFrame, *, scale: bool = True) -> ColumnTransformer:
    low = [c for c in LOW_CARDINALITY if c in feature_frame]
    high = [c for c in HIGH_CARDINALITY if c in feature_frame]
    numeric = [c for c in feature_frame.columns if c not in low and c not in high]
    numeric_steps: list[Any] = [SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)]
    if scale:
        numeric_steps.append(StandardScaler())
    transformers: list[tuple[str, Any, list[str]]] = [("num", make_pipeline(*numeric_steps), numeric)]
    if low:
        transformers.append(("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), low))
    if high:
        # Out-of-fold target encoding: TargetEncoder.fit_transform cross-fits internally.
        transformers.append(("target", TargetEncoder(target_type="binary", cv=KFold(5, shuffle=True, random_state=0)), high))
    return FastColumnTransformer(transformers, verbose_feature_names_out=False)


def build_model_pipeline(estimator: Any, sample: pd.DataFrame, *, scale: bool = True,
                         fields: Sequence[str] | None = None) -> Pipeline:
    features = SurveyFeatures(fields)
    frame = features.fit_transform(sample)
    return Pipeline([("features", SurveyFeatures(fields)), ("pre", build_preprocessor(frame, scale=scale)),
                     ("model", estimator)])
