"""The job side's handle on its runtime (settings, engine, queue): see ``app.runtime``."""

from __future__ import annotations

from app.runtime import Runtime, current, install

__all__ = ["Runtime", "current", "install"]
