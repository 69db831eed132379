"""The pipeline: condition outcomes, forward gotos, no half-made changes, retries, timeouts.

Time never passes for real here: every test injects a fake ``clock`` and ``sleep``. Retries
are driven through the real ``ai_generate`` step with a scripted ``services.llm``.
"""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace
from typing import Any

import pytest

from steps import pipeline
from steps.base import EntityState
from steps.errors import StepError, TransientError
from steps.pipeline import EntityProgress, RunInfo, backoff_delay, run_step, walk

RUN = {"id": "run_1", "workflowId": "wf_1", "trigger": {"type": "manual"}}
REPLY = {"text": "generated", "model": "fake", "usage": {"inputTokens": 3, "outputTokens": 5}}


class FakeClock:
    """A monotonic clock that only moves when told to, and a ``sleep`` that records and moves it."""

    def __init__(self, now: float = 1000.0, oversleep: float = 0.0) -> None:
        self.now = now
        self.oversleep = oversleep
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep


class FakeLLM:
    """``services.llm`` for ``ai_generate``: plays a script, one item per call (the last repeats).

    An item is a reply dict, an exception to raise, or a callable of the step context
    returning one of those.
    """

    def __init__(self, *script: Any, clock: FakeClock | None = None, advance: float = 0.0) -> None:
        self.script = script
        self.clock = clock
        self.advance = advance
        self.calls: list[dict[str, Any]] = []

    def generate(self, config: dict[str, Any], *, prompt: str, system: Any, ctx: Any) -> Any:
        self.calls.append(
            {
                "prompt": prompt,
                "remaining": ctx.remaining_seconds(),
                "data": copy.deepcopy(ctx.entity.data),
            }
        )
        if self.clock is not None:
            self.clock.now += self.advance
        item = self.script[min(len(self.calls), len(self.script)) - 1]
        if callable(item):
            item = item(ctx)
        if isinstance(item, BaseException):
            raise item
        return item


