"""The daily model-performance job: drift of inputs and of the predicted mix against the training
snapshot, overall and by district, performance on new labels; stored, alerted, charted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling.models import ModelAlert, ModelVersion, MonitoringRun
from modelling.monitoring import monitoring_run
from modelling.services import model_train
from rtv import contract

pytestmark = pytest.mark.django_db


def add(tmp_path: Path, rows: int, seed: int, **changes: object) -> None:
    data, _ = generate(rows, seed=seed, bad_rate=0.0)
    for column, value in changes.items():
        data[column] = value(pd.to_numeric(data[column], errors="coerce")) if callable(value) else value
    write(data, data.iloc[0:0], tmp_path / f"{seed}.csv", "csv")
    ingest_file(tmp_path / f"{seed}.csv")


@pytest.fixture
def champion(tmp_path: Path) -> ModelVersion:
    add(tmp_path, 400, seed=1)
    return model_train(folds=2)


def test_the_reference_snapshot_is_scored_as_its_records_are(tmp_path: Path) -> None:
    """The snapshot keeps the dates the temporal features come from: scored as the reference, its
    households get the classes they get from the database (else the mix 'drifts' from nothing)."""
    import numpy as np

    from features.snapshots import snapshot_read
    from ingestion.models import SurveyRecord
    from modelling import serving

    add(tmp_path, 400, seed=3)
    rng = np.random.default_rng(0)
    for pk in SurveyRecord.objects.values_list("pk", flat=True):
        SurveyRecord.objects.filter(pk=pk).update(
            collected_at=pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=int(rng.integers(0, 600))))
    mv = model_train(folds=2)
    reference = snapshot_read(mv.snapshot).sort_values("record_id").reset_index(drop=True)
    assert {"collected_at", "previous_collected_at"} <= set(reference.columns)
    stored = serving.records_frame(SurveyRecord.objects.filter(pk__in=reference["record_id"].tolist()).order_by("pk"))
    model = serving.model_for(mv)
    assert (model.score(reference, explain=False).predicted_status ==
            model.score(stored, explain=False).predicted_status).all()


def test_without_a_champion_there_is_nothing_to_monitor() -> None:
    assert monitoring_run() is None


def test_data_like_the_training_data_raises_no_alert(champion: ModelVersion) -> None:
    run = monitoring_run()
    assert run is not None and run.model_version == champion and run.rows == 400
    assert run.feature_psi_max is not None and run.feature_psi_max < 0.1
    assert run.prediction_psi is not None and run.prediction_psi < 0.1
    assert not run.drift and not ModelAlert.objects.exists()
    assert run.results["by_district"]  # each district with enough rows gets its own figures
    assert all(d["prediction_psi"] < 0.25 for d in run.results["by_district"].values())


def test_shifted_inputs_raise_drift_and_prediction_mix_alerts_with_their_figures(tmp_path, champion, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_MONITOR_WINDOW_DAYS = 30
    # A season later: bigger farms, many more crops, and businesses everywhere.
    add(tmp_path, 1200, seed=2, agriculture_land=lambda s: s * 6 + 3, season1_crops_planted=lambda s: s + 6,
        season2_crops_planted=lambda s: s + 6, perennial_crops_grown=lambda s: s + 6, business_number=lambda s: s + 3,
        household_size=lambda s: s + 6)
    run = monitoring_run()
    assert run is not None and run.drift
    assert run.feature_psi_max is not None and run.feature_psi_max >= 0.25
    assert {"agriculture_land", "household_size"} <= set(run.results["overall"]["major"])
    alerts = {a.metric: a for a in ModelAlert.objects.filter(run=run)}
    assert "feature_drift" in alerts and alerts["feature_drift"].value >= 0.25
    assert run.prediction_psi is not None
    if run.prediction_psi >= 0.25:
        assert "prediction_psi" in alerts


def test_a_predicted_mix_far_from_trainings_raises_its_own_alert(tmp_path, champion) -> None:  # type: ignore[no-untyped-def]
    """The month's households are those the model calls Severely Struggling (from the same survey
    population, so inputs barely move): the predicted-status mix alerts overall, with its PSI."""
    from django.utils import timezone

    from features.snapshots import snapshot_record_ids
    from ingestion.models import SurveyRecord
    from modelling import serving

    add(tmp_path, 1500, seed=9)
    SurveyRecord.objects.update(received_at=timezone.now() - pd.Timedelta(days=90))  # out of the month's window
    trained = snapshot_record_ids(champion.snapshot) or []
    pool = serving.records_frame(SurveyRecord.objects.exclude(pk__in=trained).order_by("pk"))
    status = serving.model_for(champion).score(pool, explain=False).predicted_status
    poorest = pool["_record"][status == "Severely Struggling"].tolist()
    assert 100 <= len(poorest) < len(pool) / 2
    SurveyRecord.objects.filter(pk__in=poorest).update(received_at=timezone.now())
    run = monitoring_run()
    assert run is not None and run.rows == len(poorest)
    assert run.prediction_psi is not None and run.prediction_psi >= 0.25
    alert = ModelAlert.objects.get(run=run, metric="prediction_psi", scope="overall")
    assert alert.value == pytest.approx(run.prediction_psi) and "mix" in alert.message


def test_new_labels_that_the_model_gets_wrong_raise_a_performance_alert(tmp_path, champion) -> None:  # type: ignore[no-untyped-def]
    # Labels flipped: the poorest-looking households report high income and the reverse.
    data, _ = generate(300, seed=5, bad_rate=0.0)
    money = [f.name for f in contract.SURVEY_FIELDS if f.role in ("money", "derived", "label") and f.name in data]
    rich = data["income_consumption_residues_per_day"] >= 1.77
    swapped = data.copy()
    swapped.loc[rich, money] = data.loc[~rich, money].sample(int(rich.sum()), replace=True, random_state=0).to_numpy()
    swapped.loc[~rich, money] = data.loc[rich, money].sample(int((~rich).sum()), replace=True, random_state=1).to_numpy()
    write(swapped, swapped.iloc[0:0], tmp_path / "flip.csv", "csv")
    ingest_file(tmp_path / "flip.csv")
    run = monitoring_run()
    assert run is not None and run.roc_auc is not None
    perf = run.results["performance"]
    assert perf["labelled"] >= 50 and perf["drop"] > 0.05
    assert ModelAlert.objects.filter(run=run, metric="roc_auc_drop").exists()


def test_the_monitoring_page_and_api_show_the_runs_to_staff_only(client, api, make_user, champion) -> None:  # type: ignore[no-untyped-def]
    monitoring_run()
    reviewer = make_user("reviewer")
    client.force_login(reviewer)
    page = client.get("/models/monitoring/")
    assert page.status_code == 200 and b"<svg" in page.content and b"predicted-mix PSI" in page.content
    client.force_login(make_user("field_officer"))
    assert client.get("/models/monitoring/").status_code == 403
    runs = api("data_scientist").get("/api/v1/models/monitoring/").json()["runs"]
    assert len(runs) == 1 and runs[0]["model_version"] == champion.version
    assert MonitoringRun.objects.count() == 1


def test_inputs_shifted_in_one_district_raise_a_drift_alert_naming_that_district(tmp_path, champion) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from django.utils import timezone

    from ingestion.models import SurveyRecord

    # The training records are older than the window: it holds only the new batch.
    SurveyRecord.objects.update(received_at=timezone.now() - timedelta(days=60))
    data, _ = generate(600, seed=2, bad_rate=0.0)
    shifted = data["district"] == "Kanungu"  # a season later there: bigger farms, more crops and people
    for column, change in {"agriculture_land": lambda s: s * 6 + 3, "season1_crops_planted": lambda s: s + 6,
                           "season2_crops_planted": lambda s: s + 6, "perennial_crops_grown": lambda s: s + 6,
                           "business_number": lambda s: s + 3, "household_size": lambda s: s + 6}.items():
        data[column] = pd.to_numeric(data[column], errors="coerce").astype("float64")
        data.loc[shifted, column] = change(data.loc[shifted, column])
    write(data, data.iloc[0:0], tmp_path / "kanungu.csv", "csv")
    ingest_file(tmp_path / "kanungu.csv")
    run = monitoring_run()
    assert run is not None and run.rows == 600
    assert run.results["by_district"]["Kanungu"]["drift"]
    alerts = ModelAlert.objects.filter(run=run, metric="feature_drift")
    district_alerts = [a for a in alerts if a.scope.startswith("district:")]
    assert [a.scope for a in district_alerts] == ["district:Kanungu"]
    assert "Kanungu" in district_alerts[0].message and district_alerts[0].value >= 0.25


def test_one_feature_far_off_its_training_distribution_raises_an_alert_without_drift(tmp_path, champion, settings) -> None:  # type: ignore[no-untyped-def]
    """The drift rule (half the features, or a top-five one) does not fire; the threshold still alerts."""
    from datetime import timedelta

    from django.utils import timezone

    from ingestion.models import SurveyRecord

    SurveyRecord.objects.update(received_at=timezone.now() - timedelta(days=60))
    top = set(champion.metrics.get("model_top_features", champion.metrics.get("top_features", []))[:5])
    field = next(f for f in ("time_to_water", "time_to_opd", "radios_owned") if f not in top)
    add(tmp_path, 400, seed=3, **{field: lambda s: s * 10 + 50})
    run = monitoring_run()
    assert run is not None and not run.drift
    assert run.results["overall"]["psi"][field] >= settings.RTV_MONITOR_PSI_ALERT
    alert = ModelAlert.objects.get(run=run, metric="feature_psi", scope="overall")
    assert field in alert.message and alert.threshold == settings.RTV_MONITOR_PSI_ALERT
    settings.RTV_MONITOR_PSI_ALERT = 1e6  # the setting is the threshold
    assert not ModelAlert.objects.filter(run=monitoring_run(), metric="feature_psi").exists()


def test_a_monitoring_run_that_fails_is_recorded_as_a_failed_job(tmp_path, champion) -> None:  # type: ignore[no-untyped-def]
    """The training snapshot it compares against is gone: the scheduled job says so on the staff
    pages (a failed run with the error), rather than only in a worker's log."""
    from django.core.files.storage import default_storage

    from modelling.tasks import monitor_task
    from rtv.models import PipelineRun

    add(tmp_path, 300, seed=2)
    default_storage.delete(champion.snapshot.file_key)
    result = monitor_task.apply(throw=False)
    assert result.failed()
    run = PipelineRun.objects.get(job="monitor")
    assert run.status == "failed" and run.error and run.finished_at is not None


def test_runs_a_dead_process_left_running_are_marked_failed_after_a_while() -> None:
    from datetime import timedelta

    from django.utils import timezone

    from rtv.models import PipelineRun
    from rtv.services import pipeline_runs_abandon

    old, recent = PipelineRun.objects.create(job="predict_batch"), PipelineRun.objects.create(job="train_model")
    PipelineRun.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(hours=7))
    assert pipeline_runs_abandon() == 1
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.status == "failed" and old.error.startswith("abandoned") and recent.status == "running"
