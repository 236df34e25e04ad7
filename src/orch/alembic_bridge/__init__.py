"""Every touch of Alembic: the ScriptDirectory and the runs (:mod:`.runner`), the job
``migrations/env.py`` runs (:mod:`.env`), autogenerate (:mod:`.autogen`), and every use of
Alembic beyond its documented API, each a small checked function (:mod:`.internals`).
"""
