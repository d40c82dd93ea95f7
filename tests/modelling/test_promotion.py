"""The champion moves only through the gate (or a recorded force), and rolls back to the previous one."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling import registry
from modelling.models import ModelEvent, ModelVersion, RetrainDecision
from modelling.promotion import PromotionRefused, model_promote, model_rollback
from modelling.services import model_train
from rtv.models import AuditEvent

pytestmark = pytest.mark.django_db
NAME = "rtv-vulnerability"


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[ModelVersion, ModelVersion]:
    data, _ = generate(300, seed=31)
    write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    ingest_file(tmp_path / "a.csv")
    first = model_train(folds=2)  # two folds: these tests are about the registry, not the model
    second = model_train(folds=2)
    return first, second


def set_metrics(mv: ModelVersion, **metrics: float) -> None:
    mv.metrics = {**mv.metrics, **metrics}
    mv.save(update_fields=["metrics"])


def test_the_first_model_becomes_champion_through_the_gate(two_versions) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version
    assert registry.alias_version(NAME, registry.CHALLENGER) == second.version
    event = ModelEvent.objects.get(action="promote")
    assert (event.from_version, event.to_version, event.gate["reason"]) == (None, first.version, "no champion yet")


def test_a_challenger_that_beats_the_champion_is_promoted_and_audited(two_versions, make_user) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    set_metrics(first, roc_auc=0.75, exclusion_error_at_40=0.40, brier=0.20)
    set_metrics(second, roc_auc=0.78, exclusion_error_at_40=0.36, brier=0.19)
    scientist = make_user("data_scientist")
    model_promote(version=second.version, user=scientist)
    assert registry.alias_version(NAME, registry.CHAMPION) == second.version
    assert ModelVersion.objects.get(pk=second.pk).aliases.count("champion") == 1
    assert "champion" not in ModelVersion.objects.get(pk=first.pk).aliases
    audit = AuditEvent.objects.get(action="model.promoted", actor=scientist)
    assert audit.actor == scientist and audit.changes["champion"] == [first.version, second.version]


@pytest.mark.parametrize(("metrics", "failing"), [
    ({"roc_auc": 0.74, "exclusion_error_at_40": 0.30, "brier": 0.18}, "roc_auc"),
    ({"roc_auc": 0.80, "exclusion_error_at_40": 0.45, "brier": 0.18}, "exclusion_error_at_40"),
    ({"roc_auc": 0.80, "exclusion_error_at_40": 0.30, "brier": 0.25}, "brier"),
])
def test_the_gate_refuses_a_challenger_that_is_worse_on_any_criterion(two_versions, metrics, failing) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    set_metrics(first, roc_auc=0.75, exclusion_error_at_40=0.40, brier=0.20)
    set_metrics(second, **metrics)
    with pytest.raises(PromotionRefused) as exc:
        model_promote(version=second.version, user=None)
    assert failing in str(exc.value) and exc.value.gate["checks"][failing]["passed"] is False
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version


def test_force_promotes_and_says_so(two_versions) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    set_metrics(first, roc_auc=0.80, exclusion_error_at_40=0.30, brier=0.18)
    set_metrics(second, roc_auc=0.70, exclusion_error_at_40=0.50, brier=0.25)
    model_promote(version=second.version, user=None, force=True)
    assert ModelEvent.objects.get(to_version=second.version).forced is True


def test_rollback_returns_the_previous_champion(two_versions) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    set_metrics(second, roc_auc=0.99, exclusion_error_at_40=0.01, brier=0.01)
    model_promote(version=second.version, user=None)
    back = model_rollback(user=None)
    assert back.version == first.version == registry.alias_version(NAME, registry.CHAMPION)
    assert ModelEvent.objects.filter(action="rollback", from_version=second.version, to_version=first.version).exists()
    with pytest.raises(PromotionRefused):
        model_rollback(user=None)  # the first champion has nothing before it


def test_the_commands_and_the_api_use_the_same_gate(two_versions, api) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    set_metrics(first, roc_auc=0.80, exclusion_error_at_40=0.30, brier=0.18)
    set_metrics(second, roc_auc=0.70, exclusion_error_at_40=0.50, brier=0.25)
    with pytest.raises(CommandError, match="does not beat"):
        call_command("promote_model", str(second.version), stdout=StringIO())
    scientist = api("data_scientist")
    refused = scientist.post(f"/api/v1/models/{second.version}/promote/", {}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "promotion_refused"
    assert refused.json()["gate"]["checks"]["roc_auc"]["passed"] is False
    listing = scientist.get("/api/v1/models/").json()
    assert listing["champion"] == first.version and [v["version"] for v in listing["versions"]] == [2, 1]
    assert scientist.post(f"/api/v1/models/{second.version}/promote/", {"force": True}, format="json").status_code == 200
    assert scientist.post("/api/v1/models/rollback/", {}, format="json").json()["version"] == first.version
    call_command("promote_model", str(second.version), "--force", stdout=StringIO())
    call_command("rollback_model", stdout=StringIO())
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version


@pytest.mark.parametrize(("role", "status"), [("field_officer", 403), ("reviewer", 403), ("partner", 403)])
def test_only_data_scientists_and_admins_move_models(api, role: str, status: int) -> None:  # type: ignore[no-untyped-def]
    client = api(role)
    assert client.post("/api/v1/models/1/promote/", {}, format="json").status_code == status
    assert client.post("/api/v1/models/rollback/", {}, format="json").status_code == status
    assert client.post("/api/v1/models/retrain/", {}, format="json").status_code == status


def test_retrain_is_queued_through_the_outbox(api) -> None:  # type: ignore[no-untyped-def]
    from rtv.models import OutboxMessage

    resp = api("data_scientist").post("/api/v1/models/retrain/", {}, format="json")
    assert resp.status_code == 202
    message = OutboxMessage.objects.get(task="modelling.train_and_score")
    # The manual trigger is a decision like the others, stored with who asked; the run is theirs too.
    decision = RetrainDecision.objects.get(pk=resp.json()["decision_id"])
    assert decision.fired == ["manual"] and decision.retrain_queued
    asker = decision.inputs["manual"]["requested_by"]
    assert asker and decision.inputs["manual"]["door"] == "api"
    event = AuditEvent.objects.get(action="model.retrain_requested")
    assert event.actor is not None and event.actor.get_username() == asker
    assert message.args == [event.actor.pk]


def test_the_admin_queues_training_and_promotes_through_the_gate(client, make_user, two_versions) -> None:  # type: ignore[no-untyped-def]
    from rtv.models import OutboxMessage

    first, second = two_versions
    set_metrics(first, roc_auc=0.80, exclusion_error_at_40=0.30, brier=0.18)
    set_metrics(second, roc_auc=0.70, exclusion_error_at_40=0.50, brier=0.25)
    client.force_login(make_user("admin"))
    url = "/admin/modelling/modelversion/"
    client.post(url, {"action": "retrain", "_selected_action": [second.pk]})
    assert OutboxMessage.objects.filter(task="modelling.train_and_score").exists()
    assert RetrainDecision.objects.get().inputs["manual"]["door"] == "admin"
    client.post(url, {"action": "promote", "_selected_action": [second.pk]})
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version  # refused by the gate


def test_a_version_is_seen_not_edited_in_the_admin(client, make_user, two_versions) -> None:  # type: ignore[no-untyped-def]
    """Its metrics are what training measured and its aliases move only with MLflow's, audited: the
    change form is a read-only view, even for those who may promote."""
    first, _ = two_versions
    page = f"/admin/modelling/modelversion/{first.pk}/change/"
    for role in ("data_scientist", "admin", "reviewer"):
        client.force_login(make_user(role))
        view = client.get(page)
        assert view.status_code == 200 and b'name="_save"' not in view.content, role
        edit = client.post(page, {"name": first.name, "version": first.version, "algorithm": "forged",
                                  "aliases": '["champion"]', "metrics": "{}", "training_rows": 1, "features": "[]"})
        assert edit.status_code == 403, role
    first.refresh_from_db()
    assert first.algorithm != "forged" and first.metrics.get("roc_auc") is not None
    client.force_login(make_user("field_officer"))
    assert client.get(page).status_code in (302, 403)


def test_a_challenger_is_compared_with_the_champion_on_the_same_unseen_records(tmp_path: Path) -> None:
    data, _ = generate(300, seed=41)
    write(data, data.iloc[0:0], tmp_path / "old.csv", "csv")
    ingest_file(tmp_path / "old.csv")
    first = model_train(folds=2)
    newer, _ = generate(120, seed=42)
    write(newer, newer.iloc[0:0], tmp_path / "new.csv", "csv")
    new = ingest_file(tmp_path / "new.csv")
    second = model_train(folds=2)
    comparison = second.metrics["comparison"]
    unseen = new.records.filter(review_status="approved").count()  # the training data the champion never saw
    assert comparison["holdout_rows"] == unseen > 100 and comparison["champion_version"] == first.version
    assert set(comparison["champion"]) >= {"roc_auc", "brier", "exclusion_error_at_40"}
    from modelling.promotion import promotion_gate

    gate = promotion_gate(second, first)
    assert gate["basis"].startswith(f"the same holdout of {unseen} records")
    assert gate["checks"]["roc_auc"]["champion"] == comparison["champion"]["roc_auc"]


def test_a_copy_of_the_champion_is_not_promoted(two_versions) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    assert "comparison" not in second.metrics  # same records: the gate compares the versions' own metrics
    set_metrics(second, **{k: first.metrics[k] for k in ("roc_auc", "exclusion_error_at_40", "brier")})
    with pytest.raises(PromotionRefused) as exc:
        model_promote(version=second.version, user=None)
    checks = exc.value.gate["checks"]
    assert checks["roc_auc"]["passed"] is False and checks["exclusion_error_at_40"]["passed"] is False  # a tie is no win
    assert checks["brier"]["passed"] is True  # equal calibration is not worse
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version


def test_the_admin_rolls_back_through_the_service_audited_and_for_admins_only(client, make_user, two_versions) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    set_metrics(second, roc_auc=0.99, exclusion_error_at_40=0.01, brier=0.01)
    model_promote(version=second.version, user=None)
    url = "/admin/modelling/modelversion/"
    rollback = {"action": "rollback", "_selected_action": [second.pk]}
    for role in ("reviewer", "data_manager"):  # staff who see the versions, but may not move models
        client.force_login(make_user(role))
        assert b'value="rollback"' not in client.get(url).content  # not offered ...
        assert client.post(url, rollback).status_code == 200  # ... nor run when posted anyway
    assert registry.alias_version(NAME, registry.CHAMPION) == second.version
    assert not ModelEvent.objects.filter(action="rollback").exists()

    admin = make_user("admin")
    client.force_login(admin)
    assert client.post(url, rollback).status_code == 302
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version
    assert "champion" in ModelVersion.objects.get(pk=first.pk).aliases
    event = ModelEvent.objects.get(action="rollback")
    assert (event.from_version, event.to_version, event.actor) == (second.version, first.version, admin)
    audit = AuditEvent.objects.get(action="model.rolled_back")
    assert audit.actor == admin and audit.changes["champion"] == [second.version, first.version]

    page = client.post(url, rollback, follow=True)  # nothing before the first champion: refused, said so
    assert b"no earlier champion" in page.content
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version


def date_records(records, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Collection dates that say something about the label (vulnerable households mostly surveyed in
    the rainy season), so a model's temporal features matter."""
    import datetime as dt

    from ingestion.models import SurveyRecord

    rng = np.random.default_rng(seed)
    for record in records:
        rainy = rng.random() < (0.75 if record.vulnerable else 0.25)
        month = int(rng.choice([3, 4, 5, 10, 11]) if rainy else rng.choice([1, 6, 7, 8, 12]))
        record.collected_at = dt.datetime(2025, month, int(rng.integers(1, 28)), 10, tzinfo=dt.UTC)
    SurveyRecord.objects.bulk_update(records, ["collected_at"])


