"""Predictions: real-time answers with confidence and reasons, the household view with its lineage,
batch scoring by COPY with a Parquet export, the per-process cache, A/B and shadow rollouts."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling import registry, serving
from modelling.batch import predictions_batch
from modelling.experiments import experiment_end, experiment_start
from modelling.models import Experiment, ModelVersion, Prediction
from modelling.promotion import model_promote, model_rollback
from modelling.services import model_train
from rtv.models import AuditEvent
from tests.payloads import household_payload

pytestmark = pytest.mark.django_db
STATUSES = {"On Track", "At Risk", "Struggling", "Severely Struggling"}
ROWS = generate(30, seed=77, bad_rate=0.0)[0]


def household(i: int = 0, **changes: Any) -> dict[str, Any]:
    return household_payload(ROWS, i, **changes)


@pytest.fixture
def records(tmp_path: Path) -> int:
    data, _ = generate(300, seed=31, bad_rate=0.0)
    write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    return ingest_file(tmp_path / "a.csv").accepted


@pytest.fixture
def champion(records: int) -> ModelVersion:
    serving.forget()
    return model_train(folds=2)  # two folds: these tests are about serving, not the model's quality


@pytest.fixture
def challenger(champion: ModelVersion) -> ModelVersion:
    return model_train(folds=2)


def test_a_payload_is_scored_with_probabilities_confidence_reasons_and_the_model(api, champion) -> None:  # type: ignore[no-untyped-def]
    resp = api("field_officer").post("/api/v1/predictions/", {"data": household(0)}, format="json")
    assert resp.status_code == 200, resp.json()
    out = resp.json()
    assert set(out["probabilities"]) == STATUSES
    assert math.isclose(sum(out["probabilities"].values()), 1, abs_tol=1e-5)
    vulnerable = out["probabilities"]["Struggling"] + out["probabilities"]["Severely Struggling"]
    assert math.isclose(vulnerable, out["probability_vulnerable"], abs_tol=1e-5)
    assert out["predicted_status"] in STATUSES
    assert out["predicted_vulnerable"] == (out["probability_vulnerable"] >= 0.5)
    conf = out["confidence"]
    assert math.isclose(conf["margin"], abs(out["probability_vulnerable"] - 0.5), abs_tol=1e-5)
    assert conf["borderline"] == (conf["margin"] < 0.1)
    assert conf["prediction_set"] and set(conf["prediction_set"]) <= STATUSES and conf["coverage"] == 0.9
    assert 1 <= len(out["reasons"]) <= 5
    for r in out["reasons"]:
        assert set(r) == {"feature", "label", "value", "contribution", "direction", "text"}
        assert r["text"].startswith(r["label"])
    assert out["model"] == {"name": champion.name, "version": champion.version, "variant": "champion",
                            "experiment": None, "bucket": None}
    assert out["stored"] is False and not Prediction.objects.filter(source="api").exists()


def submitted_on(officer: Any, i: int, days: list[str]) -> list[dict[str, Any]]:
    """Household ``i`` submitted once per date, in order; the receipts."""
    receipts = []
    for day in days:
        resp = officer.post("/api/v1/submissions/", {"submission_id": str(uuid.uuid4()), "collected_at": day,
                                                     "data": household(i)}, format="json")
        assert resp.status_code == 201, resp.json()
        receipts.append(resp.json())
    return receipts


def test_a_prediction_is_stored_only_when_asked(api, champion) -> None:  # type: ignore[no-untyped-def]
    client = api("reviewer")
    resp = client.post("/api/v1/predictions/",
                       {"household_id": "HH-NEW-1", "data": household(1, household_id="HH-NEW-1"), "store": True},
                       format="json")
    assert resp.status_code == 200 and resp.json()["stored"] is True
    stored = Prediction.objects.get(source="api")
    assert stored.household_id == "HH-NEW-1" and stored.requested_by == client.user and stored.record is None
    assert stored.payload["household_size"] == household(1)["household_size"]
    assert serving.prediction_body(stored)["reasons"] == resp.json()["reasons"]


def test_bad_payloads_get_400_naming_the_field_and_no_model_gets_503(api, records) -> None:  # type: ignore[no-untyped-def]
    client = api("field_officer")
    resp = client.post("/api/v1/predictions/", {"data": household(0)}, format="json")
    assert resp.status_code == 503 and resp.json()["code"] == "model_unavailable"
    resp = client.post("/api/v1/predictions/", {"data": household(0, household_size="many", colour=1)}, format="json")
    assert resp.status_code == 400
    fields = {e["field"] for e in resp.json()["errors"]}
    assert {"data.household_size", "data.colour"} <= fields
    assert client.post("/api/v1/predictions/", {"data": "x"}, format="json").status_code == 400
    assert api("partner").post("/api/v1/predictions/", {"data": household(0)}, format="json").status_code == 403


def test_submissions_answer_with_a_provisional_prediction_and_replays_repeat_it(api, champion) -> None:  # type: ignore[no-untyped-def]
    officer = api("field_officer")
    payload = {"submission_id": str(uuid.uuid4()), "collected_at": "2026-11-20T10:15:00+03:00", "data": household(2)}
    first = officer.post("/api/v1/submissions/", payload, format="json")
    assert first.status_code == 201
    prediction = first.json()["prediction"]
    assert prediction["model"]["version"] == champion.version and prediction["record_id"] == first.json()["id"]
    again = officer.post("/api/v1/submissions/", payload, format="json")
    assert again.status_code == 200 and again.json()["prediction"] == prediction
    assert Prediction.objects.filter(record_id=first.json()["id"], source="submission").count() == 1
    detail = officer.get(f"/api/v1/submissions/{payload['submission_id']}/")
    assert detail.status_code == 200 and detail.json()["prediction"] == prediction  # the latest stored one


def test_a_dated_payload_is_scored_as_its_stored_twin_with_the_households_earlier_survey(  # type: ignore[no-untyped-def]
        api, champion) -> None:
    """Time since the previous survey is a feature: the API reads the household's earlier surveys
    for a dated payload, so it answers what the stored record was answered."""
    answers = [r["prediction"] for r in submitted_on(api("field_officer"), 8,
                                                     ["2026-02-02T09:00:00+03:00", "2026-10-05T09:00:00+03:00"])]
    again = api("reviewer").post("/api/v1/predictions/", {"collected_at": "2026-10-05T09:00:00+03:00",
                                                          "data": household(8)}, format="json").json()
    assert again["probability_vulnerable"] == answers[1]["probability_vulnerable"]
    assert again["reasons"] == answers[1]["reasons"]


def test_the_household_view_shows_latest_record_status_prediction_and_lineage(api, champion) -> None:  # type: ignore[no-untyped-def]
    predictions_batch(export=False)
    record = SurveyRecord.objects.select_related("household", "batch").order_by("pk").first()
    assert record is not None
    hid = record.household.household_id
    resp = api("reviewer").get(f"/api/v1/households/{hid}/")
    assert resp.status_code == 200, resp.json()
    out = resp.json()
    assert out["record"]["id"] == record.pk and out["status"]["review"] == record.review_status
    assert out["prediction"]["record_id"] == record.pk
    lineage = out["lineage"]
    assert lineage["record"]["version"] == record.version
    assert lineage["ingestion_batch"]["id"] == str(record.batch_id) and lineage["ingestion_batch"]["sha256"]
    assert lineage["feature_snapshot"]["id"] == str(champion.snapshot_id)
    assert lineage["model_version"] == {"name": champion.name, "version": champion.version,
                                        "mlflow_run_id": champion.mlflow_run_id, "algorithm": champion.algorithm}
    assert api("reviewer").get("/api/v1/households/NOPE/").status_code == 404


def test_batch_scoring_fills_the_gaps_then_rescores_all_when_the_champion_changes(records, challenger) -> None:  # type: ignore[no-untyped-def]
    champion = ModelVersion.objects.get(version=1)
    assert Prediction.objects.filter(model_version=champion).count() == 0  # training scored nothing by itself
    first = predictions_batch(chunk=120)  # three chunks
    assert first["scored"] == records == Prediction.objects.filter(model_version=champion).count()
    with default_storage.open(first["export"], "rb") as fh:
        exported = pd.read_parquet(io.BytesIO(fh.read()))
    assert first["export"].startswith("predictions/") and len(exported) == records
    assert set(exported["record_id"]) == set(SurveyRecord.objects.values_list("pk", flat=True))
    assert json.loads(exported["reasons"].iloc[0])  # the reasons travel with the scores
    assert predictions_batch()["scored"] == 0  # nothing stale: nothing scored twice
    model_promote(version=challenger.version, user=None, force=True)
    again = predictions_batch()
    assert again["scored"] == records == Prediction.objects.filter(model_version=challenger).count()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the roles' groups come back after
def test_the_overlapped_batch_job_stores_what_the_sequential_one_does(records, champion) -> None:  # type: ignore[no-untyped-def]
    """Reading the next chunk and writing the last two on their own connections while one is scored
    changes nothing stored: the same predictions, each record once per run, and the export."""
    from django.db import transaction

    with transaction.atomic():  # inside a transaction the stages run one after another
        sequential = predictions_batch(everything=True, chunk=70, export=False)
    overlapped = predictions_batch(everything=True, chunk=70)  # five chunks
    assert (sequential["overlapped"], overlapped["overlapped"]) == (False, True)
    assert overlapped["scored"] == sequential["scored"] == records
    stored: dict[int, list[tuple[Any, ...]]] = {}
    for row in Prediction.objects.filter(source="batch").values_list(
            "record_id", "probability_vulnerable", "predicted_status", "prediction_set", "reasons", "model_version"):
        stored.setdefault(row[0], []).append(row[1:])
    assert len(stored) == records and all(len(v) == 2 and v[0] == v[1] for v in stored.values())
    with default_storage.open(overlapped["export"], "rb") as fh:
        assert sorted(pd.read_parquet(io.BytesIO(fh.read()))["record_id"]) == sorted(stored)


def test_the_batch_reads_only_the_fields_its_models_read_and_scores_as_with_all_of_them(records, champion) -> None:  # type: ignore[no-untyped-def]
    fields = serving.scoring_fields([champion])
    assert fields is not None and "district" in fields and "household_income" not in fields  # no money column
    predictions_batch(everything=True, export=False)
    stored = dict(Prediction.objects.filter(source="batch").values_list("record_id", "probability_vulnerable"))
    every = serving.records_frame(SurveyRecord.objects.order_by("pk"))  # every survey field
    full = serving.model_for(champion).score(every)
    assert np.allclose([stored[pk] for pk in every["_record"]], full.p_vulnerable, rtol=0, atol=1e-12)


def test_predict_batch_command_reports_its_rate(records, champion) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    call_command("predict_batch", "--json", "--no-export", stdout=out)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["scored"] == records and summary["export"] is None and summary["rows_per_s"] > 0


def test_an_alias_move_takes_effect_within_the_ttl_without_a_restart(settings, challenger) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_MODEL_ALIAS_TTL = 0.3
    serving.forget()
    assert serving.champion().version == 1  # type: ignore[union-attr]
    registry.set_alias(challenger.name, registry.CHAMPION, challenger.version)  # moved elsewhere (another process)
    assert serving.champion().version == 1  # type: ignore[union-attr]  # still trusted
    time.sleep(0.35)
    assert serving.champion().version == challenger.version  # type: ignore[union-attr]
    registry._load.cache_clear()
    frame = serving.records_frame(SurveyRecord.objects.order_by("pk")[:3])
    for _ in range(3):
        serving.predictions_make(frame, household_ids=[None] * 3, store=False)
    assert registry._load.cache_info().misses == 1  # loaded once for the resolved version, not per request


def test_a_loaded_model_is_out_of_the_garbage_collectors_way(champion) -> None:  # type: ignore[no-untyped-def]
    """A full collection never walks a model's objects: one that did paused a web worker for 145 ms."""
    registry._load.cache_clear()
    model = serving.model_for(champion)
    assert gc.get_freeze_count() > 0
    assert not any(obj is model for obj in gc.get_objects())  # the permanent generation is not listed


