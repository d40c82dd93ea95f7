"""Promotion and rollback: the champion alias moves only through here, gated and audited."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from rtv.locks import exclusive
from rtv.services import audit_record

from . import registry
from .models import Experiment, ModelEvent, ModelVersion


class PromotionRefused(Exception):
    def __init__(self, message: str, gate: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.gate = gate or {}


class NoSuchVersion(PromotionRefused):
    """The version named does not exist (a 404 to the API, not a refusal)."""


def promotion_gate(challenger: ModelVersion, champion: ModelVersion | None) -> dict[str, Any]:
    """A challenger must beat the champion on ROC-AUC and on exclusion error at 40% coverage (strictly
    better by more than the configured margin: a tie is not a win), without worse calibration (Brier
    no higher than the champion's plus its margin)."""
    if champion is None:
        return {"passed": True, "reason": "no champion yet", "checks": {}}
    c, k = challenger.metrics, champion.metrics
    basis = "cross-validated metrics of each version (no common holdout of enough unseen records)"
    same = challenger.metrics.get("comparison")
    if same and same.get("champion_version") == champion.version:
        # Preferred: both models scored on the same rows, which neither was trained on.
        c, k = same["challenger"], same["champion"]
        basis = f"the same holdout of {same['holdout_rows']} records the champion never trained on"
    else:
        # The challenger was compared with another champion (or none): both scored now on the
        # approved, labelled records neither trained on, when there are enough of them.
        now = holdout_comparison(challenger, champion)
        if now is not None:
            c, k = now["challenger"], now["champion"]
            basis = f"the same holdout of {now['holdout_rows']} records neither version trained on, scored now"
    m_auc = settings.RTV_PROMOTION_MARGIN_AUC
    m_excl = settings.RTV_PROMOTION_MARGIN_EXCLUSION
    m_brier = settings.RTV_PROMOTION_MARGIN_BRIER
    checks = {
        "roc_auc": {"challenger": c["roc_auc"], "champion": k["roc_auc"], "margin": m_auc,
                    "passed": c["roc_auc"] > k["roc_auc"] + m_auc},
        "exclusion_error_at_40": {"challenger": c["exclusion_error_at_40"], "champion": k["exclusion_error_at_40"],
                                  "margin": m_excl,
                                  "passed": c["exclusion_error_at_40"] < k["exclusion_error_at_40"] - m_excl},
        "brier": {"challenger": c["brier"], "champion": k["brier"], "margin": m_brier,
                  "passed": c["brier"] <= k["brier"] + m_brier},
    }
    passed = all(v["passed"] for v in checks.values())
    failed = [name for name, v in checks.items() if not v["passed"]]
    return {"passed": passed, "checks": checks,
            "reason": "beats the champion" if passed else f"does not beat the champion on {', '.join(failed)}",
            "basis": basis}


def holdout_comparison(challenger: ModelVersion, champion: ModelVersion) -> dict[str, Any] | None:
    """Both versions on the approved, labelled current records neither trained on (no version of
    them); None when fewer than ``RTV_RETRAIN_MIN_EVAL`` or one class only."""
    import numpy as np

    from ingestion.models import SurveyRecord

    from . import serving
    from .evaluation import comparison_metrics
    from .lineage import unseen_by

    labelled = dict(SurveyRecord.objects.filter(superseded_by__isnull=True, vulnerable__isnull=False,
                                                review_status=SurveyRecord.ReviewStatus.APPROVED)
                    .values_list("pk", "vulnerable"))
    ids = np.fromiter(labelled, dtype=np.int64, count=len(labelled))
    unseen = unseen_by(ids, challenger, champion)
    if unseen is None:
        return None
    ids = ids[unseen]
    y = np.array([int(labelled[int(i)]) for i in ids])
    if len(ids) < settings.RTV_RETRAIN_MIN_EVAL or len(set(y.tolist())) < 2:
        return None
    frame = serving.records_frame(SurveyRecord.objects.filter(pk__in=ids.tolist()).order_by("pk"))
    y = np.array([int(labelled[int(i)]) for i in frame["_record"]])
    return {"holdout_rows": len(frame),
            **{name: comparison_metrics(y, serving.model_for(mv).score(frame, explain=False).p_vulnerable)
               for name, mv in (("challenger", challenger), ("champion", champion))}}


def _move(name: str, version: int, user: AbstractBaseUser | AnonymousUser | None, *, rescore: bool = True) -> None:
    """Inside the promotion's or rollback's transaction.  ``rescore``: queue the batch scoring for
    after the commit (not when the caller scores right after, as training does)."""
    from .experiments import end_in_transaction, rescore_after_commit

    # An experiment compares a challenger with the champion it started with: a new champion ends it
    # (else it would go on answering its share of households with the old champion).
    for exp in Experiment.objects.select_for_update().filter(active=True, champion__name=name).exclude(
            champion__version=version):
        end_in_transaction(experiment=exp, user=user, reason=f"the champion changed to version {version}")
    registry.set_alias(name, registry.CHAMPION, version)
    for mv in ModelVersion.objects.filter(name=name):
        aliases = [a for a in mv.aliases if a != registry.CHAMPION]
        if mv.version == version:
            aliases.append(registry.CHAMPION)
        if aliases != mv.aliases:
            mv.aliases = aliases
            mv.save(update_fields=["aliases"])
    if rescore:
        rescore_after_commit()
    from . import serving

    serving.forget()  # this process answers with the new champion at once; others within the TTL


def model_promote(*, version: int, user: AbstractBaseUser | AnonymousUser | None, force: bool = False,
                  rescore: bool = True) -> ModelVersion:
    """Make ``version`` the champion (the challenger through the gate, anything else forced).  One
    rollout change at a time, across processes: two at once would each read the same champion and
    record a move from it, and leave the aliases in the database and in MLflow disagreeing."""
    with exclusive(registry.ROLLOUT_LOCK):
        return _promote(version=version, user=user, force=force, rescore=rescore)


def _promote(*, version: int, user: AbstractBaseUser | AnonymousUser | None, force: bool, rescore: bool) -> ModelVersion:
    name = settings.RTV_MODEL_NAME
    target = ModelVersion.objects.filter(name=name, version=version).first()
    if target is None:
        raise NoSuchVersion(f"{name} has no version {version}")
    current = registry.alias_version(name, registry.CHAMPION)
    if current == version:
        raise PromotionRefused(f"version {version} is already the champion")
    challenger = registry.alias_version(name, registry.CHALLENGER)
    if challenger != version and not force:
        # An older version's gate figures were measured against an older champion: going back is a
        # rollback, and anything else is a decision to force, on the record.
        raise PromotionRefused(f"version {version} is not the challenger (version {challenger} is); "
                               "roll back, or force the promotion")
    champion = ModelVersion.objects.filter(name=name, version=current).first() if current else None
    gate = promotion_gate(target, champion)
    if not gate["passed"] and not force:
        raise PromotionRefused(f"version {version} {gate['reason']}", gate)
    with transaction.atomic():
        event = ModelEvent.objects.create(name=name, action=ModelEvent.Action.PROMOTE, from_version=current,
                                          to_version=version, gate=gate, forced=force and not gate["passed"],
                                          actor=user if user is not None and user.is_authenticated else None)
        audit_record(actor=user, action="model.promoted", obj=target,
                     changes={"champion": [current, version], "forced": event.forced, "gate": gate["reason"]})
        _move(name, version, user, rescore=rescore)  # last: an alias move is outside the database transaction
    target.refresh_from_db()
    return target


def model_rollback(*, user: AbstractBaseUser | AnonymousUser | None) -> ModelVersion:
    """Give the champion alias back to the version it had before the last promotion."""
    with exclusive(registry.ROLLOUT_LOCK):
        return _rollback(user=user)


def _rollback(*, user: AbstractBaseUser | AnonymousUser | None) -> ModelVersion:
    name = settings.RTV_MODEL_NAME
    current = registry.alias_version(name, registry.CHAMPION)
    last = ModelEvent.objects.filter(name=name, action=ModelEvent.Action.PROMOTE, to_version=current).first()
    if last is None or last.from_version is None:
        raise PromotionRefused("there is no earlier champion to roll back to")
    target = ModelVersion.objects.get(name=name, version=last.from_version)
    with transaction.atomic():
        ModelEvent.objects.create(name=name, action=ModelEvent.Action.ROLLBACK, from_version=current,
                                  to_version=target.version,
                                  actor=user if user is not None and user.is_authenticated else None)
        audit_record(actor=user, action="model.rolled_back", obj=target, changes={"champion": [current, target.version]})
        _move(name, target.version, user)
    target.refresh_from_db()
    return target


def acting_user(username: str | None) -> Any:
    """The person a management command acts for (``--user``), recorded on the event and the audit
    trail; None when not given.  An unknown name is refused rather than recorded as nobody."""
    if not username:
        return None
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise PromotionRefused(f"no user named {username!r}")
    return user