def test_the_champion_is_compared_on_the_frame_serving_scores_dates_included(tmp_path: Path) -> None:
    from ingestion.models import SurveyRecord
    from modelling import serving
    from modelling.evaluation import evaluate

    data, _ = generate(300, seed=41)
    write(data, data.iloc[0:0], tmp_path / "old.csv", "csv")
    date_records(list(SurveyRecord.objects.filter(batch=ingest_file(tmp_path / "old.csv"))), seed=1)
    first = model_train(folds=2)
    newer, _ = generate(120, seed=42)
    write(newer, newer.iloc[0:0], tmp_path / "new.csv", "csv")
    date_records(list(SurveyRecord.objects.filter(batch=ingest_file(tmp_path / "new.csv"))), seed=2)
    second = model_train(folds=2)

    unseen = (SurveyRecord.objects.exclude(progress_status="").filter(review_status="approved", superseded_by__isnull=True,
                                                                      received_at__gt=first.training_cutoff).order_by("pk"))
    frame = serving.records_frame(unseen)
    assert frame["collected_at"].notna().all()
    y = np.array(unseen.values_list("vulnerable", flat=True), dtype=bool).astype(int)
    served = evaluate(y, serving.model_for(first).score(frame, explain=False).p_vulnerable)
    comparison = second.metrics["comparison"]
    assert comparison["holdout_rows"] == len(frame) >= 50
    for name in ("roc_auc", "brier", "exclusion_error_at_40", "inclusion_error_at_40", "accuracy"):
        assert comparison["champion"][name] == pytest.approx(served[name], abs=1e-9), name


