"""What sampling weights fix: bias of unweighted and weighted fits under informative sampling.

Schools are sampled with probability rising with their random effect and students with
probability rising with their residual (`tiers.simulation.informative`), so the sample's schools
and students are better than the population's. Each replicate is fitted three ways, all by ML:
unweighted, and by pseudo-ML with the conditional weights as drawn and scaled to the school sizes
(Stata's ``pwscale(size)``). The table gives each estimator's mean minus the truth (bias), with
its Monte Carlo standard error, and the mean robust SE against the estimates' SD over replicates.

Run it from the repository root::

    .venv/bin/python examples/informative_sampling.py [--replicates 100] [--seed 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

import tiers
from tiers.simulation.informative import TwoStagePopulation, informative_sample

FORMULA = "y ~ x + (1 | school)"
FITS = {
    "unweighted": {"reml": False},
    "weighted": {"weights": {"student": "w_student", "school": "w_school"}},
    "weighted, pwscale(size)": {
        "weights": {"student": "w_student", "school": "w_school"},
        "pwscale": "size",
    },
}


def one(pop: TwoStagePopulation, seed: int) -> list[dict[str, float | str]]:
    """Estimates of one replicate, by every fit."""
    data = informative_sample(pop, seed)
    rows = []
    for name, kwargs in FITS.items():
        res = tiers.fit(FORMULA, data, **kwargs)
        sd = res.sd_inference.sd
        rows.append(
            {
                "fit": name,
                "intercept": res.beta[0],
                "slope": res.beta[1],
                "sd_school": sd[0],
                "sd_residual": sd[1],
                "se_intercept": res.std_errors.iloc[0],
            }
        )
    return rows


def main() -> None:
    """Run the replicates and print the bias table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    pop = TwoStagePopulation()
    truth = {
        "intercept": pop.intercept,
        "slope": pop.slope,
        "sd_school": pop.sd_school,
        "sd_residual": pop.sd_residual,
    }
    est = pd.DataFrame([row for r in range(args.replicates) for row in one(pop, args.seed + r)])
    table = []
    for fit, part in est.groupby("fit", sort=False):
        for par, true in truth.items():
            values = part[par].to_numpy()
            table.append(
                {
                    "fit": fit,
                    "parameter": par,
                    "truth": true,
                    "mean": values.mean(),
                    "bias": values.mean() - true,
                    "mc_se": values.std(ddof=1) / np.sqrt(values.size),
                }
            )
        table.append(
            {
                "fit": fit,
                "parameter": "SE(intercept): mean SE / SD of estimates",
                "truth": np.nan,
                "mean": part["se_intercept"].mean() / part["intercept"].std(ddof=1),
                "bias": np.nan,
                "mc_se": np.nan,
            }
        )
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(f"{args.replicates} informative two-stage samples; {FORMULA}; ML / pseudo-ML")
        print(pd.DataFrame(table).to_string(index=False))


if __name__ == "__main__":
    main()
