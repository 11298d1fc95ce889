"""Checks of options at the public edge: a bad value is refused with the values allowed."""

from __future__ import annotations


def check_level(level: float) -> None:
    """Refuse a confidence level outside (0, 1).

    Raises
    ------
    ValueError
        Naming the value and an example of a valid one.
    """
    if not (isinstance(level, float | int) and 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be strictly between 0 and 1 (e.g. 0.95); got {level!r}")


def check_option(value: object, valid: tuple[str, ...], what: str) -> None:
    """Refuse ``value`` unless it is one of ``valid``.

    Raises
    ------
    ValueError
        Listing the valid values.
    """
    if value not in valid:
        raise ValueError(f"{what} must be one of {', '.join(valid)}; got {value!r}")
