"""The champion moves only through the gate (or a recorded force), and rolls back to the previous one."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling import registry
from modelling.models import ModelEvent, ModelVersion
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
    assert OutboxMessage.objects.filter(task="modelling.train_and_score").exists()


def test_the_admin_queues_training_and_promotes_through_the_gate(client, make_user, two_versions) -> None:  # type: ignore[no-untyped-def]
    from rtv.models import OutboxMessage

    first, second = two_versions
    set_metrics(first, roc_auc=0.80, exclusion_error_at_40=0.30, brier=0.18)
    set_metrics(second, roc_auc=0.70, exclusion_error_at_40=0.50, brier=0.25)
    client.force_login(make_user("admin"))
    url = "/admin/modelling/modelversion/"
    client.post(url, {"action": "retrain", "_selected_action": [second.pk]})
    assert OutboxMessage.objects.filter(task="modelling.train_and_score").exists()
    client.post(url, {"action": "promote", "_selected_action": [second.pk]})
    assert registry.alias_version(NAME, registry.CHAMPION) == first.version  # refused by the gate


def test_a_challenger_is_compared_with_the_champion_on_the_same_unseen_records(tmp_path: Path) -> None:
    data, _ = generate(300, seed=41)
    write(data, data.iloc[0:0], tmp_path / "old.csv", "csv")
    ingest_file(tmp_path / "old.csv")
    first = model_train(folds=2)
    newer, _ = generate(120, seed=42)
    write(newer, newer.iloc[0:0], tmp_path / "new.csv", "csv")
    ingest_file(tmp_path / "new.csv")
    second = model_train(folds=2)
    comparison = second.metrics["comparison"]
    assert comparison["holdout_rows"] == 120 and comparison["champion_version"] == first.version
    assert set(comparison["champion"]) >= {"roc_auc", "brier", "exclusion_error_at_40"}
    from modelling.promotion import promotion_gate

    gate = promotion_gate(second, first)
    assert gate["basis"].startswith("the same holdout of 120 records")
    assert gate["checks"]["roc_auc"]["champion"] == comparison["champion"]["roc_auc"]