def test_a_correction_of_a_record_the_champion_trained_on_is_not_in_the_holdout(tmp_path: Path, make_user) -> None:
    """On its own training rows (a value changed) the champion looks far better than it is: no
    challenger could pass a gate judged there."""
    from ingestion.models import SurveyRecord
    from quality.services import record_correct

    data, _ = generate(300, seed=51)
    write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    ingest_file(tmp_path / "a.csv")
    first = model_train(folds=2)
    reviewer = make_user("reviewer")
    for record in SurveyRecord.objects.filter(review_status="approved").order_by("pk")[:70]:
        record_correct(record=record, changes={"household_size": int(record.data["household_size"]) + 1}, reviewer=reviewer)
    newer, _ = generate(80, seed=52)
    write(newer, newer.iloc[0:0], tmp_path / "b.csv", "csv")
    new = ingest_file(tmp_path / "b.csv")
    second = model_train(folds=2)
    comparison = second.metrics["comparison"]
    assert comparison["champion_version"] == first.version
    assert comparison["holdout_rows"] == new.records.filter(review_status="approved").count()  # the corrections left out


def test_only_the_challenger_is_promoted_without_force_and_an_unknown_version_is_a_404(two_versions, api) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    third = model_train(folds=2)  # the challenger now
    for mv in (second, third):
        set_metrics(mv, roc_auc=0.99, exclusion_error_at_40=0.01, brier=0.01)
    with pytest.raises(PromotionRefused, match="not the challenger"):
        model_promote(version=second.version, user=None)
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version
    model_promote(version=second.version, user=None, force=True)  # a decision, on the record
    assert ModelEvent.objects.get(action="promote", to_version=second.version).forced is False  # the gate passed
    resp = api("data_scientist").post("/api/v1/models/999/promote/", {}, format="json")
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"


