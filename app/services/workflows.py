"""Workflows: steps checked against the step registry on save, versions bumped on change."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import marshmallow as ma
from sqlalchemy import delete, exists, select
from sqlmodel import Session, col

from app.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed, flatten_errors
from app.ids import new_id, now_ms
from app.models import Run, Workflow, WorkflowRevision
from app.services.entities import get_entity_type
from app.services.ownership import get_owned
from app.services.revisions import Actor, get_revision, record_revision, snapshot_of
from app.statuses import WorkflowStatus
from steps import registry
from steps.condition import goto_targets
from steps.errors import UnknownStepType


def check_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate each step's config against its type; give ids to steps without one.

    Returns the steps as stored: ``{id, type, name, config}`` with ``config`` as sent.
    Raises 422 naming ``steps[i].config.<field>``.
    """
    errors: dict[str, list[str]] = {}
    checked: list[dict[str, Any]] = []
    taken = {s["id"] for s in steps if s.get("id")}
    for index, step in enumerate(steps):
        step_id = step.get("id")
        if not step_id:
            step_id = f"{step['type']}_{index + 1}"
            while step_id in taken:
                step_id += "_"
            taken.add(step_id)
        try:
            module = registry.get_step_type(step["type"])
        except UnknownStepType:
            known = ", ".join(registry.step_type_names())
            message = f"Unknown step type {step['type']!r}; one of {known}."
            errors[f"steps[{index}].type"] = [message]
            checked.append({**step, "id": step_id})
            continue
        try:
            module.Config().load(step.get("config") or {})
        except ma.ValidationError as exc:
            errors.update(flatten_errors(exc.messages, f"steps[{index}].config"))
        name, config = step.get("name"), step["config"]
        checked.append({"id": step_id, "type": step["type"], "name": name, "config": config})
    ids = [s["id"] for s in checked]
    for index, step_id in enumerate(ids):
        if ids.index(step_id) != index:
            errors.setdefault(f"steps[{index}].id", []).append(f"Duplicate step id {step_id!r}.")
    for index, step in enumerate(checked):
        if step["type"] != "condition" or f"steps[{index}].type" in errors:
            continue
        try:
            config = registry.get_step_type("condition").Config().load(step["config"])
        except ma.ValidationError:
            continue
        for target in goto_targets(config):
            if target not in ids:
                errors.setdefault(f"steps[{index}].config.goto", []).append(
                    f"goto names no step: {target!r}."
                )
            elif ids.index(target) <= index:
                errors.setdefault(f"steps[{index}].config.goto", []).append(
                    f"goto must name a later step; {target!r} is not after this one."
                )
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(
            f"The workflow's steps are not valid: {first}: {' '.join(errors[first])}", errors
        )
    return checked


# The credential type each built-in use of a credential needs; plug-ins' names are checked
# for existence only.
_NOTIFY_CREDENTIAL_TYPES = {"webhook": "webhook", "slack": "slack", "email": "smtp"}


def _credential_uses(
    steps: list[dict[str, Any]], settings: dict[str, Any] | None
) -> Iterator[tuple[str, str, str | None]]:
    """``(error path, credential name, type it must have or None)`` for every credential a
    workflow names: any ``credential`` key in a step config (``target.credential`` of
    ``publish``...), and ``settings.notifyOnFinish.credential``."""

    def walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "credential" and isinstance(item, str) and item:
                    yield f"{path}.{key}", item
                else:
                    yield from walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")

    for index, step in enumerate(steps):
        config = step.get("config")
        if not isinstance(config, dict):
            continue
        for path, name in walk(config, f"steps[{index}].config"):
            expected: str | None = None
            if step.get("type") == "ai_generate" and path.endswith("].config.credential"):
                provider = config.get("provider")
                expected = provider if provider in ("openai", "anthropic") else None
            elif step.get("type") == "publish" and path.endswith("].config.target.credential"):
                expected = "webhook"
            elif step.get("type") == "notify" and path.endswith("].config.credential"):
                expected = _NOTIFY_CREDENTIAL_TYPES.get(str(config.get("channel")))
            yield path, name, expected
    finish = (settings or {}).get("notify_on_finish") or {}
    if finish.get("credential"):
        expected = _NOTIFY_CREDENTIAL_TYPES.get(str(finish.get("channel")))
        yield "settings.notifyOnFinish.credential", finish["credential"], expected


def check_credential_names(
    *,
    session: Session,
    workspace_id: str,
    steps: list[dict[str, Any]],
    settings: dict[str, Any] | None = None,
) -> None:
    """422 naming ``steps[i].config.credential`` (or ``...target.credential``) when a workflow
    names a credential the workspace does not have, or one of the wrong type: found when
    the workflow is saved, not when a run fails."""
    uses = list(_credential_uses(steps, settings))
    if not uses:
        return
    from app.models import Credential

    query = select(col(Credential.name), col(Credential.type)).where(
        col(Credential.workspace_id) == workspace_id,
        col(Credential.name).in_({name for _, name, _ in uses}),
    )
    types = {name: type_ for name, type_ in session.execute(query)}
    errors: dict[str, list[str]] = {}
    for path, name, expected in uses:
        if name not in types:
            errors.setdefault(path, []).append(
                f"No credential named {name!r} in this workspace; create it first."
            )
        elif expected is not None and types[name] != expected:
            errors.setdefault(path, []).append(
                f"Credential {name!r} is of type {types[name]!r}, not {expected!r}."
            )
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(
            f"The workflow names unknown credentials: {first}: {' '.join(errors[first])}", errors
        )


def get_workflow(*, session: Session, workspace_id: str, workflow_id: str) -> Workflow:
    """The workflow, or 404 (also for another workspace's)."""
    return get_owned(session, Workflow, workflow_id, workspace_id, what="Workflow")


