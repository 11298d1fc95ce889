"""A nested design written as a partitioned dataset, chunk by chunk, in bounded memory.

For data larger than memory (10^8 rows of the seed design), `write_partitioned` draws a few top-level
units at a time and writes each chunk to its own file (``part-00000.parquet``, ...), so memory is
bounded by one chunk whatever the size.

Streams: the seed's `numpy.random.SeedSequence` is spawned into one child per top-level unit
(district), and each district is drawn from its own generator by `tiers.simulation.data.simulate`
(as a one-district design, the draw order of that module). The data is therefore reproducible and
the same whatever the chunk size; it is not the stream of one `simulate` call over the whole design
(that draws each level over all units first, which needs all rows at once).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tiers.data.io import write_data
from tiers.errors import DesignError
from tiers.simulation.data import NestedDesign, simulate

Format = Literal["parquet", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "csv")
#: Rows per file by default: a partition of a few tens of MB.
ROWS_PER_FILE = 1_000_000


def draw_units(
    design: NestedDesign,
    children: list[np.random.SeedSequence],
    first: int,
    *,
    restart_ids: bool = False,
) -> pd.DataFrame:
    """Top-level units ``first .. first + len(children) - 1``, each from its own stream.

    Ids are those of the whole design (``restart_ids`` False: each level's ids run over the whole
    data set; True: they restart within each parent).
    """
    top = design.levels[0].name
    one = design.with_units(top, 1)
    per_unit = list(one.ngroups.values())
    frames = []
    for k, child in enumerate(children):
        frame = simulate(one, np.random.default_rng(child), restart_ids=restart_ids)
        unit = first + k
        frame[top] = unit + 1
        if not restart_ids:
            for lv, n in zip(design.levels[1:], per_unit[1:], strict=True):
                frame[lv.name] += unit * n
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_partitioned(
    design: NestedDesign,
    folder: str | Path,
    seed: int | None,
    *,
    fmt: Format = "parquet",
    rows_per_file: int = ROWS_PER_FILE,
    restart_ids: bool = False,
) -> list[Path]:
    """Write ``design`` drawn with ``seed`` to ``folder`` as ``part-NNNNN.<fmt>`` files.

    Parameters
    ----------
    design : NestedDesign
    folder : str or Path
        Created if absent; must not already hold ``part-*`` files of this format.
    seed : int or None
        Root of the per-district streams (None: fresh entropy).
    fmt : {"parquet", "csv"}
    rows_per_file : int
        About this many rows per file (whole top-level units per file).
    restart_ids : bool
        See `tiers.simulation.data.simulate`.

    Returns
    -------
    list of Path
        The files written, in order.

    Raises
    ------
    DesignError
        An unknown format, a bad ``rows_per_file``, or a folder that already holds such files.
    """
    if fmt not in FORMATS:
        raise DesignError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if isinstance(rows_per_file, bool) or not isinstance(rows_per_file, int) or rows_per_file < 1:
        raise DesignError(f"rows_per_file must be a positive integer; got {rows_per_file!r}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DesignError(f"{str(folder)!r} is a file; give a folder for a partitioned dataset")
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.glob(f"part-*.{fmt}")):
        raise DesignError(
            f"{str(folder)!r} already holds part-*.{fmt} files; give an empty or new folder"
        )
    units = design.levels[0].units
    per_unit = design.nrows // units
    chunk = max(1, rows_per_file // per_unit)
    children = np.random.SeedSequence(seed).spawn(units)
    written = []
    for i in range(math.ceil(units / chunk)):
        first = i * chunk
        frame = draw_units(design, children[first : first + chunk], first, restart_ids=restart_ids)
        written.append(write_data(frame, folder / f"part-{i:05d}.{fmt}"))
        del frame
    return written
