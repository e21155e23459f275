"""``python -m shrinkage``: the command line (see :mod:`shrinkage.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
