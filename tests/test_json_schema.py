"""The ``tiers fit --json`` document against docs/json.schema.json, and that schema against the
prose in docs/json.md.

The schema forbids unknown fields (``additionalProperties: false`` at the top level and in every row
object), so a new or renamed field fails here until the schema and docs/json.md say the same.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import tiers

from .conftest import REFERENCE, REPO, fit_reference, load_case

SCHEMA_PATH = REPO / "docs" / "json.schema.json"
DOC_PATH = REPO / "docs" / "json.md"

#: Reference fits whose ``to_dict()`` is validated: (case, fit key), what each one covers.
FITS = [
    ("pastes", "nested_REML"),  # nested random intercepts, implicit nesting, variance shares
    ("sleepstudy", "corr_REML"),  # random slope with a correlation (tree engine)
    ("sleepstudy", "uncorr_ML"),  # independent slopes, ML: `deviance` instead of `reml_criterion`
    ("penicillin", "crossed_REML"),  # crossed engine
    ("dyestuff2", "ri_REML"),  # singular: SEs and intervals of the zero SD are null
    ("dyestuff", "ri_ML"),  # one level, ML
]

#: Command lines (after ``tiers fit``) whose ``--json`` output is validated: formula, data file,
#: options. Each ``--ci`` method adds the ``confint`` block in its own shape.
CLI_RUNS = {
    "nested-wald": ("strength ~ 1 + (1 | batch/cask)", "pastes", ["--ci", "wald"]),
    "singular-wald": ("Yield ~ 1 + (1 | Batch)", "dyestuff2", ["--ci", "wald"]),
    "slope-ml-profile": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", ["--ml", "--ci", "profile"]),
    "bootstrap": ("Yield ~ 1 + (1 | Batch)", "dyestuff", ["--ci", "bootstrap", "--n-boot", "20", "--seed", "1"]),
    "stata-syntax": ("strength || batch: || cask:", "pastes", []),
    "crossed-no-ci": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin", []),
    "cr2-wald": ("strength ~ 1 + (1 | batch/cask)", "pastes", ["--vce", "cr2", "--ci", "wald"]),
    "sampling-weights": ("y x [pw=w_student] || school:, pweight(w_school)", "weights/twostage_sim", []),
    "precision-weights": ("Reaction ~ Days + (Days | Subject)", "weights/sleepstudy_weighted", ["--weights", "w"]),
}  # fmt: skip

#: json.md's type words and the JSON types they stand for.
DOC_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


@cache
def _schema() -> dict[str, Any]:
    """docs/json.schema.json, parsed."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@cache
def _validator() -> Draft202012Validator:
    """A draft 2020-12 validator of the schema, after checking the schema itself."""
    Draft202012Validator.check_schema(_schema())
    return Draft202012Validator(_schema())


