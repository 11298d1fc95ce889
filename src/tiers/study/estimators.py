"""The estimators of a simulation study: their specs, parsing, defaults and checks.

An :class:`Estimator` is a panel estimator (``ols``, ``fe``, ``re``) or a mixed-model formula,
possibly a GLMM (:func:`glmm_options`); :func:`parse_estimator` reads ``NAME=SPEC``,
:func:`default_estimators` gives a design's defaults, and the checks refuse, before any replicate
is drawn, an estimator the design's data cannot feed. `tiers.study.replicate` fits them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tiers.errors import FormulaError, StudyError
from tiers.simulation.data import NestedDesign

PANEL_KINDS: tuple[str, ...] = ("ols", "fe", "re")

#: The options a mixed-model estimator takes after its formula (``FORMULA; nagq=7``).
MIXED_OPTIONS: tuple[str, ...] = ("family", "link", "nagq")


@dataclass(frozen=True, slots=True)
class Estimator:
    """One estimator of a study: a panel estimator or a mixed-model formula.

    A panel estimator runs on ``id``, by default the innermost level. A mixed model is a GLMM
    when ``family`` is binomial or poisson, when its formula is a Stata ``melogit``/``mepoisson``
    command, or when the design is a GLMM design and ``family`` is not ``gaussian`` (see
    `glmm_options`); ``link`` and ``nagq`` (adaptive quadrature points, 1: Laplace) go with it.
    """

    name: str
    kind: Literal["ols", "fe", "re", "mixed"]
    formula: str | None = None
    id: str | None = None
    family: str | None = None
    link: str | None = None
    nagq: int | None = None

    @property
    def spec(self) -> str:
        """The text after ``NAME=`` that rebuilds it (``fe``, ``fe:teach_id``, the formula).

        A mixed model's options follow its formula: ``FORMULA; family=binomial; nagq=7``.
        """
        if self.kind == "mixed":
            opts = [
                f"{k}={getattr(self, k)}" for k in MIXED_OPTIONS if getattr(self, k) is not None
            ]
            return "; ".join([str(self.formula), *opts])
        return self.kind if self.id is None else f"{self.kind}:{self.id}"


def _mixed(name: str, text: str, whole: str) -> Estimator:
    """A mixed-model spec: the formula, then ``; key=value`` options (`MIXED_OPTIONS`)."""
    formula, *parts = (p.strip() for p in text.split(";"))
    opts: dict[str, Any] = {}
    for part in parts:
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or key not in MIXED_OPTIONS or not value or key in opts:
            raise StudyError(
                f"estimator {whole!r}: after the formula write '; key=value' options, each once, "
                f"with key one of {', '.join(MIXED_OPTIONS)} (e.g. '; nagq=7'); got {part!r}"
            )
        if key == "nagq":
            if not value.isdigit() or int(value) < 1:
                raise StudyError(
                    f"estimator {whole!r}: nagq must be a whole number >= 1 (1: Laplace); "
                    f"got {value!r}"
                )
            opts[key] = int(value)
        else:
            opts[key] = value
    if opts.get("family") == "gaussian" and ("link" in opts or "nagq" in opts):
        raise StudyError(f"estimator {whole!r}: a gaussian (linear) mixed model takes no link "
                         "or nagq")  # fmt: skip
    return Estimator(name, "mixed", formula=formula, **opts)


def glmm_options(e: Estimator, design: NestedDesign) -> dict[str, Any] | None:
    """How a mixed-model estimator is fitted: None for a linear mixed model, else GLMM options.

    The options are `tiers.fit`'s ``family``, ``link`` and ``nagq``, None where the formula's
    Stata command or the defaults decide.
    """
    from tiers.formula.glm import COMMANDS

    words = str(e.formula).split(None, 1)
    stata = bool(words) and words[0].lower() in COMMANDS
    if e.family == "gaussian" or (e.family is None and not stata and not design.is_glmm):
        return None
    family = e.family
    link = e.link
    if family is None and not stata:
        family, link = design.family, link or design.link
    return {"family": family, "link": link, "nagq": e.nagq}


def parse_estimator(text: str) -> Estimator:
    """``NAME=SPEC`` (or a bare ``ols``/``fe``/``re``) -> Estimator.

    SPEC is ``ols``, ``fe``, ``re``, ``KIND:ID`` (another panel id) or a mixed-model formula,
    optionally followed by ``; family=binomial``, ``; link=probit``, ``; nagq=7`` (a GLMM; see
    `glmm_options`). StudyError otherwise.
    """
    name, sep, spec = (part.strip() for part in text.partition("="))
    if not sep:
        spec = name
    if not name.replace("_", "").replace("-", "").isalnum():
        raise StudyError(f"estimator {text!r}: write NAME=SPEC with a plain name, e.g. fe=fe")
    kind, _, ident = (part.strip() for part in spec.partition(":"))
    if kind in PANEL_KINDS and not any(c in spec for c in "|~ "):
        return Estimator(name, kind, id=ident or None)  # type: ignore[arg-type]
    if "~" in spec or "||" in spec:
        return _mixed(name, spec, text)
    raise StudyError(
        f"unknown estimator {spec!r} in {text!r}: use ols, fe or re (fe:ID for another panel id) "
        "or a mixed-model formula such as 'y ~ x + (1 | g)' or 'y x || g:'"
    )


def default_estimators(design: NestedDesign) -> tuple[Estimator, ...]:
    """FE and RE on the innermost id, the one-level and the correctly nested mixed model.

    For the seed: the founding session's ``xtreg fe``/``re`` on students,
    ``perform tutoring || student_id:`` and the four-level model. Panel estimators only if there is
    a covariate. A GLMM design: the two mixed models as GLMMs of its family and link, by the
    Laplace approximation (and ``offset(log(exposure))`` with an exposure column); no panel
    estimators, which are linear.
    """
    rhs = " ".join([design.response, *(cv.name for cv in design.covariates)])
    levels = [lv.name for lv in design.levels]
    if design.is_glmm:
        fixed = " + ".join([*(cv.name for cv in design.covariates)] or ["1"])
        if design.exposure is not None:
            fixed += f" + offset(log({design.exposure}))"
        lhs = f"{design.response} ~ {fixed}"
        return (
            Estimator("one_level", "mixed", formula=f"{lhs} + (1 | {levels[-1]})"),
            Estimator("nested", "mixed", formula=f"{lhs} + (1 | {'/'.join(levels)})"),
        )
    panel = [Estimator("fe", "fe"), Estimator("re", "re")] if design.covariates else []
    return (
        *panel,
        Estimator("one_level", "mixed", formula=f"{rhs} || {levels[-1]}:"),
        Estimator("nested", "mixed", formula=rhs + "".join(f" || {n}:" for n in levels)),
    )


def _as_estimators(spec: Any, design: NestedDesign) -> tuple[Estimator, ...]:
    if spec is None:
        return default_estimators(design)
    if isinstance(spec, Mapping):
        spec = [f"{k}={v}" for k, v in spec.items()]
    elif isinstance(spec, str | Estimator):
        spec = [spec]
    items = [e if isinstance(e, Estimator) else parse_estimator(e) for e in spec]
    names = [e.name for e in items]
    if not items or len(set(names)) != len(names):
        raise StudyError(f"give at least one estimator, each with its own name; got {names}")
    return tuple(items)


def describe(e: Estimator, design: NestedDesign) -> str:
    """The estimator's kind in words, a GLMM's approximation included."""
    from tiers.formula.glm import COMMANDS, read_glm

    if e.kind != "mixed":
        return e.kind
    glmm = glmm_options(e, design)
    if glmm is None:
        return "linear mixed model"
    spec = read_glm(str(e.formula))
    family = glmm["family"] or spec.family
    link = glmm["link"] or spec.link or ("logit" if family == "binomial" else "log")
    nagq = glmm["nagq"] or spec.nagq
    if nagq is None and str(e.formula).split(None, 1)[0].lower() in COMMANDS:
        how = "Stata's default: adaptive quadrature, 7 points per level where tiers has it"
    elif nagq is None or nagq == 1:
        how = "Laplace approximation"
    else:
        how = f"adaptive Gauss-Hermite quadrature, {nagq} points"
    return f"GLMM {family}/{link}, {how}"


def _check_estimators(design: NestedDesign, ests: Sequence[Estimator]) -> None:
    """Refuse, before any work, estimators naming columns the design does not produce.

    Formulas are parsed, not fitted; the columns checked are the response, the fixed part's
    variables and the grouping columns.
    """
    from tiers.formula.glm import read_glm
    from tiers.formula.parse import parse

    levels = [lv.name for lv in design.levels]
    covs = [cv.name for cv in design.covariates]
    columns = sorted({*levels, design.obs_name, *covs, design.response})
    if design.exposure is not None:
        columns = sorted([*columns, design.exposure])
    for e in ests:
        if e.kind != "mixed":
            if e.id is not None and e.id not in levels:
                raise StudyError(f"estimator {e.name!r}: id {e.id!r} is not a level of {levels}")
            if not covs:
                raise StudyError(f"estimator {e.name!r}: {e.kind} needs a covariate; none given")
            continue
        glmm = glmm_options(e, design)
        if glmm is None and (e.link is not None or e.nagq is not None):
            raise StudyError(
                f"estimator {e.name!r}: link and nagq are for a GLMM; the design's outcome is "
                "normal, so give family=binomial or family=poisson too"
            )
        try:
            f = parse(read_glm(str(e.formula)).base if glmm is not None else str(e.formula))
        except FormulaError as exc:
            raise FormulaError(f"estimator {e.name!r}: {exc}") from None
        used = {f.response: "the response", **dict.fromkeys(f.group_columns, "a grouping factor")}
        for col, role in {
            **dict.fromkeys(fixed_variables(f.fixed), "a predictor"),
            **used,
        }.items():
            if col not in columns:
                raise FormulaError(
                    f"estimator {e.name!r}: column {col!r} ({role}) is not produced by the design, "
                    f"whose columns are {columns}"
                )
        if f.response not in (design.response, *covs):
            raise FormulaError(f"estimator {e.name!r}: the response must be {design.response!r}")


def fixed_variables(rhs: str) -> set[str]:
    """The data columns a fixed part reads (its terms, or what formulaic finds in them)."""
    terms = [t.strip() for t in rhs.split("+")]
    if all(t in ("0", "1", "-1") or t.isidentifier() for t in terms):
        return {t for t in terms if t.isidentifier()}
    from formulaic import Formula as FFormula

    try:
        return set(FFormula(rhs).required_variables)
    except Exception as exc:  # formulaic raises several types
        raise FormulaError(f"cannot parse the fixed part {rhs!r}: {exc}") from None
