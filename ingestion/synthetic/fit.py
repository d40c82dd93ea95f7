"""Refit ``profile.json`` from the real extract: ``python -m ingestion.synthetic.fit PATH [-o OUT]``.

Only aggregate statistics are stored (shares, marginal tables, a correlation matrix, quirk rates);
no row and no real cluster or village name leaves the real file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ingestion.synthetic.generator import PROFILE_PATH, fit_profile, save_profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestion.synthetic.fit", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the real extract (DataScientist_01_Assessment.csv)")
    parser.add_argument("-o", "--output", default=str(PROFILE_PATH), help="where to write the profile")
    args = parser.parse_args(argv)
    profile = fit_profile(args.path)
    out = save_profile(profile, args.output)
    bands = profile["reference"]["label_bands"]
    print(f"fitted {profile['source']['rows']} rows, {len(profile['latents'])} latent variables, "
          f"{sum(len(c['villages']) for d in profile['districts'] for c in d['clusters'])} villages; "
          f"label bands {bands} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
