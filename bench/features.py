"""Feature pipeline throughput (batch transform) and training time on generated rows.

    python bench/features.py [--rows 500000] [--train-rows 100000]   # --train-rows 0: skip training

Targets (issue 5): the fitted feature pipeline transforms >= 500,000 rows/s; training on 100,000
generated rows takes under 2 minutes.  Also reported: the time to transform one row (median of 200
calls), the part of real-time scoring the feature pipeline takes (scoring must answer in < 50 ms p99).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import emit, setup_django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--train-rows", type=int, default=100_000, help="0: skip the training benchmark")
    args = parser.parse_args()
    setup_django()
    from sklearn.ensemble import HistGradientBoostingClassifier

    from features.pipeline import build_model_pipeline, input_fields
    from ingestion.synthetic.generator import generate

    data, _ = generate(args.rows, seed=5)
    y = (data["income_consumption_residues_per_day"] < 1.25 * 1.416).to_numpy().astype(int)
    fields = [f for f in input_fields() if f in data.columns]
    pipe = build_model_pipeline(HistGradientBoostingClassifier(max_iter=50), data.head(5000), scale=False,
                                fields=fields)
    pipe.fit(data.head(20_000), y[:20_000])
    pre = pipe[:-1]
    # Warm-up at full size: on a fresh VM the first touch of ~1 GB costs seconds of kernel time
    # (page backing), whatever the code does; a long-running scorer never sees it.
    pre.transform(data)
    runs = []
    for _ in range(3):  # median of three: a shared machine makes single runs noisy
        t0 = time.perf_counter()
        out = pre.transform(data)
        runs.append(time.perf_counter() - t0)
    seconds = float(np.median(runs))
    emit("features", "transform_rows_per_s", args.rows / seconds, "rows/s", limit=500_000,
         ratio=args.rows / seconds / 500_000, rows=args.rows, columns=int(np.asarray(out).shape[1]),
         seconds=round(seconds, 2), runs_s=[round(r, 2) for r in runs])

    one = data.iloc[[123]]
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        pre.transform(one)
        times.append(time.perf_counter() - t0)
    emit("features", "transform_one_row_ms", float(np.median(times)) * 1000, "ms", limit=50,
         ratio=50 / (float(np.median(times)) * 1000), p99_ms=round(float(np.percentile(times, 99)) * 1000, 3),
         note="median of 200 single-row transforms; limit is the whole scoring budget (p99)")
    if args.train_rows <= 0:
        return

    # Training: the same candidates, CV and calibration as manage.py train_model, without the database.
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from modelling.services import candidates

    train = data.head(args.train_rows)
    ty, groups = y[: args.train_rows], train["village"].to_numpy()
    t0 = time.perf_counter()
    splits = list(GroupKFold(n_splits=5).split(train, ty, groups))
    for cand in candidates():
        model = build_model_pipeline(cand.estimator, train, scale=cand.scale, fields=fields)
        cross_val_predict(model, train, ty, groups=groups, cv=splits, method="predict_proba")
        model.fit(train, ty)
    seconds = time.perf_counter() - t0
    emit("training", "seconds_100k", seconds, "s", limit=120, ratio=120 / seconds, rows=args.train_rows,
         note="ratio = limit / value: above 1 is within budget; CV of both candidates plus final fits")


if __name__ == "__main__":
    main()
