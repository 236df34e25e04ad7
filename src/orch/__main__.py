"""``python -m orch``: the same entry point as the ``orch`` console script."""

from orch.cli import main

if __name__ == "__main__":
    main()
