"""`python -m tinyllm` runs the CLI."""

from tinyllm.cli import main

main()
