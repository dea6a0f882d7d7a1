"""`python -m acefarm` runs the `acefarm` command."""

from acefarm.devtools.cli import main

main()
