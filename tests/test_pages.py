"""`tiers._pages.small_pages`: numpy's huge-page advice off inside the block, restored after."""

from __future__ import annotations

import numpy as np
import pytest

from tiers._pages import _switch, small_pages


def test_the_advice_is_off_inside_and_restored_after() -> None:
    switch = _switch()
    if switch is None:  # pragma: no cover - every numpy this project pins has the switch
        pytest.fail("numpy has no _set_madvise_hugepage: small_pages would change nothing")
    for setting in (True, False):
        switch(setting)
        with small_pages():
            assert switch(False) is False  # reads the setting (and leaves it off)
        assert switch(setting) is setting
    switch(True)


def test_a_crossed_fit_leaves_the_advice_as_it_found_it() -> None:
    import pandas as pd

    import tiers

    rng = np.random.default_rng(2)
    n = 3000
    a, b = rng.integers(0, 80, n), rng.integers(0, 60, n)
    y = rng.normal(size=80)[a] + rng.normal(size=60)[b] + rng.normal(size=n)
    data = pd.DataFrame({"y": y, "a": a, "b": b})
    switch = _switch()
    assert switch is not None
    before = switch(True)
    try:
        fit = tiers.fit("y ~ 1 + (1 | a) + (1 | b)", data)
        assert fit.engine == "crossed"
        assert switch(True) is True  # the fit left the advice as it found it
    finally:
        switch(before)
    assert np.isfinite(fit.deviance)