def _errors(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` breaks the schema, one line each.

    Parameters
    ----------
    doc : dict
        A fit document.

    Returns
    -------
    list of str
        ``<path>: <message>`` per error, empty when the document is valid.
    """
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def _assert_valid(doc: dict[str, Any]) -> None:
    """Fail with every schema error listed when ``doc`` is not a valid, NaN-free JSON document.

    Parameters
    ----------
    doc : dict
        A fit document, as ``to_dict()`` returns it or as read back from the CLI's file.
    """
    json.dumps(doc, allow_nan=False)  # JSON has no NaN: undefined numbers must be null
    errors = _errors(doc)
    assert not errors, "document does not match docs/json.schema.json:\n" + "\n".join(errors)


@cache
def _to_dict(case: str, key: str) -> dict[str, Any]:
    """``to_dict()`` of one reference model fitted as lme4 fitted it.

    Parameters
    ----------
    case, key : str
        A reference case and one of its fits.

    Returns
    -------
    dict
        The document (callers copy it before changing it).
    """
    res, _ = fit_reference(case, key)
    return res.to_dict()


@pytest.mark.parametrize(("case", "key"), FITS, ids=[f"{c}-{k}" for c, k in FITS])
def test_to_dict_matches_schema(case: str, key: str) -> None:
    _assert_valid(_to_dict(case, key))


def test_stata_syntax_to_dict_matches_schema() -> None:
    data, _ = load_case("pastes")
    doc = tiers.fit("strength || batch: || cask:", data, reml=False).to_dict()
    assert (doc["syntax"], doc["method"]) == ("stata", "ML")
    _assert_valid(doc)


@pytest.mark.parametrize("run", list(CLI_RUNS))
def test_cli_json_matches_schema(run: str, tmp_path: Path) -> None:
    formula, case, options = CLI_RUNS[run]
    out = tmp_path / "fit.json"
    args = ["fit", formula, str(REFERENCE / f"{case}.csv"), "--json", str(out), *options]
    proc = subprocess.run(
        [sys.executable, "-m", "tiers.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, f"tiers {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert ("confint" in doc) == ("--ci" in options)
    _assert_valid(doc)


# ------------------------------------------------------------------ the schema can fail --


def _retype(doc: dict[str, Any]) -> None:
    doc["nobs"] = str(doc["nobs"])


def _unknown_top(doc: dict[str, Any]) -> None:
    doc["p_value_wald"] = 0.5


def _unknown_in_row(doc: dict[str, Any]) -> None:
    doc["fixed_effects"][0]["t_value"] = 1.0


def _nan_as_string(doc: dict[str, Any]) -> None:
    doc["random_effects"][0]["std_error"] = "NaN"


def _missing(doc: dict[str, Any]) -> None:
    del doc["theta_names"]


def _both_criteria(doc: dict[str, Any]) -> None:
    doc["deviance"] = doc["reml_criterion"]


@pytest.mark.parametrize(
    "spoil", [_retype, _unknown_top, _unknown_in_row, _nan_as_string, _missing, _both_criteria]
)
def test_schema_rejects_a_spoiled_document(spoil: Any) -> None:
    doc = copy.deepcopy(_to_dict("pastes", "nested_REML"))
    assert not _errors(doc)
    spoil(doc)
    assert _errors(doc), f"the schema accepted a document changed by {spoil.__name__}"


# -------------------------------------------------------------- docs/json.md and schema --


def _doc_fields() -> dict[str, tuple[str, str]]:
    """The fields json.md's tables list: name -> (its type, the row's meaning).

    A row's first cell holds one or more backticked names (``aic``, ``bic``, ``n_params``); they
    share the row's meaning, and its type cell then lists one type per name, separated by commas
    outside brackets (``float, [lower, upper]``). ``\\|`` in a cell is a literal bar.

    Returns
    -------
    dict
        In the order of the page; ``confint.<name>`` for the fields the ``--ci`` table adds.
    """
    fields: dict[str, tuple[str, str]] = {}
    for line in DOC_PATH.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 3, f"json.md: a table row without 3 cells: {line}"
        names = re.findall(r"`([^`]+)`", cells[0])
        types = re.split(r",\s*(?![^\[{]*[\]}])", cells[1]) if len(names) > 1 else [cells[1]]
        assert len(types) == len(names), f"json.md: {len(names)} names, types {types}: {line}"
        for name, type_cell in zip(names, types, strict=True):
            assert name not in fields, f"json.md lists {name} twice"
            fields[name] = (type_cell, cells[2])
    assert fields, "json.md has no field table"
    return fields


def _node(name: str) -> dict[str, Any] | None:
    """The schema's node of a top-level field or of ``confint.<field>``.

    Parameters
    ----------
    name : str
        As json.md writes it.

    Returns
    -------
    dict or None
        None when the schema has no such field.
    """
    node: dict[str, Any] | None = {"properties": _schema()["properties"]}
    for part in name.split("."):
        node = None if node is None else node.get("properties", {}).get(part)
    return node


def _resolve(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A node, the node its ``$ref`` points to, and its ``oneOf`` branches, resolved.

    Parameters
    ----------
    node : dict
        A schema node.

    Returns
    -------
    list of dict
        Every node that constrains a value at this place.
    """
    out = [node]
    if "$ref" in node:
        out += _resolve(_schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]])
    for branch in node.get("oneOf", []):
        out += _resolve(branch)
    return out


def _json_types(node: dict[str, Any]) -> set[str]:
    """The JSON types a schema node allows (``type`` of the node, its ``$ref`` and branches)."""
    types: set[str] = set()
    for n in _resolve(node):
        t = n.get("type", [])
        types |= {t} if isinstance(t, str) else set(t)
    return types


def _record_fields(node: dict[str, Any]) -> set[str] | None:
    """The properties of the object a node holds (or of its array's items); None if neither."""
    for n in _resolve(node):
        if "items" in n and isinstance(n["items"], dict):
            n = _resolve(n["items"])[-1]
        if "properties" in n:
            return set(n["properties"])
    return None


def test_every_schema_field_is_documented() -> None:
    documented = {name.split(".")[0] for name in _doc_fields()}
    missing = sorted(set(_schema()["properties"]) - documented)
    assert not missing, f"fields in json.schema.json that docs/json.md does not list: {missing}"


def test_every_documented_field_is_in_the_schema() -> None:
    missing = [name for name in _doc_fields() if _node(name) is None]
    assert not missing, f"fields docs/json.md lists that json.schema.json lacks: {missing}"


@pytest.mark.parametrize("name", list(_doc_fields()))
def test_doc_and_schema_agree_on_a_field(name: str) -> None:
    type_cell, meaning = _doc_fields()[name]
    node = _node(name)
    assert node is not None, f"{name} is not in the schema"
    assert node.get("description") == meaning, (
        f"{name}: the schema's description differs from json.md's meaning\n"
        f"schema: {node.get('description')}\njson.md: {meaning}"
    )
    listed = re.search(r"\{([^{}]*)\}", type_cell)
    if listed and ":" not in listed.group(1):  # `{name: int}` is a map, not a record
        doc_keys, keys = {k.strip() for k in listed.group(1).split(",")}, _record_fields(node)
        assert doc_keys == keys, f"{name}: json.md lists {sorted(doc_keys)}, schema {keys}"
    first = type_cell.split()[0]
    want = {"array"} if first.startswith("[") else {"object"} if first.startswith("{") else set()
    want |= {DOC_TYPES[first]} if first in DOC_TYPES else set()
    types = _json_types(node)
    assert want and want == types - {"null"}, f"{name}: json.md says {type_cell}, schema {types}"
    if "or null" in type_cell:
        assert "null" in types, f"{name}: json.md says it may be null, the schema does not"
    elif first != "float":  # json.md: a float may be null where the text says so
        assert "null" not in types, f"{name}: the schema allows null, json.md does not say so"


# ----------------------------------------------------------------------------- GLMMs --

GLMM_DATA = REPO / "tests" / "data" / "glmm" / "glmm_structures.csv"

#: GLMM fits whose ``to_dict()`` is validated: formula, data, options, what each one covers.
GLMM_FITS = {
    "cbpp-logit": ("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", "cbpp", {}),
    "cbpp-probit-agq": (
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
        "cbpp",
        {"link": "probit", "nagq": 5},
    ),  # quadrature, latent variance 1
    "stata-melogit": ("melogit incidence i.period || herd:, binomial(size)", "cbpp", {}),
    "poisson-crossed": ("count ~ x + (1 | subj) + (1 | item)", "structures", {"family": "poisson"}),
    "binary-slope": ("y ~ x + (x | subj)", "structures", {}),  # a correlation, no shares
}


@cache
def _glmm_dict(run: str) -> dict[str, Any]:
    """``to_dict()`` of one GLMM of `GLMM_FITS`."""
    import pandas as pd

    formula, case, opts = GLMM_FITS[run]
    if case == "cbpp":
        data = pd.read_csv(REFERENCE / "glmm" / "cbpp.csv", dtype={"herd": str, "period": str})
    else:
        data = pd.read_csv(GLMM_DATA, dtype={"subj": str, "item": str})
    family = opts.get("family", None if formula.startswith("me") else "binomial")
    kw = {k: v for k, v in opts.items() if k != "family"}
    return tiers.fit(formula, data, family=family, **kw).to_dict()


@pytest.mark.parametrize("run", list(GLMM_FITS))
def test_glmm_to_dict_matches_schema(run: str) -> None:
    doc = _glmm_dict(run)
    _assert_valid(doc)
    assert doc["method"] == "ML" and doc["residual_sd"] is None
    assert all(r["df"] is None and r["p_value"] is None for r in doc["fixed_effects"])


def test_glmm_documents_say_what_they_are() -> None:
    probit = _glmm_dict("cbpp-probit-agq")
    assert (probit["link"], probit["nAGQ"], probit["approximation"]) == (
        "probit", 5, "adaptive Gauss-Hermite quadrature",
    )  # fmt: skip
    assert probit["latent_residual_variance"] == 1.0
    shares = probit["variance_shares"]
    assert shares[-1]["level"] == "latent residual (probit)" and shares[-1]["variance"] == 1.0
    assert sum(r["share"] for r in shares) == pytest.approx(1.0, rel=1e-12)
    poisson = _glmm_dict("poisson-crossed")
    assert poisson["latent_residual_variance"] is None and poisson["variance_shares"] == []
    assert poisson["lr_test_vs_linear"]["kind"] == "chi2(2)"
    slope = _glmm_dict("binary-slope")
    assert [c["term1"] for c in slope["correlations"]] == ["(Intercept)"]
    assert slope["variance_shares"] == [] and _glmm_dict("stata-melogit")["syntax"] == "stata"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d.pop("nAGQ"),
        lambda d: d.update(method="REML"),
        lambda d: d.update(link="identity"),
        lambda d: d["fixed_effects"][0].update(z_value=1.0),
    ],
)
def test_schema_rejects_a_spoiled_glmm_document(spoil: Any) -> None:
    doc = copy.deepcopy(_glmm_dict("cbpp-logit"))
    spoil(doc)
    assert _errors(doc)


def test_a_linear_document_may_not_carry_glmm_fields() -> None:
    doc = copy.deepcopy(_to_dict("pastes", "nested_REML"))
    doc["nAGQ"] = 1
    assert _errors(doc)


@pytest.mark.parametrize("ci", [None, "wald", "profile"])
def test_cli_glmm_json_matches_schema(ci: str | None, tmp_path: Path) -> None:
    out = tmp_path / "fit.json"
    args = ["fit", "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
            str(REFERENCE / "glmm" / "cbpp.csv"), "--family", "binomial", "--json", str(out),
            *(["--ci", ci] if ci else [])]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "tiers.cli", *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    _assert_valid(doc)
    if ci:
        names = [p["name"] for p in doc["confint"]["parameters"]]
        assert names[0] == "sd_(Intercept)|herd" and doc["confint"]["method"] == ci
