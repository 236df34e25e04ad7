"""Every touch of Alembic: the ScriptDirectory and its revision map
(:mod:`.runner`), the job ``migrations/env.py`` runs (:mod:`.env`) and
autogenerate (:mod:`.autogen`).
"""
