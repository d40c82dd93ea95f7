"""The rule engine on the tiny inputs of the API (device submissions, real-time predictions).

    python bench/quality_small.py [--calls 300] [--rows 1 10 100] [--profile]

Builds the input exactly as ``ingestion.submissions._validate`` does (columns of raw text, the
envelope's ``collected_at`` and GPS point, the current schema's fields present, the settings'
tolerances) from generated rows, and times ``validate_frame``: median and p99 per call, in ms.
Budget: the API's 50 ms p99 covers everything, so a one-row validation should take a few ms.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import VAR, emit, setup_django


def envelope_raw(n: int, seed: int = 1, bad_rate: float = 0.05) -> dict[str, list[object]]:
    """``n`` generated rows as ``_validate`` builds its input from the API's envelopes."""
    import numpy as np

    from ingestion.submissions import SURVEY_NAMES, _text
    from ingestion.synthetic.generator import generate

    data, _ = generate(n, seed=seed, bad_rate=bad_rate)
    rows = [{k: (None if v is None or v is np.nan or (isinstance(v, float) and math.isnan(v)) or v is __import__("pandas").NA
                 else v) for k, v in rec.items()} for rec in data.to_dict("records")]
    rng = np.random.default_rng(seed)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    stamps = [start + timedelta(minutes=int(m)) for m in rng.integers(0, 100_000, n)]
    points = [{"lat": round(float(a), 5), "lon": round(float(b), 5)}
              for a, b in zip(rng.uniform(-1.0, 4.0, n), rng.uniform(29.8, 35.0, n), strict=True)]
    raw: dict[str, list[object]] = {k: [_text(r.get(k)) for r in rows] for k in SURVEY_NAMES}
    raw["collected_at"] = [s.isoformat() for s in stamps]
    raw["gps_lat"] = [_text(p.get("lat")) for p in points]
    raw["gps_lon"] = [_text(p.get("lon")) for p in points]
    return raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--profile", action="store_true", help="cProfile the one-row call instead of timing")
    args = parser.parse_args()
    VAR.mkdir(parents=True, exist_ok=True)
    setup_django()
    from django.conf import settings

    from quality.engine import validate_frame
    from rtv.selectors import current_schema

    schema = current_schema()

    def call(raw: dict[str, list[object]]) -> Any:
        fields = [f for f in schema.fields if f.name in raw]
        return validate_frame(raw, fields, tol_abs=settings.RTV_IDENTITY_TOLERANCE_ABS,
                              tol_rel=settings.RTV_IDENTITY_TOLERANCE_REL)

    if args.profile:
        import cProfile
        import pstats

        raw = envelope_raw(args.rows[0])
        for _ in range(50):
            call(raw)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            call(raw)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        return
    import numpy as np

    for n in args.rows:
        raw = envelope_raw(n)
        for _ in range(30):  # warm up (the rule and schema caches, imports, pandas' first calls)
            call(raw)
        times = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            call(raw)
            times.append((time.perf_counter() - t0) * 1000)
        ms = np.asarray(times)
        median, p99 = float(np.median(ms)), float(np.percentile(ms, 99))
        emit("quality_small", f"validate_{n}_rows_median", median, "ms", rows=n, calls=args.calls)
        emit("quality_small", f"validate_{n}_rows_p99", p99, "ms", rows=n, calls=args.calls)


if __name__ == "__main__":
    main()