class FixedJitter:
    """Stands in for the ``random`` module of the pipeline: ``uniform`` returns ``factor``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return self.factor


def services_with(llm: FakeLLM) -> SimpleNamespace:
    return SimpleNamespace(llm=llm)


def transform(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "transform", "config": {"set": values}}


def generate(step_id: str = "gen", field: str = "out") -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "ai_generate",
        "config": {"prompt": "About {{ entity.data.title }}", "outputField": field},
    }


def condition(step_id: str, expression: str, then: Any, else_: Any = "continue") -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "condition",
        "config": {"if": expression, "then": then, "else": else_},
    }


def make_info(steps: list[dict[str, Any]], **settings: Any) -> RunInfo:
    return RunInfo(run=RUN, steps=steps, settings=settings, input={"source": "test"})


def new_progress(data: dict[str, Any] | None = None, status: str = "draft") -> EntityProgress:
    return EntityProgress(EntityState("ent_1", dict(data or {"title": "Hat"}), status, 1))


def ran(progress: EntityProgress) -> list[str]:
    return [r["stepId"] for r in progress.records]


def retry(max_attempts: int, backoff_seconds: float) -> dict[str, Any]:
    return {"max_attempts": max_attempts, "backoff_seconds": backoff_seconds}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def walk_with(progress: EntityProgress, info: RunInfo, clock: FakeClock, **kw: Any) -> Any:
    return walk(progress, info, clock=clock, sleep=clock.sleep, **kw)


# --- condition outcomes and gotos -----------------------------------------------------------


def four_steps(then: Any, else_: Any = "continue") -> list[dict[str, Any]]:
    return [
        transform("a", a=1),
        condition("check", "entity.data.a == 1 and steps.a.output.changed == ['a']", then, else_),
        transform("b", b=2),
        transform("c", c=3),
    ]


def test_continue_goes_on_to_the_next_step(clock):
    info = make_info(four_steps("continue"))
    progress = new_progress()
    record = None
    for expected_next in (1, 2, 3, 4):
        record = run_step(progress, info, clock=clock, sleep=clock.sleep)
        assert progress.next_step == expected_next
    assert record is not None and record["stepId"] == "c"
    assert ran(progress) == ["a", "check", "b", "c"]
    assert progress.records[1]["output"] == {"result": True, "action": "continue"}
    assert progress.status == "completed" and progress.error is None
    assert progress.entity.data == {"title": "Hat", "a": 1, "b": 2, "c": 3}
    assert clock.sleeps == []


def test_stop_completes_the_entity_without_running_later_steps(clock):
    info = make_info(four_steps("stop"))
    progress = walk_with(new_progress(), info, clock)
    assert progress.status == "completed" and progress.error is None
    assert ran(progress) == ["a", "check"]
    assert [r["status"] for r in progress.records] == ["completed", "completed"]
    assert progress.next_step == len(info.steps)
    assert progress.entity.data == {"title": "Hat", "a": 1}


def test_the_else_branch_is_taken_when_the_condition_is_false(clock):
    steps = four_steps("continue", else_="stop")
    steps[0] = transform("a", a=0)
    progress = walk_with(new_progress(), make_info(steps), clock)
    assert progress.status == "completed"
    assert ran(progress) == ["a", "check"]
    assert progress.records[1]["output"] == {"result": False, "action": "stop"}


def test_fail_fails_the_entity_naming_the_step(clock):
    progress = walk_with(new_progress(), make_info(four_steps("fail")), clock)
    assert progress.status == "failed"
    assert progress.error is not None and progress.error.startswith("check: ")
    assert "condition sent the entity to fail" in progress.error
    assert ran(progress) == ["a", "check"]
    assert progress.records[1]["status"] == "failed"
    assert progress.records[1]["error"] in progress.error
    assert progress.entity.data == {"title": "Hat", "a": 1}
    # A failed step's output is not offered to later steps.
    assert set(progress.outputs) == {"a"}


def test_goto_a_later_step_skips_the_steps_in_between(clock):
    info = make_info(four_steps({"goto": "c"}))
    progress = new_progress()
    run_step(progress, info, clock=clock, sleep=clock.sleep)
    run_step(progress, info, clock=clock, sleep=clock.sleep)
    assert progress.next_step == info.index_of["c"] == 3
    assert progress.records[-1]["output"] == {"result": True, "action": "goto:c"}
    walk_with(progress, info, clock)
    assert progress.status == "completed"
    assert ran(progress) == ["a", "check", "c"]
    assert progress.entity.data == {"title": "Hat", "a": 1, "c": 3}


@pytest.mark.parametrize("target", ["a", "check", "nowhere"])
def test_goto_that_is_not_a_later_step_fails_the_entity(clock, target):
    progress = walk_with(new_progress(), make_info(four_steps({"goto": target})), clock)
    assert progress.status == "failed"
    assert ran(progress) == ["a", "check"]
    assert progress.records[-1]["status"] == "failed"
    assert progress.records[-1]["error"] == f"goto {target!r} is not a later step"
    assert "is not a later step" in (progress.error or "")
    assert "b" not in progress.entity.data


def test_validate_on_invalid_stop_completes_without_later_steps(clock):
    steps = [
        {
            "id": "v",
            "type": "validate",
            "config": {"rules": [{"field": "price", "required": True}], "onInvalid": "stop"},
        },
        transform("after", x=1),
    ]
    progress = walk_with(new_progress(), make_info(steps), clock)
    assert progress.status == "completed"
    assert ran(progress) == ["v"]
    assert progress.records[0]["output"]["valid"] is False


# --- a failed step leaves no half-made change -----------------------------------------------


def test_a_failing_transform_leaves_the_entity_unchanged(clock):
    steps = [
        transform("first", title="Cap"),
        {
            "id": "bad",
            "type": "transform",
            "config": {
                "set": {"ok": "fine", "broken": "{{ ''.__class__ }}"},
                "rename": {"title": "name"},
                "status": "ready",
            },
        },
        transform("after", after=True),
    ]
    progress = new_progress()
    run_step(progress, make_info(steps), clock=clock, sleep=clock.sleep)
    before = copy.deepcopy(progress.entity)
    walk_with(progress, make_info(steps), clock)
    assert progress.status == "failed"
    assert progress.error is not None and progress.error.startswith("bad: ")
    assert "sandbox" in progress.error
    assert progress.records[-1]["stepId"] == "bad" and progress.records[-1]["status"] == "failed"
    assert progress.entity == before
    assert progress.entity.data == {"title": "Cap"} and progress.entity.status == "draft"


def test_a_failing_validate_leaves_the_entity_unchanged(clock):
    steps = [
        transform("prep", title=""),
        {
            "id": "check",
            "type": "validate",
            "config": {
                "schema": {"type": "object", "required": ["title", "price"]},
                "rules": [{"field": "title", "required": True}],
            },
        },
        transform("after", after=True),
    ]
    progress = new_progress()
    info = make_info(steps)
    run_step(progress, info, clock=clock, sleep=clock.sleep)
    before = copy.deepcopy(progress.entity)
    walk_with(progress, info, clock)
    assert progress.status == "failed"
    assert progress.error is not None and progress.error.startswith("check: validation failed")
    assert "/price" in progress.error and "title is required" in progress.error
    assert progress.records[-1]["output"]["valid"] is False
    assert ran(progress) == ["prep", "check"]
    assert progress.entity == before


def test_a_step_that_changes_the_entity_then_raises_leaves_no_trace(clock):
    def half_made(ctx):
        ctx.entity.data["title"] = "half"
        ctx.entity.data["junk"] = {"deep": [1]}
        ctx.entity.status = "broken"
        return StepError("gave up midway")

    llm = FakeLLM(half_made)
    progress = new_progress({"title": "Hat", "nested": {"keep": [1, 2]}})
    before = copy.deepcopy(progress.entity)
    record = run_step(
        progress,
        make_info([generate()]),
        services=services_with(llm),
        clock=clock,
        sleep=clock.sleep,
    )
    assert record["status"] == "failed" and record["error"] == "gave up midway"
    assert progress.error == "gen: gave up midway"
    assert progress.entity == before


def test_a_retried_attempt_starts_from_the_unchanged_entity(clock):
    def half_made(ctx):
        ctx.entity.data["junk"] = True
        return TransientError("flaky")

    llm = FakeLLM(half_made, REPLY)
    progress = new_progress()
    info = make_info([generate()], retry=retry(2, 1.0))
    run_step(progress, info, services=services_with(llm), clock=clock, sleep=clock.sleep)
    assert [c["data"] for c in llm.calls] == [{"title": "Hat"}, {"title": "Hat"}]
    assert progress.status == "completed"
    assert progress.entity.data == {"title": "Hat", "out": "generated"}


# --- retries --------------------------------------------------------------------------------


def test_a_retryable_error_twice_then_success_completes_after_three_attempts(clock):
    llm = FakeLLM(TransientError("busy"), TransientError("busy"), REPLY)
    info = make_info([generate(), transform("after", seen="{{ steps.gen.output.text }}")])
    info.settings["retry"] = retry(3, 2.0)
    progress = new_progress()
    record = run_step(progress, info, services=services_with(llm), clock=clock, sleep=clock.sleep)
    assert len(llm.calls) == 3
    assert record["status"] == "completed" and record["attempts"] == 3
    assert record["error"] is None and record["output"] == REPLY
    assert progress.status == "running" and progress.next_step == 1
    assert progress.usage == {"inputTokens": 3, "outputTokens": 5}
    assert progress.entity.data["out"] == "generated"
    # Jittered exponential backoff: retry n waits within [0.5, 1.5] * base * 2**(n-1).
    assert len(clock.sleeps) == 2
    for n, slept in enumerate(clock.sleeps, start=1):
        assert 0.5 * 2.0 * 2 ** (n - 1) <= slept <= 1.5 * 2.0 * 2 ** (n - 1)
    assert record["durationMs"] == int(sum(clock.sleeps) * 1000)
    walk_with(progress, info, clock, services=services_with(llm))
    assert progress.status == "completed" and progress.entity.data["seen"] == "generated"


@pytest.mark.parametrize("factor", [0.5, 1.0, 1.5])
def test_backoff_grows_exponentially_for_any_jitter(clock, monkeypatch, factor):
    jitter = FixedJitter(factor)
    monkeypatch.setattr(pipeline, "random", jitter)
    llm = FakeLLM(TransientError("busy"))
    info = make_info([generate()], retry=retry(4, 1.5))
    progress = new_progress()
    record = run_step(progress, info, services=services_with(llm), clock=clock, sleep=clock.sleep)
    assert clock.sleeps == pytest.approx([1.5 * factor, 3.0 * factor, 6.0 * factor])
    assert clock.sleeps == sorted(clock.sleeps) and len(set(clock.sleeps)) == 3
    assert jitter.ranges == [(0.5, 1.5)] * 3
    # Out of attempts: no sleep after the last one, and the entity fails with the error.
    assert len(llm.calls) == 4 and record["attempts"] == 4
    assert record["status"] == "failed" and record["error"] == "busy"
    assert progress.status == "failed" and progress.error == "gen: busy"


def test_a_non_retryable_step_error_is_not_retried(clock):
    llm = FakeLLM(StepError("bad credential"), REPLY)
    info = make_info([generate(), transform("after", x=1)], retry=retry(5, 1.0))
    progress = walk_with(new_progress(), info, clock, services=services_with(llm))
    assert len(llm.calls) == 1
    assert progress.records[0]["attempts"] == 1
    assert progress.records[0]["status"] == "failed"
    assert progress.status == "failed" and progress.error == "gen: bad credential"
    assert ran(progress) == ["gen"]
    assert clock.sleeps == []


def test_a_step_error_marked_retryable_is_retried(clock):
    llm = FakeLLM(StepError("try again", retryable=True), REPLY)
    progress = new_progress()
    info = make_info([generate()], retry=retry(3, 1.0))
    record = run_step(progress, info, services=services_with(llm), clock=clock, sleep=clock.sleep)
    assert record["status"] == "completed" and record["attempts"] == 2
    assert len(clock.sleeps) == 1 and 0.5 <= clock.sleeps[0] <= 1.5


def test_without_retry_settings_a_transient_error_gets_one_attempt(clock):
    llm = FakeLLM(TransientError("busy"), REPLY)
    progress = new_progress()
    record = run_step(
        progress,
        make_info([generate()]),
        services=services_with(llm),
        clock=clock,
        sleep=clock.sleep,
    )
    assert len(llm.calls) == 1 and record["attempts"] == 1
    assert progress.status == "failed" and clock.sleeps == []


def test_retry_after_is_a_minimum_delay(clock):
    llm = FakeLLM(
        TransientError("429", retry_after=30.0), TransientError("429", retry_after=0.01), REPLY
    )
    progress = new_progress()
    info = make_info([generate()], retry=retry(3, 1.0))
    record = run_step(progress, info, services=services_with(llm), clock=clock, sleep=clock.sleep)
    assert record["status"] == "completed" and record["attempts"] == 3
    # A longer Retry-After wins over the backoff; a shorter one does not shorten it.
    assert clock.sleeps[0] == 30.0
    assert 1.0 <= clock.sleeps[1] <= 3.0


# --- backoff_delay --------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("base", [0.1, 1.0, 2.5])
def test_backoff_delay_stays_within_the_jitter_range(monkeypatch, attempt, base):
    monkeypatch.setattr(pipeline, "random", random.Random(attempt * 1000 + int(base * 10)))
    low, high = 0.5 * base * 2 ** (attempt - 1), 1.5 * base * 2 ** (attempt - 1)
    draws = [backoff_delay(attempt, base, None) for _ in range(2000)]
    assert all(low <= d <= high for d in draws)
    # The jitter really spreads over the range rather than sitting at one point.
    middle = base * 2 ** (attempt - 1)
    assert min(draws) < 0.6 * middle and max(draws) > 1.4 * middle
    # On average the delay is base * 2**(attempt-1): it doubles with every attempt.
    assert sum(draws) / len(draws) == pytest.approx(middle, rel=0.05)


def test_backoff_delay_honours_retry_after_as_a_floor():
    for attempt in range(1, 6):
        assert backoff_delay(attempt, 1.0, 1000.0) == 1000.0
        assert backoff_delay(attempt, 1.0, 0.0) >= 0.5 * 2 ** (attempt - 1)
        assert backoff_delay(attempt, 1.0, 0.1) >= 0.5 * 2 ** (attempt - 1)
    assert backoff_delay(3, 0.0, None) == 0.0


# --- entity timeout -------------------------------------------------------------------------


def test_a_step_is_not_attempted_past_the_deadline(clock):
    llm = FakeLLM(REPLY)
    progress = new_progress()
    before = copy.deepcopy(progress.entity)
    info = make_info([generate()], retry=retry(3, 1.0), entity_timeout_seconds=5)
    record = run_step(
        progress,
        info,
        services=services_with(llm),
        deadline=clock.now - 0.5,
        clock=clock,
        sleep=clock.sleep,
    )
    assert llm.calls == []
    assert record["status"] == "failed" and "timed out" in record["error"]
    assert progress.status == "failed"
    assert progress.error == "gen: entity timed out after 5s"
    assert progress.entity == before
    assert clock.sleeps == []


def test_walk_times_out_when_the_clock_passes_the_deadline(clock):
    llm = FakeLLM(REPLY, clock=clock, advance=6.0)
    steps = [transform("a", a=1), generate(), transform("late", late=True)]
    info = make_info(steps, entity_timeout_seconds=5)
    progress = walk_with(
        new_progress(), info, clock, services=services_with(llm), timeout_seconds=5
    )
    # The step that started in time finishes and saw its remaining time; the next one never runs.
    assert [c["remaining"] for c in llm.calls] == [5.0]
    assert ran(progress) == ["a", "gen", "late"]
    assert [r["status"] for r in progress.records] == ["completed", "completed", "failed"]
    assert progress.status == "failed"
    assert progress.error == "late: entity timed out after 5s"
    assert "late" not in progress.entity.data and progress.entity.data["out"] == "generated"


def test_walk_without_a_timeout_has_no_deadline(clock):
    llm = FakeLLM(REPLY, clock=clock, advance=10_000.0)
    info = make_info([generate(), transform("after", x=1)])
    progress = walk_with(new_progress(), info, clock, services=services_with(llm))
    assert progress.status == "completed"
    assert llm.calls[0]["remaining"] is None


@pytest.mark.parametrize("retry_after", [None, 30.0])
def test_retry_sleeps_are_capped_by_the_remaining_time(retry_after):
    # A real sleep returns a little after the time asked for; so does this one.
    clock = FakeClock(now=0.0, oversleep=0.001)
    llm = FakeLLM(TransientError("busy", retry_after=retry_after), clock=clock, advance=1.0)
    info = make_info([generate()], retry=retry(5, 10.0), entity_timeout_seconds=4)
    progress = new_progress()
    record = run_step(
        progress, info, services=services_with(llm), deadline=4.0, clock=clock, sleep=clock.sleep
    )
    # Attempt 1 ends at t=1; the backoff (>= 5s, or Retry-After 30s) is cut to the 3s left.
    assert clock.sleeps == [pytest.approx(3.0)]
    assert len(llm.calls) == 1
    assert record["status"] == "failed" and "timed out" in record["error"]
    assert progress.error == "gen: entity timed out after 4s"


def test_no_attempt_starts_when_the_deadline_is_reached_exactly():
    clock = FakeClock(now=0.0)
    llm = FakeLLM(TransientError("busy"), clock=clock, advance=1.0)
    info = make_info([generate()], retry=retry(5, 10.0), entity_timeout_seconds=4)
    progress = new_progress()
    run_step(
        progress, info, services=services_with(llm), deadline=4.0, clock=clock, sleep=clock.sleep
    )
    assert len(llm.calls) == 1
    assert progress.error == "gen: entity timed out after 4s"


def test_attempts_count_only_real_attempts_when_timed_out(clock):
    llm = FakeLLM(REPLY)
    info = make_info([generate()], retry=retry(3, 1.0), entity_timeout_seconds=5)
    record = run_step(
        new_progress(),
        info,
        services=services_with(llm),
        deadline=clock.now - 1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert llm.calls == []
    assert record["attempts"] == 0


def test_walk_timeout_message_names_its_timeout(clock):
    llm = FakeLLM(REPLY, clock=clock, advance=6.0)
    info = make_info([generate(), transform("late", late=True)])
    progress = walk_with(
        new_progress(), info, clock, services=services_with(llm), timeout_seconds=5
    )
    assert progress.status == "failed"
    assert progress.error == "late: entity timed out after 5s"


# --- walk -----------------------------------------------------------------------------------


def test_walk_runs_every_step_and_later_steps_see_earlier_outputs(clock):
    steps = [
        {
            "id": "gen",
            "type": "ai_generate",
            "config": {"prompt": "Buy {{ entity.data.title }} now", "outputField": "seo.title"},
        },
        transform(
            "write",
            headline="{{ steps.gen.output.text }}!",
            model="{{ steps.gen.output.model }}",
            source="{{ input.source }}",
        ),
        condition(
            "check",
            "steps.write.output.changed == ['headline', 'model', 'source']",
            "continue",
            "fail",
        ),
        transform("last", checked="{{ steps.check.output.result }}", run="{{ run.id }}"),
    ]
    info = make_info(steps)
    progress = walk_with(new_progress(), info, clock)  # offline ``template`` provider
    assert progress.status == "completed" and progress.error is None
    assert progress.done and progress.next_step == len(steps)
    assert ran(progress) == ["gen", "write", "check", "last"]
    assert all(r["status"] == "completed" and r["attempts"] == 1 for r in progress.records)
    assert progress.entity.data == {
        "title": "Hat",
        "seo": {"title": "Buy Hat now"},
        "headline": "Buy Hat now!",
        "model": "template",
        "source": "test",
        "checked": True,
        "run": "run_1",
    }
    assert progress.outputs["gen"]["text"] == "Buy Hat now"
    assert progress.outputs["check"] == {"result": True, "action": "continue"}
    assert progress.usage == progress.outputs["gen"]["usage"]
    assert clock.sleeps == []


@pytest.mark.parametrize("step_id", ["items", "copy"])
def test_later_steps_see_outputs_of_a_step_whose_id_is_a_dict_method_name(clock, step_id):
    steps = [
        transform(step_id, a=1),
        transform("after", seen="{{ steps." + step_id + ".output.changed }}"),
    ]
    progress = walk_with(new_progress(), make_info(steps), clock)
    assert progress.error is None
    assert progress.entity.data["seen"] == ["a"]


def test_walk_resumes_from_next_step_and_leaves_a_done_entity_alone(clock):
    steps = [transform("a", a=1), transform("b", b=2)]
    info = make_info(steps)
    progress = new_progress()
    run_step(progress, info, clock=clock, sleep=clock.sleep)
    walk_with(progress, info, clock)
    assert ran(progress) == ["a", "b"] and progress.status == "completed"
    walk_with(progress, info, clock)
    assert ran(progress) == ["a", "b"]
