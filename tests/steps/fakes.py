"""An in-memory ``StepServices``: step tests with neither Flask, a database nor a network.

``FakeStepServices`` records what a step delivers and notifies, answers ``llm.generate``
with scripted replies (or the prompt itself), and can be told to fail a call with a given
error, so a step's own logic is tested on its own; the real clients are tested against
local peers (``tests/steps/clients``, ``tests/jobs/test_step_services.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steps.base import EntityState, StepContext, StepServices


@dataclass
class FakeLLM:
    """``ctx.services.llm``: ``replies`` in turn, else the prompt echoed back as text."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def generate(
        self, config: dict[str, Any], *, prompt: str, system: str | None, ctx: Any = None
    ) -> dict[str, Any]:
        """Record the call; answer the next scripted reply."""
        self.calls.append({"config": config, "prompt": prompt, "system": system})
        if self.replies:
            return self.replies.pop(0)
        return {"text": prompt, "model": "fake", "usage": {"inputTokens": 1, "outputTokens": 1}}


@dataclass
class FakeStepServices:
    """Deliveries and notifications kept in lists; ``fail`` makes the next call raise."""

    llm: FakeLLM = field(default_factory=FakeLLM)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    loaded_secrets: list[str] = field(default_factory=list)
    kv_values: dict[str, Any] = field(default_factory=dict)
    fail: Exception | None = None
    status_code: int = 200

    def secrets(self) -> list[str]:
        """The secrets a test says were loaded."""
        return list(self.loaded_secrets)

    def kv(self, namespace: str, key: str, default: Any = None) -> Any:
        """A value of ``kv_values`` (``{"ns/key": value}``)."""
        return self.kv_values.get(f"{namespace}/{key}", default)

    def deliver(self, target: dict[str, Any], ctx: StepContext) -> dict[str, Any] | None:
        """Record the delivery under the step's idempotency key."""
        self._maybe_fail()
        self.deliveries.append({"target": target, "key": ctx.idempotency_key})
        return {"statusCode": self.status_code}

    def notify(
        self, config: dict[str, Any], *, message: str, subject: str | None, ctx: StepContext
    ) -> None:
        """Record the notification."""
        self._maybe_fail()
        self.notifications.append(
            {"config": config, "message": message, "subject": subject, "key": ctx.idempotency_key}
        )

    def _maybe_fail(self) -> None:
        error, self.fail = self.fail, None
        if error is not None:
            raise error


def fake_ctx(
    data: dict[str, Any] | None = None,
    *,
    services: StepServices | None = None,
    step_id: str = "step_1",
    run_id: str = "run_1",
    entity_id: str = "ent_1",
    should_stop: Callable[[], bool] = lambda: False,
) -> StepContext:
    """A step context for one entity, with ``services`` (a fake by default)."""
    return StepContext(
        entity=EntityState(entity_id, dict(data or {}), "draft", 1),
        step_id=step_id,
        step_index=0,
        run={"id": run_id, "workflowId": "wf_1", "trigger": {"type": "manual"}},
        services=services if services is not None else FakeStepServices(),
        should_stop=should_stop,
    )
