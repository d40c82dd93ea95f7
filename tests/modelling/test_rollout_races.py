"""Changes to who answers (promotions, rollbacks, experiments, new challengers) happen one at a
time across processes: a double click records one promotion, an experiment started during a
promotion compares against the champion that results, two starts of one name give one experiment
and a 409, and an experiment ended twice is ended once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling import registry, serving
from modelling.experiments import experiment_start
from modelling.models import Experiment, ModelEvent, ModelVersion
from modelling.promotion import model_promote
from modelling.services import model_train
from rtv.locks import exclusive
from rtv.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def together(*jobs: Callable[[], Any]) -> list[Any]:
    """Each job on its own thread and connection, released at once; results (or exceptions) in order."""
    barrier, out = threading.Barrier(len(jobs)), [None] * len(jobs)

    def run(k: int) -> None:
        try:
            barrier.wait()
            out[k] = jobs[k]()
        except Exception as exc:  # the test looks at it
            out[k] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.fixture
def versions(tmp_path: Path) -> list[ModelVersion]:
    """Version 1 the champion, 2 and 3 challengers in turn (3 holds the alias)."""
    if connection.vendor != "postgresql":
        pytest.skip("the rollout lock is PostgreSQL's")
    data, _ = generate(300, seed=31, bad_rate=0.0)
    ingest_file(write(data, data.iloc[0:0], tmp_path / "a.csv", "csv"))
    serving.forget()
    return [model_train(folds=2) for _ in range(3)]


def test_a_promotion_clicked_twice_is_recorded_once(versions: list[ModelVersion], make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user("data_scientist")
    together(lambda: model_promote(version=3, user=user, force=True),
             lambda: model_promote(version=3, user=user, force=True))
    assert list(ModelEvent.objects.filter(action="promote", to_version=3).values_list("from_version", flat=True)) == [1]
    assert AuditEvent.objects.filter(action="model.promoted", actor=user).count() == 1
    assert registry.alias_version(registry.settings.RTV_MODEL_NAME, registry.CHAMPION) == 3
    assert dict(ModelVersion.objects.values_list("version", "aliases")) == {1: [], 2: [], 3: ["challenger", "champion"]}


def test_an_experiment_started_during_a_promotion_compares_against_the_new_champion(  # type: ignore[no-untyped-def]
        versions: list[ModelVersion], make_user) -> None:
    holding, release, out = threading.Event(), threading.Event(), []

    def promotion() -> None:  # a promotion under way: the rollout is locked until it is done
        try:
            with exclusive(registry.ROLLOUT_LOCK):
                holding.set()
                release.wait(10)
                model_promote(version=3, user=None, force=True)
        finally:
            connection.close()

    def start() -> None:
        try:
            out.append(experiment_start(name="ab", challenger=versions[1], traffic_share=0.5, user=make_user("data_scientist")))
        finally:
            connection.close()

    a = threading.Thread(target=promotion)
    a.start()
    holding.wait(10)
    b = threading.Thread(target=start)
    b.start()
    time.sleep(0.3)  # the start waits for the promotion
    release.set()
    a.join()
    b.join()
    exp = Experiment.objects.select_related("champion").get(name="ab")
    assert exp.active and exp.champion.version == 3  # not pinned to version 1, which no longer answers
    serving.forget()
    assert {mv.version for mv in serving.plan([f"H{i}" for i in range(40)]).answer} == {2, 3}


def test_two_starts_of_one_experiment_name_give_one_experiment_and_a_409(versions: list[ModelVersion], api) -> None:  # type: ignore[no-untyped-def]
    a, b = api("data_scientist"), api("data_scientist")
    body = {"name": "ramp-a", "challenger": 2, "traffic_share": 0.2}
    codes = together(lambda: a.post("/api/v1/experiments/", body, format="json").status_code,
                     lambda: b.post("/api/v1/experiments/", body, format="json").status_code)
    assert sorted(codes) == [201, 409]
    other = together(lambda: a.post("/api/v1/experiments/", {"name": "x", "challenger": 2}, format="json").status_code,
                     lambda: b.post("/api/v1/experiments/", {"name": "y", "challenger": 2}, format="json").status_code)
    assert other == [201, 201] and Experiment.objects.filter(active=True).count() == 1  # the later ended the earlier


def test_an_experiment_ended_twice_at_once_is_ended_once(versions: list[ModelVersion], api, make_user) -> None:  # type: ignore[no-untyped-def]
    exp = experiment_start(name="e1", challenger=versions[1], user=make_user("data_scientist"))
    a, b = api("data_scientist"), api("data_scientist")
    codes = together(lambda: a.post(f"/api/v1/experiments/{exp.pk}/end/").status_code,
                     lambda: b.post(f"/api/v1/experiments/{exp.pk}/end/").status_code)
    assert all(c < 500 for c in codes)
    assert AuditEvent.objects.filter(action="experiment.ended", object_id=str(exp.pk)).count() == 1


def test_the_admins_add_form_posted_twice_starts_one_experiment_without_an_error(  # type: ignore[no-untyped-def]
        versions: list[ModelVersion], make_user) -> None:
    """The admin saves inside its own transaction: the rollout lock holds until that commits, so the
    second post sees the first's experiment and says so, instead of a 500."""
    from django.test import Client

    user = make_user("data_scientist")
    clients = [Client(), Client()]
    for c in clients:
        c.force_login(user)
    form = {"name": "ab-admin", "challenger": versions[1].pk, "traffic_share": "0.3"}
    codes = together(*(lambda c=c: c.post("/admin/modelling/experiment/add/", form).status_code for c in clients))
    assert codes == [302, 302]
    assert Experiment.objects.filter(name="ab-admin").count() == 1
