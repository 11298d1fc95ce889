"""Notebook display: HTML tables, Markdown and LaTeX of fits, LR tests, studies and plans; one-line
reprs; and a notebook executed by a Jupyter kernel (nbclient) and exported to HTML (nbconvert),
both checked."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import tiers
from tests.conftest import REFERENCE, fit_reference
from tests.htmlcheck import check_html
from tiers.inference.lrtest import lrtest
from tiers.results.display import Table


@pytest.fixture(scope="module")
def sleep_reml():
    return fit_reference("sleepstudy", "corr_REML")[0]


@pytest.fixture(scope="module")
def nested(seed_small):
    return tiers.fit("perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)", seed_small)


def _latex_ok(latex: str) -> None:
    assert latex.startswith("$$") and latex.endswith("$$")
    body = latex.strip("$")
    assert body.count(r"\begin{array}") == body.count(r"\end{array}")
    assert body.count("{") == body.count("}") + body.count(r"\{") - body.count(r"\}")
    # LaTeX's specials only as escapes (math mode), and & only between columns
    bare = re.sub(r"\\[_%&#$]", "", body).replace(" & ", " ")
    assert not re.search(r"[_%&#$]", bare), "an unescaped special character"


def test_fit_displays_the_same_cells_in_three_renderings(nested):
    html = nested._repr_html_()
    page = check_html(html, fragment=True)
    assert page.tags["table"] == 4  # facts, fixed effects, variance components, shares
    shares = nested.variance_shares()
    md = nested._repr_markdown_()
    latex = nested._repr_latex_()
    for v in (*shares["share"], *shares["icc_upper"].iloc[:-1]):
        cell = f"{v:.4f}"
        assert cell in html and cell in md and cell in latex
    est = f"{nested.fixef['tutoring']:.6g}"
    assert est in html and f"| tutoring | {est} |" in md and rf"\text{{{est}}}" in latex
    assert "**Variance shares and intraclass correlations**" in md
    _latex_ok(latex)
    assert r"\text{student}\_\text{id" in latex and "student_id" not in latex.replace(r"\_", "")


def test_one_line_reprs(nested, sleep_reml):
    for obj in (nested, sleep_reml):
        assert "\n" not in repr(obj) and len(repr(obj)) < 200
    m0 = tiers.fit("Reaction ~ Days + (1 | Subject)", sleep_reml.design.frame.data, reml=False)
    m1 = sleep_reml.refit(reml=False)
    test = lrtest(m0, m1)
    assert repr(test) == (
        f"<LRTest {test.test}: LR = {test.chi2:.4g}, df = {test.df}, p = {test.p_value:.4g} "
        "(ML fits)>"
    )
    page = check_html(test._repr_html_(), fragment=True)
    assert page.tags["table"] == 1 and f"{test.chi2:.4f}" in test._repr_markdown_()
    assert test.reason in " ".join(page.text)
    _latex_ok(test._repr_latex_())
    plan = tiers.plan_design(tiers.seed_design(districts=5), target_se={"sd_dist_id": 0.5})
    assert repr(plan) == "<DesignPlan REML: 8,000 rows, 7 parameters, searching dist_id>"
    page = check_html(plan._repr_html_(), fragment=True)
    assert page.tags["table"] == 3
    se = plan.table().loc["sd_dist_id", "expected_se"]
    assert f"{se:.4g}" in plan._repr_markdown_()
    _latex_ok(plan._repr_latex_())


def test_study_displays():
    from tests.test_study import NESTED, tiny

    res = tiers.run_study(tiny(), {"nested": NESTED}, sizes=[3], replicates=2, seed=1, workers=1)
    assert repr(res) == "<StudyResult 1 estimators x 1 sizes x 2 replicates, level a>"
    page = check_html(res._repr_html_(), fragment=True)
    assert page.tags["table"] == 4
    assert "**Summary over replicates**" in res._repr_markdown_()
    _latex_ok(res._repr_latex_())


def test_table_escapes_what_each_format_needs():
    t = Table.of("a <b> & c_d", ("x|y", "v"), [("<i>", "1%"), ("p_q", "$2")], notes=["n&m"])
    assert "&lt;i&gt;" in t.to_html() and "<i>" not in t.to_html()
    assert r"x\|y" in t.to_markdown()
    latex = t.to_latex()
    assert r"\text{p}\_\text{q}" in latex and r"\text{1}\%" in latex and r"\$\text{2}" in latex
    assert r"\textbf{a <b> }\&\textbf{ c}\_\textbf{d}" in latex
    check_html(t.to_html(), fragment=True)


def test_a_notebook_runs_and_shows_html_tables_and_figures(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is a dev dependency")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is a dev dependency")
    pytest.importorskip("ipykernel", reason="ipykernel is a dev dependency")
    csv = REFERENCE / "sleepstudy.csv"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import pandas as pd\nimport tiers\n"
            f"data = pd.read_csv({str(csv)!r})\n"
            "res = tiers.fit('Reaction ~ Days + (1 | Subject)', data)\nres"
        ),
        nbformat.v4.new_code_cell("res.plot('caterpillar')"),
        nbformat.v4.new_code_cell("tiers.plan_design(tiers.seed_design(districts=5))"),
    ]
    # the kernel imports this tiers (the source tree under test), whatever its working folder
    env = {**os.environ, "PYTHONPATH": str(Path(tiers.__file__).resolve().parents[1])}
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute(env=env)
    out = nb.cells[0].outputs[0]
    assert out.output_type == "execute_result"
    assert {"text/html", "text/markdown", "text/latex", "text/plain"} <= set(out.data)
    page = check_html(out.data["text/html"], fragment=True)
    assert page.tags["table"] == 4 and "Variance shares and intraclass correlations" in page.text
    assert out.data["text/plain"].startswith("<LmmResult REML nested: Reaction ~ Days")
    fig = nb.cells[1].outputs
    assert any("image/png" in o.get("data", {}) for o in fig), fig
    plan = nb.cells[2].outputs[0].data
    assert check_html(plan["text/html"], fragment=True).tags["table"] == 2  # SEs, power
    # the page nbconvert makes of the executed notebook (what a reader of an exported report sees)
    nbconvert = pytest.importorskip("nbconvert", reason="nbconvert is a dev dependency")
    exporter = nbconvert.HTMLExporter()
    html, _ = exporter.from_notebook_node(nb)
    # nbconvert's own template loads require.js and MathJax from a CDN; everything else on the page
    # (tiers' tables and figure) must be inline, which check_html enforces
    for url in (exporter.require_js_url, exporter.mathjax_url):
        html, n = re.subn(rf'<script src="{re.escape(url)}">\s*</script>', "", html)
        assert n == 1, url
    doc = check_html(html)
    assert doc.tags["table"] == 4 + 2  # the fit's four tables and the plan's two
    assert "Variance shares and intraclass correlations" in doc.text
    assert "Fixed effects" in doc.text and "Subject" in doc.text
    assert len(doc.images) == 1  # the caterpillar plot, an inline PNG (checked by check_html)
