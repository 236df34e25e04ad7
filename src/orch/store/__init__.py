"""orch's side of a live database: connections (:mod:`.db`, :mod:`.aio`), the
migration lock (:mod:`.locks`) and the audit trail (:mod:`.audit`).
"""
