"""`python -m acefarm` runs the `acefarm` command."""

from acefarm.cli import main

main()
