"""`python -m tinyllm.cli` runs the CLI."""

from tinyllm.cli import main

main()