def test_threads_asking_for_a_model_at_once_load_it_once(champion) -> None:  # type: ignore[no-untyped-def]
    """Threads (the batch job's stages, a threaded server) can meet a model not yet loaded together."""
    registry._load.cache_clear()
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: serving.model_for(champion), range(4)))
    assert all(m is models[0] for m in models)
    assert registry._load.cache_info().misses == 1


def test_assignment_is_sticky_reproducible_and_ramps_without_sending_anyone_back() -> None:
    digest = hashlib.sha256(b"exp-1:HH-42").digest()
    assert serving.bucket_of("exp-1", "HH-42") == int.from_bytes(digest[:8], "big") % 10_000
    ids = [f"HH-{i}" for i in range(4000)]
    buckets = [serving.bucket_of("exp-1", h) for h in ids]
    at_10 = {h for h, b in zip(ids, buckets, strict=True) if b < 1000}
    at_20 = {h for h, b in zip(ids, buckets, strict=True) if b < 2000}
    assert at_10 <= at_20 and 0.08 < len(at_10) / len(ids) < 0.12
    assert buckets != [serving.bucket_of("exp-2", h) for h in ids]  # each experiment draws afresh


def test_ab_traffic_goes_to_the_arm_its_bucket_says_and_every_prediction_records_it(api, challenger) -> None:  # type: ignore[no-untyped-def]
    exp = experiment_start(name="ramp", challenger=challenger, traffic_share=0.5)
    client = api("reviewer")
    seen = {}
    for i in range(12):
        hid = f"HH-AB-{i}"
        out = client.post("/api/v1/predictions/", {"household_id": hid, "data": household(i, household_id=hid), "store": True},
                          format="json").json()
        bucket = serving.bucket_of("ramp", hid)
        assert out["model"]["bucket"] == bucket and out["model"]["experiment"] == "ramp"
        expected = "challenger" if bucket < 5000 else "champion"
        assert out["model"]["variant"] == expected
        assert out["model"]["version"] == (challenger.version if expected == "challenger" else exp.champion.version)
        seen[hid] = out["model"]["variant"]
    again = client.post("/api/v1/predictions/", {"household_id": "HH-AB-3", "data": household(3, household_id="HH-AB-3")},
                        format="json")
    assert again.json()["model"]["variant"] == seen["HH-AB-3"]  # sticky
    stored = Prediction.objects.filter(experiment=exp)
    assert stored.count() == 12 and set(stored.values_list("variant", flat=True)) <= {"champion", "challenger"}
    assert all(p.bucket == serving.bucket_of("ramp", p.household_id) for p in stored)
    assert AuditEvent.objects.filter(action="experiment.started").exists()


