"""Step types and the pipeline that walks one entity through a workflow's steps.

Nothing here knows about Flask or SQL: side-effect clients reach steps through the
``StepContext``.
"""
