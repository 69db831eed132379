"""Template filters: timestamps, durations and JSON as the console shows them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any


def when(ms: int | None) -> str:
    """Epoch ms → ``2026-11-29 18:20:05 UTC``."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ms: int | None) -> str:
    """Epoch ms → ISO 8601 for ``<time datetime>``."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def duration(ms: int | float | None) -> str:
    """Milliseconds → ``850 ms``, ``12.4 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def run_duration(run: Any) -> str:
    """How long a run took (or has been going)."""
    if not run.started_at:
        return "—"
    end = run.completed_at or int(time.time() * 1000)
    return duration(end - run.started_at)


def pretty_json(value: Any) -> str:
    """Indented JSON for ``<pre>`` blocks."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def short_json(value: Any, limit: int = 160) -> str:
    """Compact JSON, cut at ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


FILTERS = {
    "when": when,
    "iso": iso,
    "duration": duration,
    "run_duration": run_duration,
    "pretty_json": pretty_json,
    "short_json": short_json,
}
