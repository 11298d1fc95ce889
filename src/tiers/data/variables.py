"""Which columns a formula reads, and the response when it is an expression of columns.

formulaic's ``required_variables`` leaves out the variables used only inside stateful transforms
(``center(x)``, ``scale(x)``, ``poly(x, 2)``), so the model frame would lack them and formulaic
would fail with a ``NameError``. Here every term is parsed (formulaic's parser, then Python's `ast`
for each Python factor) and every name read as a value is a column; every function called must be
one formulaic knows, else the error names it and the spelling tiers understands.
"""

from __future__ import annotations

import ast
import builtins
from typing import Any

import numpy as np
import pandas as pd

from tiers.errors import DataError, FormulaError

#: What to say for a function formulaic does not know.
KNOWN_FUNCTIONS = (
    "C(), I(), center(), scale(), standardize(), poly(), bs(), cr(), log(), exp(), np.* (numpy) "
    "and Python's built-ins"
)


def _transforms() -> dict[str, Any]:
    from formulaic.transforms import TRANSFORMS

    return dict(TRANSFORMS)


def expression_variables(rhs: str, *, what: str) -> list[str]:
    """Columns read by a formulaic right-hand side, in order of first use.

    Parameters
    ----------
    rhs : str
        ``"1 + center(x) + C(g)"``, a random-effects expression, or a response wrapped as a term.
    what : str
        The part of the model, for messages (``"the fixed part of 'y ~ ...'"``).

    Raises
    ------
    FormulaError
        formulaic cannot parse ``rhs``, or it calls a function formulaic does not know.
    """
    plain = [t.strip() for t in rhs.split("+")]
    if all(t in ("0", "1") or t.isidentifier() for t in plain):
        return list(dict.fromkeys(t for t in plain if t not in ("0", "1")))
    from formulaic import Formula as FFormula
    from formulaic.parser.types import Factor

    try:
        terms = list(FFormula(rhs))
    except Exception as exc:  # formulaic raises several types; report them as one
        raise FormulaError(f"cannot parse {what} ({rhs!r}): {exc}") from None
    known = _transforms()
    out: dict[str, None] = {}
    for term in terms:
        for factor in term.factors:
            if factor.eval_method == Factor.EvalMethod.LOOKUP:
                out.setdefault(str(factor.expr), None)
            elif factor.eval_method == Factor.EvalMethod.PYTHON:
                for name in python_names(str(factor.expr), known, what=what):
                    out.setdefault(name, None)
    return list(out)


def python_names(code: str, known: dict[str, Any], *, what: str) -> list[str]:
    """Names ``code`` reads as values (its columns), checking the functions it calls."""
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        raise FormulaError(f"cannot read the term {code!r} in {what}") from None
    names: dict[str, None] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                _check_function(func.id, code, known, what)
                if func.id == "Q" and node.args and isinstance(node.args[0], ast.Constant):
                    names.setdefault(str(node.args[0].value), None)  # Q("odd name")
                    return
            elif isinstance(func, ast.Attribute):
                _check_module(func, code, known, what)
            else:
                visit(func)
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                visit(arg)
            return
        if isinstance(node, ast.Attribute):
            _check_module(node, code, known, what)
            return
        if isinstance(node, ast.Name):
            if node.id not in known:
                names.setdefault(node.id, None)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return list(names)


def _check_function(name: str, code: str, known: dict[str, Any], what: str) -> None:
    if name in known or hasattr(builtins, name):
        return
    raise FormulaError(
        f"unknown function {name}() in the term {code!r} of {what}: tiers reads terms with "
        f"formulaic, which knows {KNOWN_FUNCTIONS}; for numpy's write np.{name}()"
    )


def _check_module(node: ast.Attribute, code: str, known: dict[str, Any], what: str) -> None:
    root: ast.expr = node
    while isinstance(root, ast.Attribute):
        root = root.value
    if isinstance(root, ast.Name) and root.id not in known:
        raise FormulaError(
            f"unknown name {root.id!r} in the term {code!r} of {what}: of modules only numpy "
            f"(as np) is available; formulaic knows {KNOWN_FUNCTIONS}"
        )


def response_variables(response: str, column: str | None, *, what: str) -> list[str]:
    """Columns the response reads: its column, or those of its expression."""
    if column is not None:
        return [column]
    return python_names(response, _transforms(), what=what)


def evaluate_response(response: str, data: pd.DataFrame) -> pd.Series:
    """The response expression (``np.log(Reaction)``, ``log(y + 1)``) evaluated by formulaic.

    It is evaluated as the fixed part's terms are (``I(...)`` around it, so ``y / 10`` is a
    division as in R); stateful transforms (``center(y)``) use the rows of the model frame.

    Raises
    ------
    DataError
        The expression cannot be evaluated, or gives more than one column (a categorical
        expression).
    """
    from formulaic import model_matrix as fmm

    try:
        with np.errstate(all="ignore"):  # log of a non-positive number: reported by the caller
            mm = fmm(f"0 + I({response})", data, na_action="ignore")
    except Exception as exc:
        raise DataError(f"cannot evaluate the response {response!r}: {exc}") from None
    if mm.shape[1] != 1:
        raise DataError(
            f"the response {response!r} gives {mm.shape[1]} columns ({', '.join(map(str, mm.columns))}); "
            "a linear mixed model needs one numeric response"
        )
    return pd.Series(mm.iloc[:, 0].to_numpy(), index=data.index, name=response)