def test_a_new_champion_ends_the_experiment_that_compared_against_the_old_one(api, challenger) -> None:  # type: ignore[no-untyped-def]
    """Else the experiment would go on answering its share of households with the old champion."""
    exp = experiment_start(name="before-promotion", challenger=challenger, traffic_share=0.5)
    model_promote(version=challenger.version, user=None, force=True)
    exp.refresh_from_db()
    assert exp.active is False and exp.ended_at is not None
    assert AuditEvent.objects.get(action="experiment.ended").changes == {
        "reason": f"the champion changed to version {challenger.version}"}
    for i in range(6):
        hid = f"HH-P-{i}"
        out = api("reviewer").post("/api/v1/predictions/", {"household_id": hid, "data": household(i, household_id=hid)},
                                   format="json").json()
        assert out["model"]["version"] == challenger.version and out["model"]["experiment"] is None


def test_a_chunk_of_no_rows_is_refused_not_silently_empty(records) -> None:  # type: ignore[no-untyped-def]
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="positive number of rows"):
        call_command("predict_batch", "--chunk", "-5", stdout=io.StringIO())


def test_an_ab_test_started_after_a_batch_gets_the_challenger_arm_scored(challenger) -> None:  # type: ignore[no-untyped-def]
    """The champion's answers for households the experiment gives the challenger are not current."""
    predictions_batch(everything=True)
    exp = experiment_start(name="late-ab", challenger=challenger, traffic_share=0.5)
    records = list(SurveyRecord.objects.filter(superseded_by__isnull=True).values_list("pk", "household__household_id"))
    arm = {pk: serving.bucket_of("late-ab", hid) < 5000 for pk, hid in records}
    first = predictions_batch()
    assert first["scored"] == sum(arm.values()) > 0
    got = set(Prediction.objects.filter(experiment=exp, variant="challenger").values_list("record_id", flat=True))
    assert got == {pk for pk, to_challenger in arm.items() if to_challenger}
    assert predictions_batch()["scored"] == 0  # each arm current now