def test_the_commands_record_who_moved_the_model(two_versions, make_user) -> None:  # type: ignore[no-untyped-def]
    _first, second = two_versions
    set_metrics(second, roc_auc=0.99, exclusion_error_at_40=0.01, brier=0.01)
    scientist = make_user("data_scientist")
    call_command("promote_model", str(second.version), "--user", scientist.username, stdout=StringIO())
    call_command("rollback_model", "--user", scientist.username, stdout=StringIO())
    assert list(ModelEvent.objects.order_by("pk").values_list("action", "actor")[1:]) == [
        ("promote", scientist.pk), ("rollback", scientist.pk)]
    with pytest.raises(CommandError, match="no user named"):
        call_command("rollback_model", "--user", "nobody", stdout=StringIO())


def test_an_experiment_starts_against_the_champion_the_registry_names_now(two_versions) -> None:  # type: ignore[no-untyped-def]
    from modelling import serving
    from modelling.experiments import experiment_start
    from modelling.promotion import _move

    first, second = two_versions
    third = model_train(folds=2)
    assert serving.champion() == first  # cached in this process
    _move(NAME, second.version, None)  # as another process promotes (this one's cache is cleared by _move ...)
    serving._cache["champion"] = (serving.time.monotonic(), first)  # ... so put the stale answer back
    exp = experiment_start(name="fresh", challenger=third, traffic_share=0.5)
    assert exp.champion == second


