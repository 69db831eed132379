"""The job side's handle on its runtime (settings, engine, queue): see ``app.queue``."""

from __future__ import annotations

from app.queue import Runtime, current, install

__all__ = ["Runtime", "current", "install"]