def test_starting_ramping_and_ending_an_experiment_rescore_the_households_that_change_arm(
        challenger, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    """Each change queues the batch job after commit: nobody waits for the nightly run."""
    from modelling.experiments import experiment_change

    predictions_batch(everything=True, export=False)
    ids = list(SurveyRecord.objects.filter(superseded_by__isnull=True).values_list("pk", flat=True))

    def answering() -> dict[int, str]:
        return {pk: p.variant for pk, p in serving.latest_predictions(ids).items()}

    with django_capture_on_commit_callbacks(execute=True):
        exp = experiment_start(name="rescored", challenger=challenger, traffic_share=0.2)
    share = answering()
    assert 0 < sum(v == "challenger" for v in share.values()) < len(ids)
    with django_capture_on_commit_callbacks(execute=True):
        experiment_change(experiment=exp, user=None, traffic_share=0.6, shadow=False)
    ramped = answering()
    assert sum(v == "challenger" for v in ramped.values()) > sum(v == "challenger" for v in share.values())
    with django_capture_on_commit_callbacks(execute=True):
        experiment_end(experiment=exp)
    assert set(answering().values()) == {"champion"}
    assert predictions_batch(export=False)["scored"] == 0  # nothing left stale


def test_after_a_rollback_every_household_gets_the_restored_champions_answer_again(api, records, challenger) -> None:  # type: ignore[no-untyped-def]
    """The restored champion had scored every record before; its answers were no longer the latest."""
    champion = ModelVersion.objects.get(version=1)
    predictions_batch(export=False)
    model_promote(version=challenger.version, user=None, force=True)
    assert predictions_batch(export=False)["scored"] == records
    model_rollback(user=None)
    assert predictions_batch(export=False)["scored"] == records
    latest = serving.latest_predictions(list(SurveyRecord.objects.values_list("pk", flat=True)))
    assert {p.model_version_id for p in latest.values()} == {champion.pk}
    record = SurveyRecord.objects.order_by("pk").first()
    assert record is not None
    out = api("reviewer").get(f"/api/v1/households/{record.household.household_id}/").json()
    assert out["prediction"]["model"]["version"] == champion.version == out["lineage"]["model_version"]["version"]
    assert predictions_batch(export=False)["scored"] == 0


def test_when_an_experiment_ends_its_challengers_households_go_back_to_the_champion(challenger) -> None:  # type: ignore[no-untyped-def]
    predictions_batch(everything=True, export=False)
    exp = experiment_start(name="ends", challenger=challenger, traffic_share=0.5)
    moved = predictions_batch(export=False)["scored"]
    assert moved > 0
    experiment_end(experiment=exp)
    assert predictions_batch(export=False)["scored"] == moved
    latest = serving.latest_predictions(list(SurveyRecord.objects.values_list("pk", flat=True)))
    assert {(p.model_version_id, p.variant) for p in latest.values()} == {(exp.champion_id, "champion")}


def test_a_household_is_in_one_arm_whichever_door_scores_it(api, challenger) -> None:  # type: ignore[no-untyped-def]
    """Submissions and the batch job trim the id; so does the prediction API before bucketing."""
    experiment_start(name="doors", challenger=challenger, traffic_share=0.5)
    client = api("reviewer")
    for hid in (" HH-SPACE ", "HH-SPACE"):
        out = client.post("/api/v1/predictions/", {"data": household(5, household_id=hid), "store": True},
                          format="json").json()
        assert out["model"]["bucket"] == serving.bucket_of("doors", "HH-SPACE")
    assert set(Prediction.objects.filter(source="api").values_list("household_id", flat=True)) == {"HH-SPACE"}


def test_a_payload_naming_two_households_is_refused_and_nothing_is_scored(api, champion) -> None:  # type: ignore[no-untyped-def]
    client = api("reviewer")
    resp = client.post("/api/v1/predictions/", {"household_id": "HH-ONE", "data": household(2, household_id="HH-TWO"),
                                                "store": True}, format="json")
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "invalid_payload"
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("household_id", "conflict")]
    assert not Prediction.objects.exists()
    # The same household named twice (spaces aside) is one household.
    same = client.post("/api/v1/predictions/", {"household_id": "HH-ONE", "data": household(2, household_id=" HH-ONE "),
                                                "store": True}, format="json")
    assert same.status_code == 200
    assert list(Prediction.objects.values_list("household_id", flat=True)) == ["HH-ONE"]


