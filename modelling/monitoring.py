"""The daily model-performance job (03:00 Africa/Kampala): PSI of the incoming features and of the
predicted-status mix against the champion's training snapshot, overall and by district, and the
champion's performance on records labelled since its training; stored, with alerts past thresholds."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from features.snapshots import snapshot_read
from ingestion.models import SurveyRecord

from . import serving
from .evaluation import evaluate
from .models import ModelAlert, MonitoringRun
from .triggers import PSI_MAJOR, drift_report, drift_top_fields, psi_categorical, unseen_labelled


def _status_mix_psi(reference: np.ndarray, current: np.ndarray) -> float:
    return round(psi_categorical(pd.Series(reference), pd.Series(current)), 4)


def _shifted_features(psi: dict[str, float], scope: str, where: str) -> list[tuple[str, str, float, float, str]]:
    """Features past the alert threshold when the drift rule (half of them, or a top-five one) did
    not fire: one feature far off its training distribution is worth a look even if the model's
    retraining rule does not call it drift."""
    limit = settings.RTV_MONITOR_PSI_ALERT
    shifted = sorted(((v, k) for k, v in psi.items() if v >= limit), reverse=True)
    if not shifted:
        return []
    names = ", ".join(f"{k} ({v:.2f})" for v, k in shifted[:5])
    return [("feature_psi", scope, shifted[0][0], limit,
             f"{len(shifted)} feature{'s' if len(shifted) > 1 else ''} shifted{where} past PSI {limit}: {names}")]


def monitoring_run(*, now: datetime | None = None) -> MonitoringRun | None:
    """Compute, store and alert; None when there is no champion to monitor."""
    serving.forget()
    champ = serving.champion()
    if champ is None:
        return None
    now = now or timezone.now()
    start = now - timedelta(days=settings.RTV_MONITOR_WINDOW_DAYS)
    current = serving.records_frame(SurveyRecord.objects.filter(superseded_by__isnull=True, received_at__gte=start,
                                                                received_at__lte=now).order_by("pk"))
    results: dict[str, Any] = {"window_days": settings.RTV_MONITOR_WINDOW_DAYS, "rows": len(current)}
    alerts: list[tuple[str, str, float, float, str]] = []
    min_rows = settings.RTV_MONITOR_MIN_ROWS
    feature_psi_max = prediction_psi = auc = None
    drift = False
    if len(current) >= min_rows and champ.snapshot is not None:
        reference = snapshot_read(champ.snapshot)
        model = serving.model_for(champ)
        top = drift_top_fields(champ)
        overall = drift_report(reference, current, top)
        feature_psi_max = max(overall["psi"].values(), default=0.0)
        ref_status = model.score(reference, explain=False).predicted_status
        cur_status = model.score(current, explain=False).predicted_status
        prediction_psi = _status_mix_psi(ref_status, cur_status)
        results["overall"] = {**overall, "prediction_psi": prediction_psi,
                              "predicted_mix": pd.Series(cur_status).value_counts(normalize=True).round(4).to_dict(),
                              "reference_mix": pd.Series(ref_status).value_counts(normalize=True).round(4).to_dict()}
        drift = bool(overall["drift"])
        if drift:
            alerts.append(("feature_drift", "overall", feature_psi_max, PSI_MAJOR,
                           f"Input drift: {len(overall['major'])} features with PSI >= {PSI_MAJOR} "
                           f"({', '.join(overall['major'][:5])}); top features shifted: {overall['top_major'] or 'none'}"))
        else:
            alerts += _shifted_features(overall["psi"], "overall", "")
        if prediction_psi >= settings.RTV_MONITOR_PSI_ALERT:
            alerts.append(("prediction_psi", "overall", prediction_psi, settings.RTV_MONITOR_PSI_ALERT,
                           f"The predicted-status mix shifted: PSI {prediction_psi:.3f}"))
        by_district: dict[str, Any] = {}
        ref_district = reference["district"].astype(str).to_numpy() if "district" in reference else None
        cur_district = current["district"].astype(str).to_numpy()
        for district in sorted(set(cur_district)):
            cur_m = cur_district == district
            if cur_m.sum() < min_rows:
                continue
            ref_m = (ref_district == district) if ref_district is not None else None
            if ref_m is None or ref_m.sum() < min_rows:
                ref_m = np.ones(len(reference), dtype=bool)  # a district new to the model: compare with all
            rep = drift_report(reference[ref_m], current[cur_m], top)
            p_psi = _status_mix_psi(ref_status[ref_m], cur_status[cur_m])
            d_psi_max = max(rep["psi"].values(), default=0.0)
            by_district[district] = {"rows": int(cur_m.sum()), "feature_psi_max": d_psi_max, "major": rep["major"],
                                     "top_major": rep["top_major"], "drift": rep["drift"], "prediction_psi": p_psi}
            if rep["drift"]:  # the overall rule (half the features major, or any of the top five), per district
                alerts.append(("feature_drift", f"district:{district}", d_psi_max, PSI_MAJOR,
                               f"Input drift in {district}: {len(rep['major'])} features with PSI >= {PSI_MAJOR} "
                               f"({', '.join(rep['major'][:5])}); top features shifted: {rep['top_major'] or 'none'}"))
            else:
                alerts += _shifted_features(rep["psi"], f"district:{district}", f" in {district}")
            if p_psi >= settings.RTV_MONITOR_PSI_ALERT:
                alerts.append(("prediction_psi", f"district:{district}", p_psi, settings.RTV_MONITOR_PSI_ALERT,
                               f"The predicted-status mix shifted in {district}: PSI {p_psi:.3f}"))
        results["by_district"] = by_district
    # Performance on labelled records the champion did not train on (received after its training,
    # or approved or corrected since).
    labelled, _ = unseen_labelled(champ)
    new = serving.records_frame(labelled.order_by("pk"))
    if len(new) >= min_rows:
        y = np.array(SurveyRecord.objects.filter(pk__in=new["_record"].tolist()).order_by("pk")
                     .values_list("vulnerable", flat=True), dtype=bool).astype(int)
        if len(set(y.tolist())) == 2:
            p = serving.model_for(champ).score(new, explain=False).p_vulnerable
            m = evaluate(y, p)
            auc = float(m["roc_auc"])
            trained = float(champ.metrics.get("roc_auc", auc))
            results["performance"] = {"labelled": len(y), "roc_auc": round(auc, 4), "brier": round(float(m["brier"]), 4),
                                      "accuracy": round(float(m["accuracy"]), 4), "trained_roc_auc": round(trained, 4),
                                      "drop": round(trained - auc, 4)}
            if trained - auc > settings.RTV_MONITOR_AUC_DROP_ALERT:
                alerts.append(("roc_auc_drop", "overall", trained - auc, settings.RTV_MONITOR_AUC_DROP_ALERT,
                               f"ROC-AUC on {len(y)} newly labelled records is {auc:.3f}, "
                               f"{trained - auc:.3f} below training ({trained:.3f})"))
    with transaction.atomic():
        run = MonitoringRun.objects.create(model_version=champ, window_start=start, rows=len(current),
                                           feature_psi_max=feature_psi_max, prediction_psi=prediction_psi, roc_auc=auc,
                                           results=results, drift=drift)
        ModelAlert.objects.bulk_create([ModelAlert(run=run, metric=m, scope=s, value=round(v, 4), threshold=t, message=msg)
                                        for m, s, v, t, msg in alerts])
    return run
