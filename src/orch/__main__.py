"""``python -m orch``: the same entry point as the ``orch`` console script."""

from orch.cli import run

if __name__ == "__main__":
    run()
