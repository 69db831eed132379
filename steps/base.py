"""What every step type receives (``StepContext``) and returns (``StepResult``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypedDict

from steps.errors import Interrupted


class Action(StrEnum):
    """What the pipeline does after a step."""

    CONTINUE = "continue"
    STOP = "stop"
    FAIL = "fail"
    GOTO = "goto"
    WAIT = "wait"  # park the entity at a review gate until someone decides


class SideEffect(StrEnum):
    """What a step type does outside the entity's working copy, which decides how the
    engine saves around it."""

    NONE = "none"  # pure: a crash costs at most a re-run
    IDEMPOTENT = "idempotent"  # may be repeated safely (a delivery under one idempotency key)
    AT_MOST_ONCE = "at_most_once"  # saved as started before it runs; never repeated


class Category(StrEnum):
    """How ``GET /step-types`` groups step types."""

    AI = "ai"
    DATA = "data"
    CONTROL = "control"
    DELIVERY = "delivery"
    REVIEW = "review"


@dataclass
class EntityState:
    """The working copy of one entity as the steps see and change it."""

    id: str
    data: dict[str, Any]
    status: str
    version: int
    published: bool = False

    def as_context(self) -> dict[str, Any]:
        """The ``entity`` variable of templates."""
        return {"id": self.id, "data": self.data, "status": self.status, "version": self.version}

    def copy(self) -> EntityState:
        """A deep copy, so a failed step leaves no half-made change behind."""
        return EntityState(
            self.id, copy.deepcopy(self.data), self.status, self.version, self.published
        )


class StepRecord(TypedDict):
    """One step's entry in a run item's ``steps``: what it did, how long, in how many tries."""

    stepId: str
    type: str
    status: str  # running | completed | failed | cancelled | awaiting_approval
    output: dict[str, Any] | None
    error: str | None
    durationMs: int
    attempts: int


@dataclass
class StepResult:
    """A finished step: its output and what to do next."""

    output: dict[str, Any] = field(default_factory=dict)
    action: Action = Action.CONTINUE
    goto: str | None = None
    error: str | None = None
    usage: dict[str, int] | None = None


class LLMClient(Protocol):
    """``ctx.services.llm``: one generation call (``steps.clients.llm.LLMGateway``)."""

    def generate(
        self, config: dict[str, Any], *, prompt: str, system: str | None, ctx: Any = None
    ) -> dict[str, Any]: ...


class StepServices(Protocol):
    """The side-effect clients a step reaches through ``ctx.services``.

    ``jobs.step_services`` builds the real ones per chunk, ``jobs.dry_run`` records deliveries
    instead of sending them, ``tests/steps/fakes.py`` keeps everything in memory. A context
    without services (``None``) runs only the steps that need none.
    """

    @property
    def llm(self) -> LLMClient: ...

    def secrets(self) -> list[str]:
        """Credential values loaded so far, to redact from logs, outputs and errors."""
        ...

    def deliver(self, target: dict[str, Any], ctx: StepContext) -> dict[str, Any] | None:
        """Send the published entity to ``target`` (``publish``); what the receiver said."""
        ...

    def notify(
        self, config: dict[str, Any], *, message: str, subject: str | None, ctx: StepContext
    ) -> None:
        """Send a rendered notification on ``config['channel']`` (``notify``)."""
        ...

    def kv(self, namespace: str, key: str, default: Any = None) -> Any:
        """The workspace's KV value at ``namespace/key`` (``kv()`` in templates)."""
        ...


@dataclass
class StepContext:
    """Everything a step sees: the entity, earlier outputs, the run, the trigger input."""

    entity: EntityState
    step_id: str
    step_index: int
    run: dict[str, Any]
    input: Any = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    entity_schema: dict[str, Any] | None = None
    services: StepServices | None = None
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic
    paused: float = 0.0  # seconds spent in wait_turn
    dry_run: bool = False  # a rehearsal: services record deliveries instead of sending them
    should_stop: Callable[[], bool] = lambda: False  # the engine: cancelled or lost

    @property
    def idempotency_key(self) -> str:
        """``runId:entityId:stepId``: names this step's side effect exactly once."""
        return f"{self.run.get('id')}:{self.entity.id}:{self.step_id}"

    def variables(self) -> dict[str, Any]:
        """The template context of SPEC §4."""
        return {
            "entity": self.entity.as_context(),
            "steps": {k: {"output": v} for k, v in self.outputs.items()},
            "run": self.run,
            "input": self.input,
            "kv": self.read_kv,
        }

    def read_kv(self, namespace: str, key: str, default: Any = None) -> Any:
        """``kv('namespace', 'key', default)`` in templates: the workspace's stored value."""
        if self.services is None:
            return default
        return self.services.kv(str(namespace), str(key), default)

    def wait_turn(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Wait ``seconds`` for a shared resource (a rate-limit slot): waiting behind other
        entities does not count against this entity's timeout, so its deadline moves too."""
        waited, slice_ = 0.0, 0.25  # in slices, so a cancel is seen within a quarter second
        while waited < seconds:
            if self.should_stop():
                raise Interrupted("run cancelled while waiting for its turn")
            step = min(slice_, seconds - waited)
            sleep(step)
            waited += step
        self.paused += seconds
        if self.deadline is not None:
            self.deadline += seconds

    def remaining_seconds(self) -> float | None:
        """Seconds left before the entity's deadline, if it has one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock())
