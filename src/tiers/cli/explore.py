"""``tiers explore``: the founding Stata session, walked through step by step and done right.

The seed simulates semesters within students within teachers within schools within districts,
compares ``xtreg fe``, ``xtreg re`` and one- and four-level ``xtmixed``, lists the levels innermost
first (a non-identified model, reported without a word), concludes that more data does not help,
and compares REML likelihoods across mean structures. Each step here prints what the seed did,
what tiers finds, and why.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tiers._output import atomic_path, write_text
from tiers.api import fit
from tiers.errors import ComparisonError, DesignError, NestingError, TiersWarning
from tiers.inference.lrtest import lrtest
from tiers.panel.estimators import fixed_effects, random_effects
from tiers.panel.hausman import hausman
from tiers.report.comparison import compare
from tiers.simulation.data import simulate
from tiers.simulation.presets import seed_design

CORRECT = "perform tutoring || dist_id: || school_id: || teach_id: || student_id:"
REVERSED = "perform tutoring || student_id: || teach_id: || school_id: || dist_id:"
ONE_LEVEL = "perform tutoring || student_id:"
LEVELS = ["dist_id", "school_id", "teach_id", "student_id"]


def _table(df: pd.DataFrame, title: str, digits: int = 4) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column(df.index.name or "", style="cyan")
    for col in df.columns:
        table.add_column(str(col), justify="right")
    for idx, *row in df.itertuples(name=None):  # keeps each column's type: counts stay integers
        table.add_row(str(idx), *(_cell(v, digits) for v in row))
    return table


def _cell(v: Any, digits: int) -> str:
    """A number as the tables print it: counts with thousands separators, floats to ``digits``."""
    if isinstance(v, bool | np.bool_):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{v:,}"
    if isinstance(v, float | np.floating):
        return "." if np.isnan(v) else f"{v:,.{digits}f}"
    return str(v)


def _list(items: list[str]) -> str:
    """``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _design_text(design: Any) -> str:
    """Step 1's description of the design, read off the design (not the seed's numbers)."""
    top, *inner = design.levels
    nouns = {"dist_id": "district", "school_id": "school", "teach_id": "teacher",
             "student_id": "student"}  # fmt: skip

    def noun(name: str, n: int) -> str:
        word = nouns.get(name, name)
        return f"{n:,} {word}{'' if n == 1 else 's'}"

    counts = [noun(top.name, top.units)]
    parent = top.name
    for lv in inner:
        counts.append(f"{noun(lv.name, lv.units)} per {nouns.get(parent, parent)}")
        parent = lv.name
    counts.append(f"{design.obs_per_unit:,} {design.obs_name}s per {nouns.get(parent, parent)}")
    sds = _list([f"{lv.sd:g}" for lv in design.levels])
    covs = [
        f"{cv.name} ({cv.p:.0%} of {nouns.get(parent, parent)}-{design.obs_name}s) adds "
        f"{cv.coef:g} points"
        for cv in design.covariates
        if cv.kind == "bernoulli"
    ]
    return (
        f"As in the seed: {', '.join(counts)}; {design.nrows:,} rows. The effect of each level is normal with SD "
        f"{sds} (outermost first), the {design.obs_name} shock has SD {design.residual_sd:g}"
        + (f", and {_list(covs)}." if covs else ".")
    )


class _Story:
    """Prints the steps and keeps every table for --out."""

    def __init__(self, console: Console, out: Path | None) -> None:
        self.console = console
        self.out = out
        self.tables: dict[str, pd.DataFrame] = {}
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)

    def step(self, number: int, title: str, text: str) -> None:
        self.console.rule(f"[bold]Step {number}. {title}")
        self.console.print(text)

    def show(self, name: str, df: pd.DataFrame, title: str, digits: int = 4) -> None:
        self.tables[name] = df
        self.console.print(_table(df, title, digits))
        if self.out is not None:
            with atomic_path(self.out / f"{name}.csv", "--out table") as tmp:
                df.to_csv(tmp)

    def timed_fit(self, formula: str, data: pd.DataFrame, **kw: Any):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TiersWarning)
            start = time.perf_counter()
            res = fit(formula, data, **kw)
        self.console.print(
            f"[dim]fitted [bold]{formula}[/bold] ({res.method}) on {res.nobs:,} rows in "
            f"{(time.perf_counter() - start) * 1000:,.0f} ms[/dim]"
        )
        return res


