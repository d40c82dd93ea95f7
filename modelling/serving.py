"""Serving: which model answers a household, the per-process model cache, and the one write path
for predictions (real-time API, device submissions and the batch job all store through
``predictions_write``).

Models are loaded once per process per resolved version (``registry.load_model``); what an alias
points to is trusted for ``RTV_MODEL_ALIAS_TTL`` seconds (30 by default), so promoting or rolling
back takes effect in every worker within a minute, without a restart.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from ingestion.models import SURVEY_VALUE_FIELDS, SurveyRecord, SurveyValues
from rtv.bulk import copy_frame, references_lock

from . import registry
from .models import Experiment, ModelVersion, Prediction
from .scoring import Scores, reason

T = TypeVar("T")
BUCKETS = 10_000
TEMPORAL = ("collected_at", "previous_collected_at")
SMALL_BATCH = 32  # rows: at most a request's worth, handled in plain Python rather than by frame operations
NAT = np.iinfo(np.int64).min  # NaT as an int64


class NoChampion(RuntimeError):
    """Nothing to answer with: no model has been promoted yet."""


# ---- the per-process cache ---------------------------------------------------------------------
_cache: dict[str, tuple[float, Any]] = {}


def _cached(key: str, load: Callable[[], T]) -> T:
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < settings.RTV_MODEL_ALIAS_TTL:
        return hit[1]  # type: ignore[no-any-return]
    value = load()
    _cache[key] = (now, value)
    return value


def forget() -> None:
    """Drop cached alias resolutions and experiments (this process only; others expire by TTL)."""
    _cache.clear()


def _resolve_champion() -> ModelVersion | None:
    name = settings.RTV_MODEL_NAME
    if not ModelVersion.objects.filter(name=name).exists():
        return None
    version = registry.alias_version(name, registry.CHAMPION)
    return None if version is None else ModelVersion.objects.filter(name=name, version=version).first()


def champion(*, fresh: bool = False) -> ModelVersion | None:
    """The champion, as this process last resolved it (within the cache's TTL); ``fresh``: asked of
    the registry now (what a decision that outlives the request, like starting an experiment, needs)."""
    return _resolve_champion() if fresh else _cached("champion", _resolve_champion)


def active_experiment() -> Experiment | None:
    return _cached("experiment", lambda: Experiment.objects.filter(active=True)
                   .select_related("champion", "challenger").first())


def model_for(mv: ModelVersion) -> Any:
    return registry.load_model(mv.name, mv.version)


# ---- assignment ------------------------------------------------------------------------------------
def bucket_of(experiment: str, household_id: str) -> int:
    """Sticky and reproducible in every process (Python's ``hash()`` is salted: never use it here)."""
    digest = hashlib.sha256(f"{experiment}:{household_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass
class Plan:
    """Who answers each row, and who scores it in the shadow."""

    answer: list[ModelVersion]
    variant: list[str]
    bucket: list[int | None]
    experiment: Experiment | None
    shadow: ModelVersion | None  # scores every row with a household id, answers none


def plan(household_ids: Sequence[str | None]) -> Plan:
    exp = active_experiment()
    champ = exp.champion if exp is not None else champion()
    if champ is None:
        raise NoChampion("no model has been promoted to champion yet")
    n = len(household_ids)
    if exp is None:
        return Plan([champ] * n, [Prediction.Variant.CHAMPION] * n, [None] * n, None, None)
    buckets = [None if not h else bucket_of(exp.name, str(h)) for h in household_ids]
    cut = round(exp.traffic_share * BUCKETS)
    answer, variant = [], []
    for b in buckets:
        to_challenger = not exp.shadow and b is not None and b < cut
        answer.append(exp.challenger if to_challenger else exp.champion)
        variant.append(Prediction.Variant.CHALLENGER if to_challenger else Prediction.Variant.CHAMPION)
    return Plan(answer, variant, buckets, exp, exp.challenger if exp.shadow else None)


# ---- frames ------------------------------------------------------------------------------------------
def with_previous_survey(frame: pd.DataFrame, household_pks: np.ndarray,
                         history: list[tuple[int, Any]] | None = None) -> pd.DataFrame:
    """Add ``previous_collected_at``: the latest date, strictly before the row's own, among the
    household's current surveys (one query, none when ``history`` is given: its current surveys'
    (household pk, collected_at)).  A stored record gets the survey before it; an unsaved payload
    (the prediction API) gets the household's latest survey before its date, as its stored twin
    would once saved."""
    when = (pd.to_datetime(frame["collected_at"], utc=True) if "collected_at" in frame
            else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]"))
    n = len(frame)
    previous = np.full(n, NAT, dtype=np.int64)
    known = when.notna().to_numpy()
    if known.any():
        rows = history if history is not None else list(
            SurveyRecord.objects.filter(household_id__in=set(household_pks[known].tolist()), superseded_by__isnull=True,
                                        collected_at__isnull=False).values_list("household_id", "collected_at"))
        if rows:
            ns = np.asarray(pd.DatetimeIndex(when).as_unit("ns").asi8, dtype=np.int64)
            previous = _previous_dates(rows, household_pks, ns, known)
    return frame.assign(collected_at=when, previous_collected_at=pd.Series(
        pd.DatetimeIndex(previous.view("datetime64[ns]"), tz="UTC"), index=frame.index))


def household_history(household_id: str) -> list[tuple[int, Any]]:
    """``with_previous_survey``'s history for one household, by its public id (one query)."""
    return list(SurveyRecord.objects.filter(household__household_id=household_id, superseded_by__isnull=True,
                                            collected_at__isnull=False).values_list("household_id", "collected_at"))


def _previous_dates(history: list[tuple[int, Any]], households: np.ndarray, ns: np.ndarray,
                    known: np.ndarray) -> np.ndarray:
    """For each known row, the latest history date of its household strictly before ``ns`` (NAT: none)."""
    out = np.full(len(ns), NAT, dtype=np.int64)
    if len(ns) <= SMALL_BATCH:  # a request: a sorted list per household and a bisection
        dates: dict[int, list[int]] = {}
        for h, t in history:
            dates.setdefault(h, []).append(pd.Timestamp(t).as_unit("ns").value)
        for times in dates.values():
            times.sort()
        for i in np.flatnonzero(known).tolist():
            times = dates.get(int(households[i]), [])
            j = bisect.bisect_left(times, int(ns[i]))
            if j:
                out[i] = times[j - 1]
        return out
    right = pd.DataFrame(history, columns=["h", "t"])
    right["t"] = pd.to_datetime(right["t"], utc=True).dt.as_unit("ns")
    right = right.assign(prev=right["t"]).sort_values("t", kind="stable")
    rows = np.flatnonzero(known)
    left = pd.DataFrame({"h": households[rows].astype(right["h"].dtype),
                         "t": pd.DatetimeIndex(ns[rows].view("datetime64[ns]"), tz="UTC"), "row": rows})
    merged = pd.merge_asof(left.sort_values("t", kind="stable"), right, on="t", by="h",
                           allow_exact_matches=False, direction="backward")
    found = merged["prev"].notna().to_numpy()
    out[merged["row"].to_numpy()[found]] = pd.DatetimeIndex(merged["prev"][found]).as_unit("ns").asi8
    return out


RECORD_COLUMNS = ["_record", "_household_pk", "_household_id", "collected_at", *SURVEY_VALUE_FIELDS]


def records_frame(qs: QuerySet[SurveyRecord], *, few: bool = False,
                  fields: Sequence[str] | None = None) -> pd.DataFrame:
    """Typed values of records, with what lineage and temporal features need (one query + one).

    On PostgreSQL the rows come by ``COPY (SELECT ...) TO STDOUT`` read by Arrow with the columns'
    types: five times faster than building a Python tuple per row for the batch job.  ``few``: the
    caller reads a request's worth of records, for which COPY's fixed cost (Arrow's parse, a
    conversion per column: several ms) is more than the tuples cost; the values are the same.
    ``fields``: only these survey fields (``scoring_fields``: what the models read), in the
    contract's order; all of them by default."""
    wanted = SURVEY_VALUE_FIELDS if fields is None else [f for f in SURVEY_VALUE_FIELDS if f in set(fields)]
    columns = [*RECORD_COLUMNS[:4], *wanted]
    values = qs.values_list("pk", "household_id", "household__household_id", "collected_at",
                            *(f"values__{f}" for f in wanted))
    frame = (_copy_out(values, columns) if connection.vendor == "postgresql" and not few
             else pd.DataFrame.from_records(list(values), columns=columns))
    return with_previous_survey(frame, frame["_household_pk"].to_numpy())


def scoring_fields(versions: Sequence[ModelVersion]) -> list[str] | None:
    """The survey fields the models of ``versions`` read (their feature steps' fitted fields), or
    None (every field) when one of them does not say.  Money, label and derived fields never enter a
    model, so a batch that reads only these reads about half the columns."""
    wanted: set[str] = set()
    for mv in versions:
        model = model_for(mv)
        for pipeline in (getattr(model, "binary", None), getattr(model, "status_model", None)):
            step = pipeline[0] if pipeline is not None else None
            names = getattr(step, "fields_", None)
            if names is None:
                return None
            wanted.update(names)
    return [f for f in SURVEY_VALUE_FIELDS if f in wanted]


def _arrow_types(fields: Sequence[str] = SURVEY_VALUE_FIELDS) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {"_record": pa.int64(), "_household_pk": pa.int64(), "_household_id": pa.string(),
                                     "collected_at": pa.timestamp("us", tz="UTC")}
    for name in fields:
        field = SurveyValues._meta.get_field(name)
        kind = field.get_internal_type()
        types[name] = (pa.int64() if "Integer" in kind else pa.float64() if kind in ("FloatField", "DecimalField")
                       else pa.bool_() if kind == "BooleanField" else pa.string())
    return types


def _copy_out(values: Any, columns: list[str]) -> pd.DataFrame:
    import pyarrow.csv as pacsv

    sql, params = values.query.sql_with_params()
    sink = io.BytesIO()
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
        for block in copy:
            sink.write(block)
    if not sink.tell():
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    sink.seek(0)
    types = _arrow_types(columns[4:])
    table = pacsv.read_csv(sink, read_options=pacsv.ReadOptions(column_names=columns),
                           convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                                                quoted_strings_can_be_null=False))
    frame = table.to_pandas()
    for name, kind in types.items():  # the ORM's shapes: nullable integers, plain text objects
        if pa.types.is_integer(kind) and name not in ("_record", "_household_pk"):
            frame[name] = frame[name].astype("Int64")
        elif pa.types.is_string(kind):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


# ---- answers -----------------------------------------------------------------------------------------
def answer_body(row: dict[str, Any], mv: ModelVersion, experiment: Experiment | None) -> dict[str, Any]:
    """The public shape of one prediction, from a stored row or a fresh one (same columns)."""
    reasons = row["reasons"]
    if isinstance(reasons, str):
        reasons = json.loads(reasons)
    probabilities = row["status_probabilities"]
    if isinstance(probabilities, str):
        probabilities = json.loads(probabilities)
    prediction_set = row["prediction_set"]
    if isinstance(prediction_set, str):
        prediction_set = json.loads(prediction_set)
    created = row.get("created_at")
    bucket = row.get("bucket")
    return {
        "household_id": row.get("household_id") or None,
        "record_id": None if _na(row.get("record_id")) else int(row["record_id"]),
        "probabilities": probabilities,
        "probability_vulnerable": round(float(row["probability_vulnerable"]), 6),
        "predicted_status": row["predicted_status"],
        "predicted_vulnerable": bool(row["predicted_vulnerable"]),
        "confidence": {
            "margin": None if _na(row["margin"]) else round(float(row["margin"]), 6),
            "borderline": bool(row["borderline"]),
            "prediction_set": prediction_set,
            "coverage": round(1 - float(mv.metrics.get("conformal", {}).get("alpha", settings.RTV_CONFORMAL_ALPHA)), 4),
        },
        "reasons": [reason(f, v, c) for f, v, c in reasons if c != 0],
        "model": {"name": mv.name, "version": mv.version, "variant": row["variant"],
                  "experiment": experiment.name if experiment is not None else None,
                  "bucket": None if bucket is None or _na(bucket) else int(bucket)},
        "created_at": pd.Timestamp(created).isoformat() if created is not None else None,
    }


def _na(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def prediction_body(p: Prediction) -> dict[str, Any]:
    row = {f: getattr(p, f) for f in ("household_id", "record_id", "status_probabilities", "probability_vulnerable",
                                      "predicted_status", "predicted_vulnerable", "margin", "borderline",
                                      "prediction_set", "reasons", "variant", "bucket", "created_at")}
    return answer_body(row, p.model_version, p.experiment)


def _numbers_json(values: np.ndarray, decimals: int | None = None) -> pa.Array:
    """JSON numbers as text, formatted by Arrow (C++); NaN and infinities become null."""
    v = np.asarray(values, dtype="float64")
    if decimals is not None:
        v = np.round(v, decimals)
    arr = pa.array(np.where(np.isfinite(v), v, np.nan), from_pandas=True)
    return pc.fill_null(pc.cast(arr, pa.string()), "null")


def _json_column(values: pd.Series) -> np.ndarray:
    """JSON text of each value of a column (object array), without a Python call per number."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return np.asarray(_numbers_json(values.to_numpy(dtype="float64", na_value=np.nan)).to_numpy(zero_copy_only=False),
                          dtype=object)
    uniques = {u: json.dumps(None if _na(u) else (u.isoformat() if isinstance(u, pd.Timestamp) else u), default=str)
               for u in pd.unique(values.astype(object))}
    return values.astype(object).map(uniques).to_numpy(dtype=object)


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(*[p if isinstance(p, pa.Array) else pa.scalar(p, pa.string()) for p in parts], "")


def scores_frame(scores: Scores, *, mv: ModelVersion, variant: str, experiment: Experiment | None,
                 household_ids: Sequence[str | None], record_ids: Sequence[int | None],
                 buckets: Sequence[int | None], now: Any) -> pd.DataFrame:
    """The stored columns of a batch of predictions."""
    return pd.DataFrame(_typed(scores_columns(scores, mv=mv, variant=variant, experiment=experiment,
                                              household_ids=household_ids, record_ids=record_ids,
                                              buckets=buckets, now=now)))


def scores_columns(scores: Scores, *, mv: ModelVersion, variant: str, experiment: Experiment | None,
                   household_ids: Sequence[str | None], record_ids: Sequence[int | None],
                   buckets: Sequence[int | None], now: Any) -> dict[str, Any]:
    """``scores_frame``'s columns, before they become a frame (callers add theirs, then build it once)."""
    n = len(scores)
    # A request's worth: plain Python beats a few dozen Arrow kernel calls; a batch: the reverse.
    small = n <= SMALL_BATCH
    probs, sets, reasons = _json_by_row(scores) if small else _json_by_column(scores)
    columns: dict[str, Any] = {
        "record_id": list(record_ids),
        "household_id": [h or "" for h in household_ids],
        "model_version_id": mv.pk,
        "probability_vulnerable": scores.p_vulnerable,
        "predicted_vulnerable": scores.predicted_vulnerable,
        "predicted_status": scores.predicted_status.astype(str),
        "status_probabilities": probs,
        "margin": scores.margin,
        "borderline": scores.borderline,
        "prediction_set": sets,
        "reasons": reasons,
        "variant": variant,
        "experiment_id": [experiment.pk if experiment else None] * n,
        "bucket": list(buckets),
        "created_at": [now] * n,
    }
    # A request's rows stay plain lists (an answer reads them as they are; nullable arrays cost more
    # than the answer); a batch's are typed as stored.
    return columns if small else _typed(columns)


KEY_COLUMNS = ("record_id", "experiment_id", "bucket", "requested_by_id")  # integers or NULL


def _typed(columns: dict[str, Any]) -> dict[str, Any]:
    """The key columns as nullable integers and the time as a UTC timestamp column, as stored."""
    out = dict(columns)
    for name in KEY_COLUMNS:
        if isinstance(out.get(name), list):
            out[name] = pd.array(out[name], dtype="Int64")
    if isinstance(out.get("created_at"), list):
        n = len(out["created_at"])
        stamp = out["created_at"][0] if n else timezone.now()
        out["created_at"] = pd.Series(pd.Timestamp(stamp), index=range(n), dtype="datetime64[ns, UTC]")
    return out


def _json_by_row(scores: Scores) -> tuple[list[str], list[str], list[str]]:
    n = len(scores)
    return ([json.dumps(scores.probabilities(i)) for i in range(n)],
            [json.dumps(scores.prediction_set(i)) for i in range(n)],
            [json.dumps([[r["feature"], r["value"], r["contribution"]] for r in scores.reasons(i)], default=str)
             for i in range(n)])


def _json_by_column(scores: Scores) -> tuple[Any, np.ndarray, Any]:
    """The three JSON columns, assembled by Arrow's string kernels rather than row by row."""
    n = len(scores)
    statuses = scores.statuses
    parts: list[Any] = ["{"]
    for j, s in enumerate(statuses):
        parts += [(", " if j else "") + json.dumps(s) + ": ", _numbers_json(scores.status_proba[:, j], 6)]
    probs = _join(*parts, "}") if n else pa.array([], pa.string())
    code = scores.in_set.astype(np.int64) @ (1 << np.arange(len(statuses)))
    set_text = np.array([json.dumps([s for j, s in enumerate(statuses) if c >> j & 1])
                         for c in range(1 << len(statuses))], dtype=object)[code]
    reasons: Any = pa.array(["[]"] * n, pa.string())
    if (n and scores.reason_source is not None and scores.reason_contribution is not None
            and scores.sources is not None):
        used = np.unique(scores.reason_source)
        row_of = np.full(len(scores.sources), -1)
        row_of[used] = np.arange(len(used))
        encoded = np.empty((len(used), n), dtype=object)
        for r, j in enumerate(used):
            values = scores.source_values(scores.sources[j])
            encoded[r] = "null" if values is None else _json_column(values.reset_index(drop=True))
        names = np.array([json.dumps(s) for s in scores.sources], dtype=object)
        rows = np.arange(n)
        parts = ["["]
        for r in range(scores.reason_source.shape[1]):
            src = scores.reason_source[:, r]
            parts += [", [" if r else "[", pa.array(names[src], pa.string()), ", ",
                      pa.array(encoded[row_of[src], rows], pa.string()), ", ",
                      _numbers_json(scores.reason_contribution[:, r], 4), "]"]
        reasons = _join(*parts, "]")
    # Kept in Arrow: the COPY's CSV and the Parquet export read them as they are (no Python string
    # per row and column, made here only to be turned back into Arrow twice).
    return (pd.arrays.ArrowExtensionArray(probs), set_text, pd.arrays.ArrowExtensionArray(reasons))


def predictions_frame(frame: pd.DataFrame, *, household_ids: Sequence[str | None],
                      record_ids: Sequence[int | None] | None = None, source: str = Prediction.Source.API,
                      store: bool = True, user: Any = None, payloads: Sequence[Any] | None = None,
                      ) -> tuple[pd.DataFrame, Plan]:
    """Score rows with the model each household is assigned to (champion, A/B challenger, and the
    shadow when one runs) and store them when asked.  Returns the predictions as stored (column
    ``_row`` is the input row), shadow rows included, and the plan that routed them."""
    parts, pl = _prediction_parts(frame, household_ids=household_ids, record_ids=record_ids, source=source,
                                  user=user, payloads=payloads)
    out = _parts_frame(parts)
    if store:
        predictions_write(out)
    return out, pl


def _parts_frame(parts: list[dict[str, Any]]) -> pd.DataFrame:
    frames = [pd.DataFrame(_typed(columns)) for columns in parts]  # one frame per model, built once
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _prediction_parts(frame: pd.DataFrame, *, household_ids: Sequence[str | None],
                      record_ids: Sequence[int | None] | None, source: str, user: Any,
                      payloads: Sequence[Any] | None) -> tuple[list[dict[str, Any]], Plan]:
    """The stored columns of each model's predictions (``scores_columns`` plus the request's)."""
    n = len(frame)
    frame = frame.reset_index(drop=True)
    record_ids = list(record_ids) if record_ids is not None else [None] * n
    pl = plan(household_ids)
    now = timezone.now()
    groups: dict[tuple[int, str], list[int]] = {}
    for i, (mv, variant) in enumerate(zip(pl.answer, pl.variant, strict=True)):
        groups.setdefault((mv.pk, variant), []).append(i)
    versions = {mv.pk: mv for mv in pl.answer}
    jobs = [(versions[pk], variant, idx) for (pk, variant), idx in groups.items()]
    if pl.shadow is not None:
        shadow_idx = [i for i in range(n) if pl.bucket[i] is not None]
        if shadow_idx:
            jobs.append((pl.shadow, Prediction.Variant.SHADOW, shadow_idx))
    requested_by = getattr(user, "pk", None) if user is not None and user.is_authenticated else None
    parts: list[dict[str, Any]] = []
    for mv, variant, idx in jobs:
        rows = frame.iloc[idx].reset_index(drop=True) if len(idx) < n else frame
        columns = scores_columns(model_for(mv).score(rows), mv=mv, variant=variant, experiment=pl.experiment,
                                 household_ids=[household_ids[i] for i in idx],
                                 record_ids=[record_ids[i] for i in idx], buckets=[pl.bucket[i] for i in idx], now=now)
        columns["_row"] = idx
        columns["source"] = source
        columns["payload"] = (None if payloads is None else
                              [json.dumps(payloads[i], default=str) if payloads[i] is not None else None for i in idx])
        columns["requested_by_id"] = [requested_by] * len(idx)
        parts.append(columns)
    return parts, pl


def _part_rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """A part's rows as dicts of plain values (what ``quality.engine.frame_records`` of its frame gives), without the frame."""
    n = len(columns["_row"])
    values = [v.tolist() if hasattr(v, "tolist") else list(v) if isinstance(v, list) else [v] * n
              for v in columns.values()]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def predictions_make(frame: pd.DataFrame, *, household_ids: Sequence[str | None],
                     record_ids: Sequence[int | None] | None = None, source: str = Prediction.Source.API,
                     store: bool = True, user: Any = None, payloads: Sequence[Any] | None = None,
                     ) -> list[dict[str, Any]]:
    """``predictions_frame``, answered: one body per input row, from the model that answers it."""
    parts, pl = _prediction_parts(frame, household_ids=household_ids, record_ids=record_ids, source=source,
                                  user=user, payloads=payloads)
    if store:
        predictions_write(_parts_frame(parts))
    # A request's rows straight from the columns: no frame, mask or sort in pandas for a few rows.
    answered = sorted((row for part in parts for row in _part_rows(part) if row["variant"] != Prediction.Variant.SHADOW),
                      key=lambda row: row["_row"])
    versions = {mv.pk: mv for mv in pl.answer}
    return [answer_body(row, versions[row["model_version_id"]], pl.experiment) for row in answered]


PREDICTION_COLUMNS = ["record_id", "household_id", "model_version_id", "probability_vulnerable", "predicted_vulnerable",
                      "predicted_status", "status_probabilities", "margin", "borderline", "prediction_set", "reasons",
                      "variant", "experiment_id", "bucket", "source", "payload", "requested_by_id", "created_at"]


class MissingReference(IntegrityError):
    """Predictions naming a record or model version that does not exist (nothing was written)."""


def predictions_write(frame: pd.DataFrame) -> int:
    """The one write path for predictions: COPY on PostgreSQL (bulk insert on SQLite).  The records
    and model versions the rows name are checked and locked first, in one statement each (the
    table has no database foreign key on them: see ``Prediction``)."""
    with transaction.atomic():
        keys = {SurveyRecord: "record_id", ModelVersion: "model_version_id"}
        missing = references_lock({model: pd.unique(frame[column].dropna()).tolist()
                                   for model, column in keys.items() if column in frame})
        if missing:
            raise MissingReference("predictions name rows that do not exist (at most 10 shown): "
                                   + "; ".join(f"{keys[model]} {ids[:10]}" for model, ids in missing.items()))
        return copy_frame(Prediction, frame, PREDICTION_COLUMNS,
                          not_null_text=["household_id", "predicted_status", "variant", "source"])


def latest_predictions(record_ids: Sequence[int]) -> dict[int, Prediction]:
    """Each record's latest answered (not shadow) prediction, in one query."""
    latest: dict[int, Prediction] = {}
    if not record_ids:
        return latest
    qs = (Prediction.objects.filter(record_id__in=list(record_ids)).exclude(variant=Prediction.Variant.SHADOW)
          .select_related("model_version", "experiment").order_by("record_id", "-created_at", "-id"))
    for p in qs:
        latest.setdefault(p.record_id, p)  # type: ignore[arg-type]
    return latest
