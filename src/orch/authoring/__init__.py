"""Files orch writes into a project: new revisions (:mod:`.revision`) and the
scaffold of ``orch init`` (:mod:`.scaffold`).
"""
