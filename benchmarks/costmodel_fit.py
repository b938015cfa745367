"""Fit the cost model to the H100 step profiles and report the error per model and row kind.

    python benchmarks/costmodel_fit.py [--write]     # --write refreshes seer/presets/coefficients.toml

Reads benchmarks/data/calibration/h100_step_profile.csv (dense GQA models) and h100_moonlight_profile.csv (MLA +
MoE), the H100 step profiles described in that folder's README (`--profiles DIR` reads them from elsewhere).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from seer.fileio import write_text_atomic
from seer.sim.calibration import fit_errors, fit_profile
from seer.sim.costmodel import COEF_KEYS, family_of
from seer.sim.shapes import model_shape

ROOT = Path(__file__).resolve().parents[1]
CAL = ROOT / "benchmarks" / "data" / "calibration"
OUT = ROOT / "seer" / "presets" / "coefficients.toml"


def load_profiles(folder: Path = CAL) -> pd.DataFrame:
    files = [folder / "h100_step_profile.csv", folder / "h100_moonlight_profile.csv"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        print(f"costmodel_fit: missing calibration file(s): {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write seer/presets/coefficients.toml")
    ap.add_argument("--profiles", type=Path, default=CAL, help="folder of the step profiles (default: %(default)s)")
    args = ap.parse_args()
    df = load_profiles(args.profiles)
    fits = fit_profile(df)
    err = fit_errors(df, fits)
    table = err.groupby(["model", "kind"]).ape.agg(rows="size", mape="mean", max_ape="max").reset_index()
    by_kind = err.groupby("kind").ape.agg(rows="size", mape="mean", max_ape="max").reset_index()
    print("per model and kind (MAPE = mean |pred - meas| / meas):")
    print(table.to_string(index=False, float_format=lambda v: f"{100 * v:.1f}%"))
    print("\nper row kind, all models:")
    print(by_kind.to_string(index=False, float_format=lambda v: f"{100 * v:.1f}%"))
    for fam, c in fits.items():
        print(f"\n[{fam}] " + ", ".join(f"{k}={getattr(c, k):.4g}" for k in COEF_KEYS))
    if args.write:
        lines = ["# Fitted by benchmarks/costmodel_fit.py from shared/calibration (H100). Do not edit by hand.", ""]
        for fam, c in fits.items():
            lines.append(f"[{fam}]")
            lines += [f"{k} = {getattr(c, k)!r}" for k in COEF_KEYS]
            sub = err[[family_of(model_shape(m)) == fam for m in err.model]]
            for kind, g in sub.groupby("kind"):
                lines.append(f"mape_{kind} = {g.ape.mean():.4f}")
            lines.append("")
        write_text_atomic(OUT, "\n".join(lines))
        print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
