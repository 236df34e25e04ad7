"""What will run: selectors to per-database steps in dependency order, resolved by
Alembic's own resolver (:mod:`.plan`, :mod:`.resolve`), and the live state a
plan starts from (:mod:`.live`).
"""
