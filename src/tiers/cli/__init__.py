"""The command line: ``tiers fit``, ``tiers xtreg``, ``tiers study``, ``tiers explore`` and friends."""

from tiers.cli.main import app, main

__all__ = ["app", "main"]
