"""What a fresh process pays before and during its first fit: BLAS threads limited without
threadpoolctl's library scan, scipy.stats and formulaic not imported by a plain fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from tiers import _threads
from tiers._lazy import stats

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_code(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a fresh process importing this checkout's tiers, which must succeed."""
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("route", ["openblas", "threadpoolctl"])
def test_single_thread_blas_limits_and_restores(monkeypatch, route):
    if route == "threadpoolctl":
        monkeypatch.setattr(_threads, "_openblas", lambda loaded=(): None)
    before = blas_threads()
    with _threads.single_thread_blas():
        assert blas_threads() and all(n == 1 for n in blas_threads())
        with _threads.limit_blas(1):  # nested: the inner exit keeps the outer limit
            pass
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before


def test_openblas_found_directly():
    """numpy's and scipy's wheels bring OpenBLAS: the direct route applies to both."""
    libs = _threads._openblas(tuple(name in sys.modules for name in _threads._LOADERS))
    if not any(i["internal_api"] == "openblas" for i in threadpool_info()):
        pytest.skip("no OpenBLAS in this environment")
    assert libs is not None
    assert len(libs) == sum(i["internal_api"] == "openblas" for i in threadpool_info())


def test_lazy_stats_is_scipy_stats():
    from scipy import stats as real

    assert stats.norm is real.norm
    assert float(stats.chi2.sf(3.84, 1)) == pytest.approx(0.05, abs=1e-3)


def test_plain_fit_imports_neither_scipy_stats_nor_formulaic():
    """``import tiers`` and a fit with plain terms leave both out (0.3-0.8 s of imports)."""
    code = (
        "import sys, tiers\n"
        "d = tiers.simulate(tiers.seed_design(districts=2), seed=1)\n"
        "tiers.fit('perform ~ tutoring + (1 | dist_id/school_id)', d)\n"
        "print(sorted(m for m in ('scipy.stats', 'formulaic') if m in sys.modules))\n"
    )
    out = run_code(code)
    assert out.stdout.strip() == "[]"


def test_crossed_fit_with_a_text_factor_does_not_import_formulaic():
    """InstEval's shape (``service`` is text): its dummies are coded without formulaic, whose
    import was 0.09 of the 0.10 s of ``prepare`` (issue 17)."""
    code = (
        "import sys, numpy as np, pandas as pd, tiers\n"
        "rng = np.random.default_rng(3)\n"
        "n = 600\n"
        "s, d = rng.integers(0, 60, n), rng.integers(0, 20, n)\n"
        "data = pd.DataFrame({'s': s.astype(str), 'd': d.astype(str),\n"
        "    'dept': (d % 4).astype(str), 'service': rng.choice(['0', '1'], n).astype(object)})\n"
        "data['y'] = rng.normal(size=n) + 0.5 * (data.service == '1') + rng.normal(size=60)[s]\n"
        "r = tiers.fit('y ~ service + (1 | s) + (1 | d) + (1 | dept:service)', data)\n"
        "print(list(r.fixef.index), 'formulaic' in sys.modules)\n"
    )
    out = run_code(code)
    assert out.stdout.strip() == "['(Intercept)', 'service[T.1]'] False"


def test_first_fit_imports_nothing():
    """Everything a fit needs comes with ``import tiers``: the first fit of a process pays no
    imports (scipy.optimize alone took 0.2-0.4 s there)."""
    code = (
        "import sys, tiers\n"
        "d = tiers.simulate(tiers.seed_design(districts=2), seed=1)\n"
        "before = set(sys.modules)\n"
        "tiers.fit('perform ~ tutoring + (1 | dist_id/school_id)', d)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    out = run_code(code)
    assert out.stdout.strip() == "[]"


#: What ``tiers fit FORMULA DATA`` (a model-based fit and Stata's summary) never uses: each is
#: imported by the option or method that does (0.4-0.5 s of scipy.stats alone in a fresh process).
CLI_FIT_NEVER = (
    "scipy.stats",
    "formulaic",
    "tiers.inference.kenward_roger",
    "tiers.inference.satterthwaite",
    "tiers.variance.robust",
    "tiers.variance.cr2",
    "tiers.engine.pseudo",
    "tiers.report.lme4",
    "tiers.report.json",
)


def test_cli_fit_imports_only_what_it_prints(tmp_path):
    """``tiers fit`` in a fresh process: the summary printed, none of `CLI_FIT_NEVER` loaded."""
    from tiers import seed_design, simulate

    csv = tmp_path / "seed.csv"
    simulate(seed_design(districts=2), seed=1).to_csv(csv, index=False)
    code = (
        "import sys\n"
        "from tiers.cli.main import main\n"
        f"sys.argv = ['tiers', 'fit', 'perform ~ tutoring + (1 | dist_id/school_id)', {str(csv)!r}]\n"
        "main()\n"
        f"print(sorted(m for m in {CLI_FIT_NEVER!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = run_code(code)
    assert "Mixed-effects REML regression" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_cli_leaves_its_objects_out_of_the_exit_collections(tmp_path):
    """`tiers.cli.main.main` freezes the heap at exit (the last collections cost 0.1 s)."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 10_000))\n"
        "from tiers.cli.main import main\n"
        "sys.argv = ['tiers', '--version']\n"
        "main()\n"
    )
    done = run_code(code)
    assert done.stdout.splitlines()[-1] == "frozen True"


def test_the_command_fits_the_seed_model_without_scipy(tmp_path):
    """``tiers fit`` imports only what its fit uses: the seed model (a balanced design, certified
    by the Newton polish from its ANOVA start) and its summary need no scipy, whose modules cost
    the command 0.15 s of 0.55 (issue 17: the command on 80,000 rows under 0.5 s)."""
    from tiers import seed_design, simulate

    csv = tmp_path / "seed.csv"
    simulate(seed_design(districts=10), seed=1).to_csv(csv, index=False)
    formula = "perform ~ tutoring + (1 | dist_id/school_id/teach_id/student_id)"
    env = {**os.environ, "PYTHONPATH": SRC}
    for head in (["-m", "tiers"], ["-m", "tiers.cli"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *head, "fit", formula, str(csv)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Mixed-effects REML regression" in done.stdout
        assert "Prob > chi2" in done.stdout and "P>|z|" in done.stdout
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
        assert "tiers.fitting" in imported
        assert not [m for m in imported if m == "scipy" or m.startswith("scipy.")]


def test_a_python_session_imports_the_optimizer_with_tiers():
    """Outside the command, scipy.optimize comes with ``import tiers`` (its first fit of a design
    that needs L-BFGS-B would otherwise pay 0.1-0.2 s of imports)."""
    code = "import sys, tiers; print('scipy.optimize' in sys.modules)"
    done = run_code(code)
    assert done.stdout.strip() == "True"


def test_import_tiers_loads_the_fit_path_only():
    """Panel estimators, the crossed engine, Dask support and the simulation load on first use."""
    code = (
        "import sys, tiers; print(sorted(m for m in sys.modules if m.startswith(("
        "'tiers.panel', 'tiers.scale', 'tiers.engine.crossed', 'tiers.simulation', 'scipy.stats'))))"
    )
    done = run_code(code)
    assert done.stdout.strip() == "[]"


def test_children_start_with_one_blas_thread(monkeypatch):
    """`single_thread_children`: a process started inside loads its BLAS with one thread; the
    parent's environment is restored after."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    code = (
        "import threadpoolctl, numpy; "
        "print([i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'])"
    )
    with _threads.single_thread_children():
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1]"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in os.environ