def test_the_household_may_be_named_once_at_the_top(api, champion) -> None:  # type: ignore[no-untyped-def]
    data = household(3)
    data.pop("household_id")
    resp = api("reviewer").post("/api/v1/predictions/", {"household_id": "HH-TOP", "data": data, "store": True},
                                format="json")
    assert resp.status_code == 200, resp.json()
    assert Prediction.objects.get().household_id == "HH-TOP"


@pytest.mark.parametrize("path", ["HH%00X", "H" * 65])
def test_a_household_id_no_record_can_have_is_a_404(api, path: str) -> None:  # type: ignore[no-untyped-def]
    resp = api("reviewer").get(f"/api/v1/households/{path}/")
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"


def test_shadow_mode_scores_both_and_answers_with_the_champion(api, challenger, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exp = experiment_start(name="shadow-1", challenger=challenger, traffic_share=1.0, shadow=True)
    later, _ = generate(80, seed=32, bad_rate=0.0)  # records neither model trained on
    write(later, later.iloc[0:0], tmp_path / "later.csv", "csv")
    unseen = ingest_file(tmp_path / "later.csv").records.filter(review_status="approved").count()
    out = api("reviewer").post("/api/v1/predictions/",
                               {"household_id": "HH-S", "data": household(4, household_id="HH-S"), "store": True},
                               format="json").json()
    assert out["model"]["variant"] == "champion" and out["model"]["version"] == exp.champion.version
    stored = {p.variant: p for p in Prediction.objects.filter(experiment=exp)}
    assert set(stored) == {"champion", "shadow"} and stored["shadow"].model_version == challenger
    result = predictions_batch(everything=True)
    assert result["scored"] == SurveyRecord.objects.filter(superseded_by__isnull=True).count()  # not twice that
    report = api("data_scientist").get(f"/api/v1/experiments/{exp.pk}/report/").json()
    assert report["mode"] == "shadow" and report["records"] > 0
    assert 0 <= report["agreement"]["vulnerable"] <= 1
    # Compared on the labelled records neither trained on: on their own training rows both look better.
    assert report["paired"]["labelled"] == unseen > 0 and "difference" in report["paired"]
    assert report["paired"]["left_out_as_trained_on"] == challenger.training_rows
    assert report["served"]["shadow"] >= report["records"]


def test_experiments_are_started_and_ended_by_data_scientists_only(api, challenger) -> None:  # type: ignore[no-untyped-def]
    body = {"name": "via-api", "challenger": challenger.version, "traffic_share": 0.2}
    assert api("reviewer").post("/api/v1/experiments/", body, format="json").status_code == 403
    scientist = api("data_scientist")
    resp = scientist.post("/api/v1/experiments/", body, format="json")
    assert resp.status_code == 201 and resp.json()["active"] is True
    assert scientist.post("/api/v1/experiments/", body, format="json").status_code == 409  # names are never reused
    bad = scientist.post("/api/v1/experiments/", {**body, "name": "x", "challenger": 99}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "challenger"
    ended = scientist.post(f"/api/v1/experiments/{resp.json()['id']}/end/")
    assert ended.status_code == 200 and not Experiment.objects.filter(active=True).exists()


def test_serving_frames_carry_the_survey_date_and_the_households_previous_one(api) -> None:  # type: ignore[no-untyped-def]
    hid = household(5)["household_id"]
    submitted_on(api("field_officer"), 5, ["2026-03-02T09:00:00+03:00", "2026-09-14T09:00:00+03:00"])
    frame = serving.records_frame(SurveyRecord.objects.filter(household__household_id=hid).order_by("collected_at"))
    assert pd.isna(frame["previous_collected_at"].iloc[0])
    assert frame["previous_collected_at"].iloc[1] == frame["collected_at"].iloc[0]
    from features.pipeline import SurveyFeatures

    features = SurveyFeatures().fit(frame).transform(frame)
    assert math.isclose(features["days_since_previous_survey"].iloc[1], 196, abs_tol=0.01)
    assert features["rainy_season"].tolist() == [1.0, 1.0]  # March and September


def test_the_household_view_shows_the_latest_survey_not_the_latest_correction(api) -> None:  # type: ignore[no-untyped-def]
    officer = api("field_officer")
    january, march = submitted_on(officer, 7, ["2026-01-10T09:00:00+03:00", "2026-03-10T09:00:00+03:00"])
    hid = household(7)["household_id"]
    fix = officer.post("/api/v1/submissions/", {"submission_id": str(uuid.uuid4()), "supersedes": january["submission_id"],
                                                "collected_at": "2026-01-10T09:00:00+03:00",
                                                "data": household(7, household_size=4)}, format="json")
    assert fix.status_code == 201, fix.json()
    out = api("reviewer").get(f"/api/v1/households/{hid}/").json()
    assert out["record"]["id"] == march["id"] and out["lineage"]["record"]["version"] == 1


def test_a_prediction_payloads_time_must_say_its_offset(api, champion) -> None:  # type: ignore[no-untyped-def]
    resp = api("reviewer").post("/api/v1/predictions/", {"collected_at": "2026-03-10T09:00:00", "data": household(0)},
                                format="json")
    assert resp.status_code == 400
    assert [e["field"] for e in resp.json()["errors"]] == ["collected_at"]


def test_an_unsaved_payload_gets_the_households_latest_earlier_survey(api) -> None:  # type: ignore[no-untyped-def]
    """The prediction API scores payloads that are not stored: their previous survey is the
    household's latest one before the payload's date, as it will be once the payload is saved."""
    hid = household(6)["household_id"]
    submitted_on(api("field_officer"), 6, ["2026-03-02T09:00:00+03:00", "2026-09-14T09:00:00+03:00"])
    pk = SurveyRecord.objects.filter(household__household_id=hid).values_list("household_id", flat=True).first()
    payloads = pd.DataFrame({"collected_at": ["2026-11-20T10:00:00+03:00", "2026-06-01T10:00:00+03:00",
                                              "2026-03-02T09:00:00+03:00", "2026-01-01T10:00:00+03:00", None]})
    out = serving.with_previous_survey(payloads, np.array([pk] * 5))
    expected = ["2026-09-14T06:00:00Z", "2026-03-02T06:00:00Z", None, None, None]
    assert [None if pd.isna(t) else t.isoformat().replace("+00:00", "Z") for t in out["previous_collected_at"]] == expected


def test_the_previous_survey_is_the_same_for_a_request_and_a_batch() -> None:
    """A request's few rows are matched in plain Python, a batch by ``merge_asof``: same answers."""
    rng = np.random.default_rng(3)
    base = pd.Timestamp("2025-01-01", tz="UTC").value
    history = [(int(h), pd.Timestamp(base + int(d) * 86_400 * 10**9, tz="UTC").to_pydatetime())
               for h, d in zip(rng.integers(0, 12, 300), rng.integers(0, 400, 300), strict=True)]
    households = rng.integers(0, 15, 200)
    ns = base + rng.integers(0, 400, 200) * 86_400 * 10**9 + rng.choice([0, 3600 * 10**9], 200)
    known = rng.random(200) > 0.1
    batch = serving._previous_dates(history, households, ns, known)
    small = serving.SMALL_BATCH
    assert len(households) > small
    pieces = [serving._previous_dates(history, households[i:i + small], ns[i:i + small], known[i:i + small])
              for i in range(0, 200, small)]
    assert np.array_equal(np.concatenate(pieces), batch)
    for i in range(200):  # and both are the definition
        times = [pd.Timestamp(t).value for h, t in history if h == households[i] and pd.Timestamp(t).value < ns[i]]
        assert batch[i] == (max(times) if times and known[i] else serving.NAT)


def test_records_read_by_copy_hold_the_same_values_as_through_the_orm(records) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection

    from ingestion.models import SURVEY_VALUE_FIELDS

    if connection.vendor != "postgresql":
        pytest.skip("COPY is the PostgreSQL path")
    qs = SurveyRecord.objects.order_by("pk")
    fast = serving.records_frame(qs)
    rows = list(qs.values_list("pk", "household_id", "household__household_id", "collected_at",
                               *(f"values__{f}" for f in SURVEY_VALUE_FIELDS)))
    slow = pd.DataFrame.from_records(rows, columns=serving.RECORD_COLUMNS)
    few = serving.records_frame(qs, few=True)  # a request's worth is read through the ORM
    assert len(fast) == len(slow) == len(few) == records

    def plain(values: pd.Series) -> list[Any]:
        return [None if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)) else v
                for v in values.tolist()]

    for column in serving.RECORD_COLUMNS:
        assert plain(fast[column]) == plain(slow[column]), column
        assert plain(few[column]) == plain(slow[column]) or column == "collected_at", column  # few: parsed dates
    assert plain(fast["collected_at"]) == plain(few["collected_at"])
    assert plain(fast["previous_collected_at"]) == plain(few["previous_collected_at"])


