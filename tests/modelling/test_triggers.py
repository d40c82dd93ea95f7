"""Retraining triggers: each one fires on its condition only, and every decision keeps its inputs."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.utils import timezone

from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling.models import ModelVersion, RetrainDecision
from modelling.promotion import PromotionRefused, model_promote
from modelling.services import model_train
from modelling.triggers import drift_top_fields, psi_categorical, psi_numeric, retrain_triggers_evaluate
from rtv.models import OutboxMessage

pytestmark = pytest.mark.django_db


def add(tmp_path: Path, rows: int, seed: int, **changes: object):  # type: ignore[no-untyped-def]
    data, _ = generate(rows, seed=seed)
    for column, value in changes.items():
        data[column] = value(data[column]) if callable(value) else value
    path = tmp_path / f"{seed}.csv"
    write(data, data.iloc[0:0], path, "csv")
    return ingest_file(path)


@pytest.fixture
def champion(tmp_path: Path) -> ModelVersion:
    add(tmp_path, 400, seed=1)
    return model_train(folds=2)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=5000), rng.normal(size=5000)
    assert psi_numeric(a, b) < 0.02 and psi_numeric(a, b + 1.5) > 0.25
    import pandas as pd

    assert psi_categorical(pd.Series(["a", "b"] * 500), pd.Series(["a", "b"] * 500)) == pytest.approx(0)
    assert psi_categorical(pd.Series(["a", "b"] * 500), pd.Series(["a"] * 900 + ["b"] * 100)) > 0.25


def test_without_a_champion_any_approved_data_is_new(tmp_path: Path) -> None:
    add(tmp_path, 60, seed=2)
    decision = retrain_triggers_evaluate()
    assert decision.fired == ["new_samples"] and decision.retrain_queued
    assert OutboxMessage.objects.filter(task="modelling.train_and_score").count() == 1


def approved(batch) -> int:  # type: ignore[no-untyped-def]
    """The batch's records that count as training data (likely duplicates wait for a reviewer)."""
    return int(batch.records.filter(review_status="approved").count())


