"""Dry runs: every step runs, the LLM included, but nothing leaves for a receiver.

``DryRunServices`` stands in front of a chunk's real step services: the LLM gateway and
credentials pass through (the team sees the text the model would write), while ``deliver``
(publish) and ``notify`` only record the request they would have sent, with secrets left
out. The checkpointer writes no entity and no KV value for a dry run; each item's
``changes`` holds the RFC 6902 patch from the stored entity to the result, and the
recorded requests.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import jsonpatch

from jobs.claims import Item
from jobs.step_services import published_event
from steps.base import LLMClient, StepContext, StepServices


class DryRunServices:
    """Real step services whose deliveries and notifications are recorded, not sent."""

    def __init__(self, real: StepServices) -> None:
        self.real = real
        self.llm: LLMClient = real.llm
        self._requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()

    def kv(self, namespace: str, key: str, default: Any = None) -> Any:
        """KV values are read for real (a dry run writes none)."""
        return self.real.kv(namespace, key, default)

    def secrets(self) -> list[str]:
        """The real services' secrets: redaction works as in a real run."""
        return list(self.real.secrets())

    def _record(self, ctx: StepContext, request: dict[str, Any]) -> None:
        with self._lock:
            self._requests[ctx.entity.id].append({"stepId": ctx.step_id, **request})

    def deliver(self, target: dict[str, Any], ctx: StepContext) -> None:
        """The publish delivery that would have gone out (no statusCode: nothing was sent)."""
        self._record(
            ctx,
            {
                "method": "POST",
                "url": target["url"],
                "signed": bool(target.get("credential")),
                "webhookId": ctx.idempotency_key,
                "body": published_event(ctx),
            },
        )

    def notify(
        self, config: dict[str, Any], *, message: str, subject: str | None, ctx: StepContext
    ) -> None:
        """The notification that would have been sent."""
        self._record(
            ctx,
            {
                "channel": config["channel"],
                "url": config.get("url"),
                "to": config.get("to"),
                "credential": config.get("credential"),
                "subject": subject,
                "message": message,
            },
        )

    def changes(self, item: Item) -> dict[str, Any]:
        """What the run would have done to ``item``'s entity, and the requests it would send."""
        entity = item.progress.entity
        before = {"data": item.base, "status": item.base_status}
        after = {"data": entity.data, "status": entity.status}
        with self._lock:
            requests = list(self._requests.pop(item.entity_id, []))
        return {"patch": jsonpatch.make_patch(before, after).patch, "requests": requests}
