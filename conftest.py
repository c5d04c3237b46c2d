"""Repository-wide pytest set-up: the tolerance-aware comparison for nbval (see tests/nbval_tolerance.py)."""
pytest_plugins = ["tests.nbval_tolerance"]
