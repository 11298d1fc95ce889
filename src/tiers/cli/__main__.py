"""``python -m tiers.cli``."""

from tiers.cli.main import main

main()