def test_experiments_are_started_ramped_and_ended_in_the_admin_with_an_audit(client, make_user, challenger) -> None:  # type: ignore[no-untyped-def]
    champion = ModelVersion.objects.get(version=1)
    client.force_login(make_user("data_scientist"))
    add = client.post("/admin/modelling/experiment/add/",
                      {"name": "admin-ab", "challenger": challenger.pk, "traffic_share": "0.2"})
    assert add.status_code == 302, add.content[:2000]
    exp = Experiment.objects.get(name="admin-ab")
    assert exp.active and exp.champion == champion and exp.challenger == challenger and exp.traffic_share == 0.2
    ramp = client.post(f"/admin/modelling/experiment/{exp.pk}/change/", {"traffic_share": "0.5"})
    assert ramp.status_code == 302
    exp.refresh_from_db()
    assert exp.traffic_share == 0.5
    assert AuditEvent.objects.filter(action="experiment.changed", changes__traffic_share=[0.2, 0.5]).exists()
    client.post("/admin/modelling/experiment/", {"action": "end", "_selected_action": [exp.pk]})
    exp.refresh_from_db()
    assert not exp.active and exp.ended_at is not None
    # An ended experiment is a record of what ran: its share and mode no longer change.
    client.post(f"/admin/modelling/experiment/{exp.pk}/change/", {"traffic_share": "0.9", "shadow": "on"})
    exp.refresh_from_db()
    assert (exp.traffic_share, exp.shadow) == (0.5, False)
    assert not AuditEvent.objects.filter(action="experiment.changed", changes__traffic_share=0.9).exists()
    # A challenger that is the champion is refused in the form, with the reason (not a 500).
    same = client.post("/admin/modelling/experiment/add/",
                       {"name": "self", "challenger": champion.pk, "traffic_share": "0.2"})
    assert same.status_code == 200 and b"is the champion: choose another challenger" in same.content
    assert not Experiment.objects.filter(name="self").exists()
    client.force_login(make_user("reviewer"))
    assert client.get("/admin/modelling/experiment/add/").status_code == 403


