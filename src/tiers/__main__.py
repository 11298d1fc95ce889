"""``python -m tiers``: the ``tiers`` command line."""

from tiers.cli.main import main

main()
