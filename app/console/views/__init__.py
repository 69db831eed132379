"""Console pages, one module per resource like ``app/api``. Each view reads through
``app/console/queries.py`` or ``app/services`` and writes only through ``app/services``:
the same functions, and the same role per action, as the API (viewer reads; executor
runs, cancels, retries and decides approvals; editor manages credentials and restores
revisions; admin manages keys)."""

VIEW_MODULES = (
    "session",
    "workflows",
    "revisions",
    "runs",
    "approvals",
    "entities",
    "triggers",
    "credentials",
    "api_keys",
)
