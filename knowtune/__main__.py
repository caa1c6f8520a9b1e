"""`python -m knowtune` runs the CLI."""

from knowtune.cli import main

if __name__ == "__main__":  # vLLM's spawned workers import this module again as __mp_main__
    main()
