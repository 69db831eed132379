"""The RQ side of Conveyor: dispatch, chunk processing, progress, finalize, sweeping, scheduling.

Job functions take plain ids, never ORM objects, and find their database and queue
through ``jobs.runtime``.
"""