def test_an_experiment_change_is_audited_as_before_and_after_and_a_no_op_is_not(client, make_user, two_versions) -> None:  # type: ignore[no-untyped-def]
    from modelling.experiments import experiment_start

    _first, second = two_versions
    exp = experiment_start(name="ramp-audit", challenger=second, traffic_share=0.1)
    client.force_login(make_user("data_scientist"))
    url = f"/admin/modelling/experiment/{exp.pk}/change/"
    assert client.post(url, {"traffic_share": "0.3"}).status_code == 302
    assert client.post(url, {"traffic_share": "0.3"}).status_code == 302  # nothing changes: nothing audited
    events = AuditEvent.objects.filter(action="experiment.changed")
    assert [e.changes for e in events] == [{"traffic_share": [0.1, 0.3]}]


def test_an_experiment_whose_challenger_is_the_champion_is_refused_by_name(api, two_versions) -> None:  # type: ignore[no-untyped-def]
    first, _ = two_versions
    resp = api("data_scientist").post("/api/v1/experiments/", {"name": "self", "challenger": first.version},
                                      format="json")
    assert resp.status_code == 400
    assert [e["field"] for e in resp.json()["errors"]] == ["challenger"]


def test_without_a_comparison_of_its_own_the_gate_scores_both_on_records_neither_trained_on(two_versions,  # type: ignore[no-untyped-def]
                                                                                           tmp_path: Path) -> None:
    from modelling.promotion import promotion_gate

    first, second = two_versions
    assert "comparison" not in second.metrics  # trained on the champion's records: nothing to compare on then
    gate = promotion_gate(second, first)
    assert gate["basis"].startswith("cross-validated metrics")  # nothing unseen yet
    later, _ = generate(120, seed=33)
    write(later, later.iloc[0:0], tmp_path / "later.csv", "csv")
    unseen = ingest_file(tmp_path / "later.csv").records.filter(review_status="approved").count()
    gate = promotion_gate(second, first)
    assert gate["basis"].startswith(f"the same holdout of {unseen} records neither version trained on")
    assert gate["checks"]["roc_auc"]["champion"] != first.metrics["roc_auc"]  # scored now, not its CV figure


@pytest.mark.parametrize(("margins", "failing"), [
    ({}, None),  # the defaults: a win on AUC and exclusion by any amount, Brier no worse than +0.005
    ({"RTV_PROMOTION_MARGIN_AUC": 0.02}, "roc_auc"),
    ({"RTV_PROMOTION_MARGIN_EXCLUSION": 0.02}, "exclusion_error_at_40"),
    ({"RTV_PROMOTION_MARGIN_BRIER": 0.0}, "brier"),
])
def test_the_gate_margins_are_configuration(two_versions, settings, margins, failing) -> None:  # type: ignore[no-untyped-def]
    first, second = two_versions
    set_metrics(first, roc_auc=0.75, exclusion_error_at_40=0.40, brier=0.200)
    set_metrics(second, roc_auc=0.76, exclusion_error_at_40=0.39, brier=0.203)
    for name, value in margins.items():
        setattr(settings, name, value)
    if failing is None:
        model_promote(version=second.version, user=None)
        assert registry.alias_version(NAME, registry.CHAMPION) == second.version
        return
    with pytest.raises(PromotionRefused) as exc:
        model_promote(version=second.version, user=None)
    failed = [name for name, check in exc.value.gate["checks"].items() if not check["passed"]]
    assert failed == [failing]


def test_a_new_champion_rescores_the_households_without_waiting_for_the_nightly_job(
        two_versions, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    """Promotion and rollback each queue the batch job (outbox, after commit): the households' latest
    predictions are the new champion's at once, not from the next 02:30 run on."""
    from ingestion.models import SurveyRecord
    from modelling.models import Prediction
    from modelling.serving import latest_predictions

    first, second = two_versions
    set_metrics(first, roc_auc=0.75, exclusion_error_at_40=0.40, brier=0.20)
    set_metrics(second, roc_auc=0.78, exclusion_error_at_40=0.36, brier=0.19)
    ids = list(SurveyRecord.objects.filter(superseded_by__isnull=True).values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        model_promote(version=second.version, user=None)
    assert {p.model_version_id for p in latest_predictions(ids).values()} == {second.pk}
    assert len(latest_predictions(ids)) == len(ids)
    with django_capture_on_commit_callbacks(execute=True):
        model_rollback(user=None)
    assert {p.model_version_id for p in latest_predictions(ids).values()} == {first.pk}
    assert Prediction.objects.filter(model_version=second).count() == len(ids)  # each scored once