def check_workflow(*, session: Session, workspace_id: str, data: dict[str, Any]) -> list[Any]:
    """Everything a save checks beyond the schema: the entity type, then the steps.

    Returns the steps as stored; raises 422 with the same paths a failed save answers.
    """
    try:
        get_entity_type(session=session, workspace_id=workspace_id, type_id=data["entity_type_id"])
    except NotFound as exc:
        raise ValidationFailed(
            "Unknown entity type.", {"entityTypeId": ["Unknown entity type."]}
        ) from exc
    steps = check_steps(data["steps"])
    check_credential_names(
        session=session, workspace_id=workspace_id, steps=steps, settings=data.get("settings")
    )
    return steps


def create_workflow(
    *, session: Session, workspace_id: str, data: dict[str, Any], actor: Actor | None = None
) -> Workflow:
    """A new workflow, with its first revision."""
    steps = check_workflow(session=session, workspace_id=workspace_id, data=data)
    row = Workflow(
        id=new_id("wf"),
        workspace_id=workspace_id,
        entity_type_id=data["entity_type_id"],
        name=data["name"],
        description=data.get("description"),
        status=data["status"],
        steps=steps,
        settings=data["settings"],  # stored as loaded (snake_case)
    )
    session.add(row)
    record_revision(session=session, row=row, actor=actor)
    session.commit()
    return row


def update_workflow(
    *,
    session: Session,
    workspace_id: str,
    workflow_id: str,
    data: dict[str, Any],
    expected_version: int | None = None,
    actor: Actor | None = None,
    restored_from: int | None = None,
) -> Workflow:
    """Change a workflow; every change bumps ``version`` and keeps a revision of it.

    Runs keep the version they pinned. ``entity_type_id`` may be sent back unchanged (a
    workflow's JSON from ``GET`` is a valid ``PATCH``), but a workflow never changes type.
    """
    # Lock the row: two concurrent saves must make versions N+1 and N+2, each with its
    # revision, never two versions N+1 (SQLite's BEGIN IMMEDIATE serialises them already).
    row = session.execute(
        select(Workflow)
        .where(col(Workflow.id) == workflow_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None or row.workspace_id != workspace_id:
        raise NotFound("Workflow not found.")
    if expected_version is not None and expected_version != row.version:
        raise PreconditionFailed(
            f"Version mismatch: the workflow is at version {row.version}, not {expected_version}."
        )
    data = dict(data)
    if data.pop("entity_type_id", row.entity_type_id) != row.entity_type_id:
        message = "A workflow's entity type cannot change; duplicate or import it instead."
        raise ValidationFailed(message, {"entityTypeId": [message]})
    previous = snapshot_of(row)
    if "steps" in data:
        row.steps = check_steps(data["steps"])
    if "settings" in data:
        row.settings = data["settings"]
    if "steps" in data or "settings" in data:
        check_credential_names(
            session=session, workspace_id=workspace_id, steps=row.steps, settings=row.settings
        )
    for field in ("name", "description", "status"):
        if field in data:
            setattr(row, field, data[field])
    if data or restored_from is not None:
        row.version += 1
        row.updated_at = now_ms()
        record_revision(
            session=session,
            row=row,
            actor=actor,
            previous=previous,
            restored_from=restored_from,
        )
    session.add(row)
    session.commit()
    return row


def restore_workflow(
    *,
    session: Session,
    workspace_id: str,
    workflow_id: str,
    version: int,
    actor: Actor | None = None,
) -> Workflow:
    """Put back an earlier version's content as a new version (its steps checked again)."""
    get_workflow(session=session, workspace_id=workspace_id, workflow_id=workflow_id)
    revision = get_revision(session=session, workflow_id=workflow_id, version=version)
    content = {k: v for k, v in revision.snapshot.items() if k != "entity_type_id"}
    return update_workflow(
        session=session,
        workspace_id=workspace_id,
        workflow_id=workflow_id,
        data=content,
        actor=actor,
        restored_from=version,
    )


def duplicate_workflow(
    *,
    session: Session,
    workspace_id: str,
    workflow_id: str,
    name: str | None = None,
    actor: Actor | None = None,
) -> Workflow:
    """A new ``draft`` workflow with the same steps and settings; no triggers, no runs."""
    source = get_workflow(session=session, workspace_id=workspace_id, workflow_id=workflow_id)
    row = Workflow(
        id=new_id("wf"),
        workspace_id=workspace_id,
        entity_type_id=source.entity_type_id,
        name=name or _copy_name(source.name),
        description=source.description,
        status=WorkflowStatus.DRAFT,
        steps=copy.deepcopy(source.steps),
        settings=copy.deepcopy(source.settings),
    )
    session.add(row)
    record_revision(session=session, row=row, actor=actor)
    session.commit()
    return row


def _copy_name(name: str) -> str:
    """``"<name> (copy)"``, cut so it stays within the 200 characters a name may have."""
    suffix = " (copy)"
    return name[: 200 - len(suffix)] + suffix


def delete_workflow(*, session: Session, workspace_id: str, workflow_id: str) -> None:
    """Delete a workflow that has never run; one with runs is archived instead (409)."""
    row = get_workflow(session=session, workspace_id=workspace_id, workflow_id=workflow_id)
    if session.scalar(select(exists().where(col(Run.workflow_id) == workflow_id))):
        raise Conflict(
            "This workflow has runs; archive it (status: archived) to keep their history."
        )
    from app.models import Trigger

    if session.scalar(select(exists().where(col(Trigger.workflow_id) == workflow_id))):
        raise Conflict("Triggers start this workflow; delete them first.")
    session.execute(delete(WorkflowRevision).where(col(WorkflowRevision.workflow_id) == row.id))
    session.delete(row)
    session.commit()
