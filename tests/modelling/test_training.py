"""The first model is leak-free by construction, registered in MLflow, and scores stored records."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command

from features.pipeline import LeakageError, SurveyFeatures, assert_leak_free, input_fields
from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling import registry
from modelling.models import ModelVersion, Prediction
from rtv import contract

pytestmark = pytest.mark.django_db

FORBIDDEN = [f.name for f in contract.SURVEY_FIELDS if f.role in ("money", "derived", "label", "identifier")]


def test_no_money_derived_label_or_identifier_field_is_a_model_input() -> None:
    inputs = set(input_fields())
    assert inputs.isdisjoint(FORBIDDEN)
    assert {"household_size", "agriculture_land", "business_number", "district", "village"} <= inputs


@pytest.mark.parametrize("leak", ["income_consumption_residues_per_day", "formal_employment", "household_income",
                                  "household_id", "assets_ugx"])
def test_the_leakage_guard_refuses_each_forbidden_role(leak: str) -> None:
    with pytest.raises(LeakageError, match=leak):
        assert_leak_free(["household_size", leak])
    with pytest.raises(LeakageError):
        SurveyFeatures(fields=["household_size", leak]).fit(pd.DataFrame({"household_size": [1], leak: [1]}))


def test_features_turn_sentinels_to_missing_and_codes_to_indicators() -> None:
    frame = pd.DataFrame({"phones_owned": [-99, 2], "loan_from": ["7 8", None], "household_size": [4, 2],
                          "agriculture_land": [2.0, None], "district": ["Kanungu", None]})
    out = SurveyFeatures().fit(frame).transform(frame)
    assert pd.isna(out.loc[0, "phones_owned"]) and out.loc[1, "phones_owned"] == 2
    assert out.loc[0, ["loan_from_7", "loan_from_8", "loan_from_1"]].tolist() == [1.0, 1.0, 0.0]
    assert out.loc[1, "loan_from_missing"] == 1.0
    assert out.loc[0, "land_per_member"] == 0.5
    assert out.loc[1, "district"] == "missing"
    assert not set(out.columns) & set(FORBIDDEN)


@pytest.fixture
def stored_records(tmp_path: Path) -> int:
    data, errors = generate(700, seed=21, bad_rate=0.0)  # enough villages for 5 grouped folds, quick to fit
    path = tmp_path / "train.csv"
    write(data, errors, path, "csv")
    return ingest_file(path).accepted


def test_train_model_registers_a_champion_and_scores_every_record(stored_records: int) -> None:
    out = StringIO()
    call_command("train_model", "--json", stdout=out)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(summary) >= {"model", "version", "metrics"}
    assert summary["version"] == 1 and summary["scored"] == stored_records == SurveyRecord.objects.count()
    metrics = summary["metrics"]
    # Honest, not leaked: a real signal, far from the 0.95+ that money columns would give.
    assert 0.6 < metrics["roc_auc"] < 0.95
    assert metrics["accuracy"] < 0.95
    mv = ModelVersion.objects.get()
    assert set(mv.features).isdisjoint(FORBIDDEN)
    assert registry.alias_version(mv.name, registry.CHAMPION) == 1
    assert registry.alias_version(mv.name, registry.CHALLENGER) == 1
    assert Prediction.objects.filter(model_version=mv).count() == stored_records
    probs = list(Prediction.objects.values_list("probability_vulnerable", flat=True))
    assert 0 <= min(probs) < max(probs) <= 1


def test_a_second_training_is_a_challenger_and_leaves_the_champion(stored_records: int) -> None:
    call_command("train_model", "--no-score", stdout=StringIO())
    call_command("train_model", "--no-score", stdout=StringIO())
    name = ModelVersion.objects.first().name  # type: ignore[union-attr]
    assert registry.alias_version(name, registry.CHAMPION) == 1
    assert registry.alias_version(name, registry.CHALLENGER) == 2
    assert ModelVersion.objects.get(version=1).aliases == ["champion"]


def test_training_refuses_with_too_few_labelled_records() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="at least"):
        call_command("train_model", stdout=StringIO())


def test_training_keeps_a_processed_snapshot_with_its_manifest(stored_records: int) -> None:
    import hashlib

    from django.core.files.storage import default_storage

    from features.snapshots import snapshot_read
    from ingestion.models import IngestionBatch

    call_command("train_model", "--no-score", stdout=StringIO())
    mv = ModelVersion.objects.get()
    snap = mv.snapshot
    assert snap is not None and snap.file_key.startswith("processed/")
    with default_storage.open(snap.file_key, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == snap.sha256
    frame = snapshot_read(snap)
    approved = SurveyRecord.objects.filter(review_status="approved").count()  # likely duplicates wait for review
    assert len(frame) == snap.rows == mv.training_rows == approved > stored_records * 0.95
    # The model's inputs, the dates its temporal features come from, the row's id and its label.
    assert set(frame.columns) == set(mv.features) | {"collected_at", "previous_collected_at", "record_id", "vulnerable",
                                                      "progress_status"}
    assert set(frame.columns).isdisjoint(FORBIDDEN)
    assert snap.source_batches == [str(IngestionBatch.objects.get().pk)]


def test_each_district_and_sex_group_gets_the_overall_discrimination_calibration_and_coverage_metrics() -> None:
    from modelling.evaluation import COVERAGES, evaluate

    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    proba = np.clip(0.5 * y + rng.uniform(0, 0.5, n), 0, 1)
    statuses = np.array(["On Track", "At Risk", "Struggling", "Severely Struggling"], dtype=object)
    status_true = statuses[2 * y + rng.integers(0, 2, n)]
    status_pred = statuses[rng.integers(0, 4, n)]
    district = np.array(["Kanungu", "Mitooma"] * (n // 2), dtype=object)
    sex = np.array(["female"] * 100 + ["male"] * 300, dtype=object)
    metrics = evaluate(y, proba, district=district, sex=sex, status_true=status_true, status_pred=status_pred)
    coverage = {f"{kind}_error_at_{int(c * 100)}" for c in COVERAGES for kind in ("exclusion", "inclusion")}
    assert coverage <= set(metrics)
    for label, groups in (("by_district", district), ("by_sex", sex)):
        for g, got in metrics[label].items():
            m = groups == g
            alone = evaluate(y[m], proba[m], status_true=status_true[m], status_pred=status_pred[m])
            every = ("roc_auc", "pr_auc", "brier", "log_loss", "accuracy", "macro_f1_4class", "confusion_matrix",
                     "calibration_curve")
            assert set(got) >= {"n", *every} | coverage | {f"within_{c}" for c in coverage}
            for name in every:
                expected = alone[name] if name in ("confusion_matrix", "calibration_curve") else pytest.approx(alone[name])
                assert got[name] == expected, (label, g, name)
            for name in coverage:  # ranked on its own, the group's figures are its own evaluation's
                assert got[f"within_{name}"] == pytest.approx(alone[name]), (label, g, name)


def test_group_targeting_errors_are_under_the_selection_made_over_everyone() -> None:
    """A breakdown by district shows the gap between districts: with perfect scores, a district that
    is 90% vulnerable loses many of its vulnerable when the top 40% overall are chosen."""
    from modelling.evaluation import evaluate

    y = np.array([1] * 90 + [0] * 10 + [1] * 10 + [0] * 90)
    proba = np.concatenate([np.linspace(0.99, 0.6, 90), np.linspace(0.3, 0.2, 10),
                            np.linspace(0.59, 0.5, 10), np.linspace(0.19, 0.01, 90)])
    district = np.array(["A"] * 100 + ["B"] * 100, dtype=object)
    got = evaluate(y, proba, district=district)["by_district"]
    # The top 80 overall are all in A: 10 of A's 90 vulnerable and all 10 of B's are left out.
    assert got["A"]["exclusion_error_at_40"] == pytest.approx(10 / 90)
    assert got["B"]["exclusion_error_at_40"] == pytest.approx(1.0) and got["B"]["selected_at_40"] == 0
    assert got["A"]["within_exclusion_error_at_40"] == pytest.approx(50 / 90)  # A ranked alone: its top 40 of 100


def test_accuracy_is_at_the_decision_threshold_serving_uses(settings) -> None:
    from modelling.evaluation import evaluate

    y = np.array([0] * 15 + [1] * 15)
    proba = np.array([0.1] * 15 + [0.35] * 15)
    settings.RTV_DECISION_THRESHOLD = 0.3
    got = evaluate(y, proba)
    assert got["accuracy"] == 1.0 and got["confusion_matrix"] == [[15, 0], [0, 15]] and got["threshold"] == 0.3


@pytest.mark.django_db
def test_training_labels_follow_the_configured_thresholds_and_relabel_brings_stored_ones_in_line(  # type: ignore[no-untyped-def]
        tmp_path: Path, settings, make_user) -> None:
    from modelling.services import records_relabel, training_frame
    from rtv.models import AuditEvent

    data, _ = generate(300, seed=61, bad_rate=0.0)
    write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    ingest_file(tmp_path / "a.csv")
    before = training_frame()[1].mean()
    settings.RTV_STATUS_THRESHOLDS = [("On Track", 2.6), ("At Risk", 2.2), ("Struggling", 1.7)]
    _, y, _, _, facts = training_frame()
    per_day = SurveyRecord.objects.filter(pk__in=facts.record_ids.tolist())
    # Vulnerable: Struggling or Severely Struggling, i.e. below the At Risk line.
    expected = {pk: v < 2.2 for pk, v in per_day.values_list("pk", "values__income_consumption_residues_per_day")}
    assert y.tolist() == [int(expected[pk]) for pk in facts.record_ids] and y.mean() > before  # a higher line
    assert SurveyRecord.objects.filter(vulnerable=False).count() > sum(not v for v in expected.values())  # stored: stale
    result = records_relabel(user=make_user("data_scientist"))
    assert result["changed"] > 0 and result["records"] == SurveyRecord.objects.count()
    stored = dict(SurveyRecord.objects.filter(pk__in=list(expected)).values_list("pk", "vulnerable"))
    assert stored == expected and records_relabel()["changed"] == 0
    event = AuditEvent.objects.get(action="records.relabelled", actor__isnull=False)
    assert event.changes["thresholds"][2] == ["Struggling", 1.7]


def test_thresholds_out_of_order_stop_the_platform_from_starting() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "rtv.settings.test", "RTV_THRESHOLD_AT_RISK": "3.0"}
    run = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "status thresholds must fall" in run.stderr


def test_a_model_too_good_to_be_true_is_not_registered(tmp_path: Path) -> None:
    """The alarm is not just a function: training calls it before MLflow or the registry hear of the
    model.  Here household size gives the label away (as a money column would), so the
    cross-validated accuracy passes 0.95 and nothing is registered."""
    from modelling.services import model_train

    data, errors = generate(700, seed=21, bad_rate=0.0)
    vulnerable = data["income_consumption_residues_per_day"] < 1.77
    data["household_size"] = np.where(vulnerable, 9, 3)
    write(data, errors, tmp_path / "leaky.csv", "csv")
    ingest_file(tmp_path / "leaky.csv")
    with pytest.raises(LeakageError, match="accuracy"):
        model_train(folds=2)
    assert not ModelVersion.objects.exists()
    registry.configure()
    import mlflow

    assert not mlflow.MlflowClient().search_model_versions(f"name='{registry.settings.RTV_MODEL_NAME}'")


def test_the_training_run_is_in_mlflow_with_its_parameters_metrics_evaluation_and_requirements(
        stored_records: int) -> None:
    import mlflow

    from modelling.services import PIP_REQUIREMENTS, model_train

    mv = model_train(folds=2)
    registry.configure()
    client = mlflow.MlflowClient()
    run = client.get_run(mv.mlflow_run_id)
    assert {"algorithm", "folds", "rows", "features", "cv", "snapshot", "snapshot_sha256"} <= set(run.data.params)
    assert run.data.params["rows"] == str(mv.training_rows) and run.data.params["folds"] == "2"
    assert abs(run.data.metrics["cv_roc_auc"] - mv.metrics["roc_auc"]) < 1e-9
    evaluation = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                                     artifact_path="evaluation.json")).read_text())
    assert evaluation["roc_auc"] == mv.metrics["roc_auc"] and "by_district" in evaluation
    group = next(g for g in evaluation["by_district"].values() if not g.get("too_few"))
    assert {"log_loss", "accuracy", "macro_f1_4class", "confusion_matrix", "calibration_curve"} <= set(group)
    requirements = Path(mlflow.artifacts.download_artifacts(f"{mv.model_uri}/requirements.txt")).read_text().split()
    assert set(PIP_REQUIREMENTS) <= set(requirements)  # (MLflow adds its own pin)
    version = client.get_model_version(mv.name, str(mv.version))
    assert version.run_id == run.info.run_id


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # commits happen: what is queued after one runs
def test_the_first_champions_training_scores_the_records_itself_and_says_how_many(stored_records: int) -> None:
    """Training scores right after it registers; a rescoring queued by the first promotion (eager in
    the embedded run) would take every record from under the command's count ("0 records scored")."""
    out = StringIO()
    call_command("train_model", "--json", stdout=out)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["scored"] == stored_records == Prediction.objects.count()
