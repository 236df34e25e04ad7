"""The write side: the scheduler and its workers (:mod:`.execute`), hooks
(:mod:`.hooks`) and rolling a failed run back (:mod:`.rollback`).
"""
