"""`python -m knowtune` runs the CLI."""

from knowtune.cli import main

main()