def run_exploration(
    *,
    districts: int = 50,
    seed: int = 1,
    sizes: list[int] | None = None,
    out: Path | None = None,
    console: Console | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the whole exploration; return its tables (also written to ``out`` when given)."""
    console = console or Console()
    sizes = [5, 50, 500] if sizes is None else list(sizes)
    if not sizes or min(sizes) < 1:
        raise DesignError(
            f"sizes must list at least one positive number of districts, got {sizes!r}"
        )
    story = _Story(console, out)
    design = seed_design(districts=districts)
    truth = design.true_parameters()
    sds = [lv.sd for lv in design.levels]
    innermost = design.ngroups[design.levels[-1].name]

    story.step(1, "The design", _design_text(design))
    start = time.perf_counter()
    data = simulate(design, seed)
    design_table = pd.DataFrame(
        {
            "units per parent": [lv.units for lv in design.levels] + [design.obs_per_unit],
            "units": [design.ngroups[lv.name] for lv in design.levels] + [design.nrows],
            "true SD": [lv.sd for lv in design.levels] + [design.residual_sd],
        },
        index=pd.Index([lv.name for lv in design.levels] + ["semester (residual)"], name="level"),
    )
    story.show(
        "design",
        design_table,
        f"Simulated {len(data):,} rows in "
        f"{(time.perf_counter() - start) * 1000:,.0f} ms (seed {seed})",
        digits=1,
    )

    story.step(
        2,
        "Fixed and random effects on students (xtreg fe / re)",
        (
            "Both estimate the tutoring effect well, because tutoring is assigned at random. The "
            "student SD (xtreg's sigma_u, the row sd:student_id:(Intercept)) lumps every level "
            "above the semester into one student effect."
        ),
    )
    fe = fixed_effects(data, "perform", ["tutoring"], "student_id")
    re = random_effects(data, "perform", ["tutoring"], "student_id")
    hs = hausman(fe, re)
    panel = compare(fe, re, names=["xtreg fe", "xtreg re"])
    story.show(
        "panel",
        panel.loc[[i for i in panel.index if i not in ("ll", "aic", "bic")]],
        "xtreg on students",
    )
    if hs.p_value is None:
        verdict = "chi2 < 0: no test, as Stata reports it"
    elif hs.p_value >= 0.05:
        verdict = f"p = {hs.p_value:.3f}: no evidence against RE at the 5% level, as designed"
    else:
        verdict = (
            f"p = {hs.p_value:.3f}: RE rejected at the 5% level although the design satisfies "
            "it; a 5% test rejects a true hypothesis once in twenty samples"
        )
    story.console.print(f"Hausman test of FE against RE: chi2({hs.df}) = {hs.chi2:.2f} ({verdict})")

    story.step(
        3,
        "The one-level mixed model",
        (
            "With students as the only level, the district, school and teacher effects fold into the "
            f"student effect: its SD should be near sqrt({'+'.join(f'{sd:g}^2' for sd in sds)}) "
            f"= {np.sqrt(sum(sd**2 for sd in sds)):.2f}."
        ),
    )
    one = story.timed_fit(ONE_LEVEL, data)
    story.console.print(
        f"student SD = {one.varcorr['sd'].iloc[0]:.3f}, residual SD = "
        f"{one.sigma:.3f}, tutoring = {one.fixef['tutoring']:.3f}"
    )

    story.step(
        4,
        "The seed's four-level model, levels listed innermost first",
        (
            f"The seed ran [bold]{REVERSED}[/bold]. Stata nests each level in the ones before it, "
            f"so every level became the student: here {innermost:,} groups each (the seed's "
            "Stata split the variance evenly between them, without a word). tiers refuses:"
        ),
    )
    try:
        fit(REVERSED, data)
        story.console.print("[red]no error: the diagnostics failed[/red]")
    except NestingError as exc:
        story.console.print(Panel(str(exc), title="NestingError", border_style="red"))

    story.step(
        5,
        "The correct four-level model",
        (
            "The rule: levels are listed outermost first, each nested in the one before it "
            "(Stata's || equations, lme4's dist_id/school_id/...). Standard deviations are shown, "
            "as the seed's xtmixed showed them (Stata 13+ shows variances unless asked for "
            "stddeviations):"
        ),
    )
    correct = story.timed_fit(CORRECT, data)
    story.console.print(correct.summary("stata", stddeviations=True))

    story.step(
        6,
        "True against estimated: SDs and variance shares",
        (
            "Shares are each level's part of the unexplained variance; intervals are delta-method on "
            f"the logit scale (Stata's estat icc). The district share rests on {districts:,} "
            "districts."
        ),
    )
    total = sum(v**2 for k, v in truth.items() if k.startswith("sd_"))
    shares = correct.variance_shares()
    sdi = correct.sd_inference
    names = LEVELS + ["residual"]
    recovered = pd.DataFrame(
        {
            "true SD": [truth[f"sd_{n}"] for n in names],
            "SD": sdi.sd,
            "SD lower": sdi.lower,
            "SD upper": sdi.upper,
            "true share": [truth[f"sd_{n}"] ** 2 / total for n in names],
            "share": shares["share"].to_numpy(),
            "share lower": shares["share_lower"].to_numpy(),
            "share upper": shares["share_upper"].to_numpy(),
        },
        index=pd.Index(names, name="level"),
    )
    story.tables["recovered"] = recovered
    if out is not None:
        with atomic_path(out / "recovered.csv", "--out table") as tmp:
            recovered.to_csv(tmp)
    shown = pd.DataFrame(
        {
            "true SD": recovered["true SD"].map("{:.2f}".format),
            "SD [95% CI]": [
                f"{a:.2f} [{b:.2f}, {c:.2f}]"
                for a, b, c in recovered[["SD", "SD lower", "SD upper"]].to_numpy()
            ],
            "true share": recovered["true share"].map("{:.3f}".format),
            "share [95% CI]": [
                f"{a:.3f} [{b:.3f}, {c:.3f}]"
                for a, b, c in recovered[["share", "share lower", "share upper"]].to_numpy()
            ],
        },
        index=recovered.index,
    )
    story.console.print(_table(shown, "True and estimated SDs and shares (95% intervals)"))

    story.step(
        7,
        "REML against ML, and comparing mean structures",
        (
            "REML corrects the variances for the fixed effects estimated; ML is slightly smaller. To "
            "test tutoring, note the rule: REML likelihoods of models with different fixed effects "
            "cannot be compared (each is the likelihood of contrasts that depend on the fixed "
            "effects). tiers refuses, then does it by ML:"
        ),
    )
    ml = story.timed_fit(CORRECT, data, reml=False)
    both = pd.DataFrame(
        {"REML": correct.varcorr["sd"].to_numpy(), "ML": ml.varcorr["sd"].to_numpy()},
        index=pd.Index(names, name="SD"),
    )
    story.show("reml_ml", both, "SDs by REML and ML", digits=4)
    no_tutoring = story.timed_fit(
        "perform || dist_id: || school_id: || teach_id: || student_id:", data
    )
    try:
        lrtest(no_tutoring, correct)
    except ComparisonError as exc:
        story.console.print(Panel(str(exc), title="ComparisonError", border_style="yellow"))
    with warnings.catch_warnings():  # a singular ML refit (few districts) is the story's step 6
        warnings.simplefilter("ignore", TiersWarning)
        test = lrtest(no_tutoring, correct, refit=True)
    story.console.print(test.summary())
    story.tables["lrtest"] = pd.DataFrame([test.to_dict()])

    story.step(
        8,
        "Is the sample too small?",
        (
            "The seed guessed so, then pasted one run at 50 districts because the fit was too slow to "
            "repeat. Here the correct model at each size, with each SD's 95% interval: they shrink as "
            "districts are added, the district SD slowest, since it rests on the number of districts."
        ),
    )
    rows = []
    for size in sizes:
        d = simulate(seed_design(districts=size), seed)
        res = story.timed_fit(CORRECT, d)
        s = res.sd_inference
        for k, name in enumerate(names):
            rows.append(
                {
                    "districts": size,
                    "rows": res.nobs,
                    "level": name,
                    "true SD": truth[f"sd_{name}"],
                    "SD": s.sd[k],
                    "lower": s.lower[k],
                    "upper": s.upper[k],
                    "width": s.upper[k] - s.lower[k],
                    "fit ms": res.fit_seconds * 1000,
                }
            )
    growth = pd.DataFrame(rows)
    wide = growth.pivot(index="level", columns="districts", values="width").loc[names]
    wide.columns = [f"{c} districts" for c in wide.columns]
    story.tables["sizes_long"] = growth
    story.show("sizes", wide, "Width of each SD's 95% interval by number of districts", digits=3)
    if out is not None:
        with atomic_path(out / "sizes_long.csv", "--out table") as tmp:
            growth.to_csv(tmp, index=False)
        write_text(out / "correct_fit.json", json.dumps(correct.to_dict(), indent=2) + "\n")
    story.console.rule("[bold]Done")
    return story.tables
