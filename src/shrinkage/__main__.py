"""``python -m shrinkage``: the command line (see :mod:`shrinkage.cli`)."""

from .study.cli import main

if __name__ == "__main__":
    main()
