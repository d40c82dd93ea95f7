"""Jobs that write what they read run one at a time, and a new platform's nightly jobs do not fail:
two batch-scoring runs never score a record twice, two trigger evaluations never queue two trainings,
two outbox sweeps never publish a message twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling import serving
from modelling.batch import predictions_batch
from modelling.models import ModelVersion, Prediction, RetrainDecision
from modelling.services import model_train
from modelling.triggers import retrain_triggers_evaluate
from rtv.models import OutboxMessage, PipelineRun
from rtv.outbox import outbox_sweep
from tests.locks import held_elsewhere

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def ingest(tmp_path: Path, rows: int, seed: int) -> int:
    data, _ = generate(rows, seed=seed, bad_rate=0.0)
    return ingest_file(write(data, data.iloc[0:0], tmp_path / f"{seed}.csv", "csv")).accepted


def at_once(job: Callable[[], Any], n: int = 2) -> list[Any]:
    """Run ``job`` on ``n`` threads, each with its own connection, started together."""
    barrier, results, errors = threading.Barrier(n), [], []

    def run() -> None:
        try:
            barrier.wait()
            results.append(job())
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.fixture
def champion(tmp_path: Path) -> ModelVersion:
    ingest(tmp_path, 300, seed=31)
    serving.forget()
    return model_train(folds=2)


def test_two_batch_runs_at_once_score_each_record_once(champion: ModelVersion, tmp_path: Path) -> None:
    ingest(tmp_path, 800, seed=32)
    runs = at_once(lambda: predictions_batch(export=False)["scored"])
    assert sorted(runs) == [0, 1100]  # the second waited, then found every record current
    twice = (Prediction.objects.values("record_id", "model_version_id").annotate(n=Count("id")).filter(n__gt=1))
    assert not twice.exists()


def test_with_no_champion_yet_the_nightly_jobs_neither_fail_nor_train_on_nothing(tmp_path: Path) -> None:
    with pytest.raises(serving.NoChampion):
        predictions_batch()
    assert not PipelineRun.objects.filter(job="predict_batch").exists()  # not a failed run every night
    ingest(tmp_path, 30, seed=33)  # fewer approved labelled records than a first model needs
    decision = retrain_triggers_evaluate(enqueue=False)
    assert decision.fired == [] and decision.inputs["new_samples"]["count"] < 50


def test_two_trigger_evaluations_queue_one_training(champion: ModelVersion, tmp_path: Path) -> None:
    from rtv.celery import app

    ingest(tmp_path, 120, seed=34)
    app.conf.task_always_eager = False  # queued, not run: the training stays pending
    try:
        decisions = at_once(lambda: retrain_triggers_evaluate().pk)
    finally:
        app.conf.task_always_eager = True
    queued = RetrainDecision.objects.filter(pk__in=decisions, retrain_queued=True)
    assert queued.count() == 1
    other = RetrainDecision.objects.filter(pk__in=decisions, retrain_queued=False).get()
    assert "new_samples" in other.fired and other.inputs["already_queued"]["decision"] == queued.get().pk
    assert OutboxMessage.objects.filter(task="modelling.train_and_score").count() == 1


def test_a_sweep_while_another_is_sending_leaves_the_messages_to_it() -> None:
    OutboxMessage.objects.create(task="ingestion.after_submissions", args=[[]])
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    with held_elsewhere("rtv.outbox_sweep"):  # another sweep, in the middle of sending
        assert outbox_sweep() == 0
        assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 1
    assert outbox_sweep() == 1  # once the other is done, the next sweep sends it


def test_a_submissions_scoring_does_not_wait_behind_a_batch_run(champion: ModelVersion) -> None:
    """It is told the batch is busy (and its task comes back later) instead of holding a worker."""
    from modelling.batch import Busy

    with held_elsewhere("modelling.predict_batch"), pytest.raises(Busy):  # the nightly run, under way
        predictions_batch(record_ids=[1], export=False, wait=False)
    assert predictions_batch(record_ids=[1], export=False, wait=False)["scored"] <= 1


def test_the_file_lock_of_the_embedded_run_excludes_another_holder(settings, tmp_path: Path) -> None:
    """SQLite has no advisory locks: the embedded run's worker processes and beat share a file lock."""
    from rtv.locks import _file

    settings.VAR_DIR = tmp_path
    held, release, seen = threading.Event(), threading.Event(), []

    def holder() -> None:
        with _file("x", wait=True):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    with _file("x", wait=False) as mine:
        seen.append(mine)
    release.set()
    t.join()
    with _file("x", wait=False) as mine:
        seen.append(mine)
    assert seen == [False, True]