def test_nothing_fires_on_a_fresh_champion_with_little_new_data(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = add(tmp_path, 20, seed=3)
    decision = retrain_triggers_evaluate()
    assert decision.fired == [] and not decision.retrain_queued
    assert decision.inputs["new_samples"]["count"] == approved(batch) and decision.inputs["new_samples"]["threshold"] == 50


def test_fifty_new_approved_records_fire_new_samples(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = add(tmp_path, 60, seed=4)
    decision = retrain_triggers_evaluate()
    assert "new_samples" in decision.fired and decision.inputs["new_samples"]["count"] == approved(batch) >= 50
    assert "drift" not in decision.fired and "degradation" not in decision.fired
    assert decision.inputs["drift"]["skipped"].endswith("drift is judged from 200")  # too few to tell noise from drift


def test_records_approved_after_training_count_as_new_samples(tmp_path: Path) -> None:
    """Received before the training but held for review then: the model never saw them."""
    add(tmp_path, 400, seed=1)
    held = list(SurveyRecord.objects.filter(review_status="approved").order_by("pk")[:60])
    SurveyRecord.objects.filter(pk__in=[r.pk for r in held]).update(review_status="on_hold")
    model_train(folds=2)
    assert retrain_triggers_evaluate(enqueue=False).inputs["new_samples"]["count"] == 0
    SurveyRecord.objects.filter(pk__in=[r.pk for r in held]).update(review_status="approved")
    decision = retrain_triggers_evaluate(enqueue=False)
    assert decision.inputs["new_samples"]["count"] == 60 and "new_samples" in decision.fired
    assert decision.inputs["new_samples"]["counted"] == "not in its training snapshot"


def test_a_week_old_champion_fires_the_schedule(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ModelVersion.objects.filter(pk=champion.pk).update(created_at=champion.created_at - timedelta(days=8))
    assert retrain_triggers_evaluate().fired == ["schedule"]


def test_worse_performance_on_new_labels_fires_degradation(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = add(tmp_path, 200, seed=5)
    for record in SurveyRecord.objects.filter(batch=batch):  # the world changed: the labels flip
        record.vulnerable = not record.vulnerable
        record.save(update_fields=["vulnerable"])
    decision = retrain_triggers_evaluate()
    assert "degradation" in decision.fired
    assert decision.inputs["degradation"]["new_auc"] < 0.5 < decision.inputs["degradation"]["trained_auc"]


def test_shifted_inputs_fire_drift(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    top = drift_top_fields(champion)
    assert len(top) == 5
    def moved(s: pd.Series) -> pd.Series:  # numbers moved far; a code or a multi-select answer as it is
        return s * 4 + 7 if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) else s

    shift = {name: moved for name in top}
    add(tmp_path, 400, seed=6, **shift)  # enough approved records to judge drift (200)
    decision = retrain_triggers_evaluate()
    assert "drift" in decision.fired, decision.inputs["drift"]
    assert set(decision.inputs["drift"]["top_major"]) & set(top)
    # Judged against the champion's training snapshot, as recorded.
    assert decision.inputs["drift"]["reference"] == f"training snapshot {champion.snapshot_id}"
    assert decision.inputs["drift"]["reference_rows"] == champion.snapshot.rows


def test_records_changed_after_training_do_not_move_the_drift_reference(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The reference is what the champion was trained on, not what the database holds now."""
    from ingestion.models import SurveyValues

    add(tmp_path, 400, seed=7)  # like the training data: no drift
    SurveyValues.objects.filter(record__received_at__lte=champion.training_cutoff).update(household_size=40)
    decision = retrain_triggers_evaluate()
    assert "drift" not in decision.fired, decision.inputs["drift"]
    assert decision.inputs["drift"]["psi"]["household_size"] < 0.25


def test_the_manual_trigger_and_the_command(champion) -> None:  # type: ignore[no-untyped-def]
    out = StringIO()
    call_command("evaluate_retraining", "--manual", "--no-queue", stdout=out)
    result = json.loads(out.getvalue())
    assert result["fired"] == ["manual"] and result["retrain_queued"] is False
    assert RetrainDecision.objects.get().inputs["new_samples"]["count"] == 0


def test_the_api_evaluates_on_demand_and_lists_decisions(champion, api) -> None:  # type: ignore[no-untyped-def]
    scientist = api("data_scientist")
    resp = scientist.post("/api/v1/models/triggers/", {}, format="json")
    assert resp.status_code == 200 and resp.json()["fired"] == ["manual"] and resp.json()["retrain_queued"]
    assert scientist.get("/api/v1/models/").json()["retrain_decisions"][0]["fired"] == ["manual"]
    assert api("reviewer").post("/api/v1/models/triggers/", {}, format="json").status_code == 403


def test_a_challenger_the_gate_refused_restarts_the_schedule_and_the_new_samples_count(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ModelVersion.objects.filter(pk=champion.pk).update(created_at=champion.created_at - timedelta(days=8))
    add(tmp_path, 200, seed=4)  # enough new records to retrain...
    challenger = model_train(folds=2)  # ...and a challenger is trained on them, then refused by the gate
    challenger.metrics = {**challenger.metrics, "comparison": None, "roc_auc": champion.metrics["roc_auc"] - 0.1}
    challenger.save(update_fields=["metrics"])
    with pytest.raises(PromotionRefused):
        model_promote(version=challenger.version, user=None)
    challenger.refresh_from_db()

    tomorrow = timezone.now() + timedelta(days=1)
    for when in ({}, {"now": tomorrow}):  # tonight and tomorrow night: nothing new to learn from
        decision = retrain_triggers_evaluate(**when)  # type: ignore[arg-type]
        assert "schedule" not in decision.fired and "new_samples" not in decision.fired
        assert decision.inputs["new_samples"] == {**decision.inputs["new_samples"], "count": 0,
                                                  "since_version": challenger.version}
        assert decision.champion_version == champion.version
    a_week_later = retrain_triggers_evaluate(now=challenger.created_at + timedelta(days=7))
    assert "schedule" in a_week_later.fired and a_week_later.inputs["schedule"]["since_version"] == challenger.version


def date_records(batch, rng: np.random.Generator) -> list[SurveyRecord]:  # type: ignore[no-untyped-def]
    """Rainy-season visits for most vulnerable households: the dates carry signal a model learns."""
    import datetime as dt

    records = list(SurveyRecord.objects.filter(batch=batch).order_by("pk"))
    for record in records:
        rainy = rng.random() < (0.75 if record.vulnerable else 0.25)
        record.collected_at = dt.datetime(2025, 4 if rainy else 7, int(rng.integers(1, 28)), tzinfo=dt.UTC)
    SurveyRecord.objects.bulk_update(records, ["collected_at"])
    return records


def test_degradation_scores_the_new_records_as_serving_does_dates_included(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from modelling import serving

    rng = np.random.default_rng(0)
    date_records(add(tmp_path, 400, seed=1), rng)
    champion = model_train(folds=2)  # its temporal features carry weight
    records = date_records(add(tmp_path, 200, seed=5), rng)
    decision = retrain_triggers_evaluate(enqueue=False)
    new = (SurveyRecord.objects.filter(pk__in=[r.pk for r in records], review_status="approved")
           .exclude(progress_status="").order_by("pk"))  # what the trigger counts as newly labelled
    frame = serving.records_frame(new)
    assert pd.notna(frame["collected_at"]).all() and len(frame) >= 50
    y = np.array(new.values_list("vulnerable", flat=True), dtype=bool).astype(int)
    served = roc_auc_score(y, serving.model_for(champion).score(frame, explain=False).p_vulnerable)
    assert decision.inputs["degradation"]["new_auc"] == round(served, 4)


def _frames(shifts: dict[str, float], n: int = 5000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current values of some numeric inputs, each current one moved by ``shift``
    standard deviations (PSI about 0.01 at 0.05, 0.16 at 0.4, 2 at 1.5)."""
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({name: rng.normal(10, 2, n) for name in shifts})
    current = pd.DataFrame({name: rng.normal(10 + 2 * d, 2, n) for name, d in shifts.items()})
    return reference, current


@pytest.mark.parametrize(("shifts", "top", "drift", "major", "moderate"), [
    # Half the inputs major, none of them among the top five: drift, by the half rule.
    ({"household_size": 1.5, "agriculture_land": 1.5, "time_to_opd": 0.05, "time_to_water": 0.05},
     ["time_to_opd"], True, ["agriculture_land", "household_size"], []),
    # One major input of four, not a top one: no drift.
    ({"household_size": 1.5, "agriculture_land": 0.05, "time_to_opd": 0.05, "time_to_water": 0.05},
     ["time_to_opd"], False, ["household_size"], []),
    # The same one major input, among the top five: drift.
    ({"household_size": 1.5, "agriculture_land": 0.05, "time_to_opd": 0.05, "time_to_water": 0.05},
     ["household_size"], True, ["household_size"], []),
    # Moderate (0.1 to 0.25) everywhere: reported as such, never drift.
    ({"household_size": 0.4, "agriculture_land": 0.4, "time_to_opd": 0.4, "time_to_water": 0.4},
     ["household_size"], False, [], ["agriculture_land", "household_size", "time_to_opd", "time_to_water"]),
])
def test_drift_is_half_the_inputs_major_or_any_top_five_major_and_moderate_is_between_0_1_and_0_25(
        shifts: dict[str, float], top: list[str], drift: bool, major: list[str], moderate: list[str]) -> None:
    from modelling.triggers import PSI_MAJOR, PSI_MODERATE, drift_report

    assert (PSI_MODERATE, PSI_MAJOR) == (0.1, 0.25)
    report = drift_report(*_frames(shifts), top)
    assert (report["drift"], report["major"], report["moderate"]) == (drift, major, moderate), report["psi"]


def test_the_drift_rules_top_five_are_the_survey_fields_behind_the_models_strongest_features(champion) -> None:  # type: ignore[no-untyped-def]
    """The trigger and the daily monitoring judge the same five: the model's own ranking, a derived
    feature standing for its inputs (land per member for land and household size), and never a
    feature PSI cannot be taken of (a month computed from a date)."""
    from features.pipeline import input_fields

    champion.metrics["model_top_features"] = ["collected_month_sin", "land_per_member", "district", "household_size",
                                              "wash_index", "business_number"]
    top = drift_top_fields(champion)
    assert top == ["agriculture_land", "household_size", "district", "latrine_constructed", "tippy_tap_available"]
    assert set(top) <= set(input_fields())
    del champion.metrics["model_top_features"]
    assert drift_top_fields(champion) == champion.metrics["top_features"][:5]  # a version from before the ranking
