"""Retraining triggers: each one fires on its condition only, and every decision keeps its inputs."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling.models import ModelVersion, RetrainDecision
from modelling.services import model_train
from modelling.triggers import psi_categorical, psi_numeric, retrain_triggers_evaluate
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


def test_nothing_fires_on_a_fresh_champion_with_little_new_data(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    add(tmp_path, 20, seed=3)
    decision = retrain_triggers_evaluate()
    assert decision.fired == [] and not decision.retrain_queued
    assert decision.inputs["new_samples"]["count"] == 20 and decision.inputs["new_samples"]["threshold"] == 50


def test_fifty_new_approved_records_fire_new_samples(champion, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    add(tmp_path, 60, seed=4)
    decision = retrain_triggers_evaluate()
    assert "new_samples" in decision.fired and decision.inputs["new_samples"]["count"] == 60
    assert "drift" not in decision.fired and "degradation" not in decision.fired


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
    top = champion.metrics["top_features"]
    assert len(top) == 5
    shift = {name: (lambda s: s * 4 + 7) for name in top if name not in ("district", "village", "cluster")}
    add(tmp_path, 200, seed=6, **shift)
    decision = retrain_triggers_evaluate()
    assert "drift" in decision.fired
    assert set(decision.inputs["drift"]["top_major"]) & set(top)


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