def test_a_month_reason_names_the_month_of_the_survey_row_by_row_and_column_wise() -> None:
    """The model sees the month as a sine and a cosine; the reason shows the month (East Africa Time)."""
    from modelling.scoring import Scores

    n = SMALL_ROWS = 300  # past the row-by-row threshold for the column-wise JSON
    frame = pd.DataFrame({"collected_at": ["2026-03-05T10:00:00+03:00", "2026-02-28T22:30:00Z", None] * (n // 3)})
    scores = Scores(p_vulnerable=np.full(n, 0.6), statuses=["On Track", "Struggling"], status_proba=np.full((n, 2), 0.5),
                    predicted_status=np.array(["Struggling"] * n, dtype=object), predicted_vulnerable=np.ones(n, bool),
                    margin=np.full(n, 0.1), borderline=np.zeros(n, bool), in_set=np.ones((n, 2), bool),
                    reason_source=np.zeros((n, 1), dtype=np.int64), reason_contribution=np.full((n, 1), 0.25),
                    sources=["collected_month"], frame=frame)
    first, second, third = scores.reasons(0)[0], scores.reasons(1)[0], scores.reasons(2)[0]
    assert (first["value"], second["value"], third["value"]) == (3, 3, None)  # 22:30 UTC on 28 Feb is March in Kampala
    assert first["label"] == "Month of the survey" and first["text"].startswith("Month of the survey: 3 raises")
    assert SMALL_ROWS > serving.SMALL_BATCH
    _, _, reasons = serving._json_by_column(scores)
    assert [json.loads(reasons[i])[0][1] for i in range(3)] == [3, 3, None]
