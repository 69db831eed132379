"""Workflow generation: a description in, a stream of checked operations out.

The workspace's OpenAI-format credential is asked, with streaming on, to answer only with
tool calls: ``setName``, ``addStep``, ``setSettings`` and ``explain``, whose arguments are
JSON-Schema-typed (structured output; no prose is parsed). Tool-call fragments are
reassembled as the chunks arrive, and a call is turned into an operation the moment its
arguments form a complete JSON object, so the first line can leave within the model's
first chunk. Each operation is checked as it is produced: a step's shape with the
workflow's ``Step`` schema, its ``type`` against the step registry and its ``config``
with that type's ``Config`` schema; settings with the workflow's ``Settings`` schema.
The first failure ends the stream with ``{"op": "error", "path", "message", "errors"}``;
otherwise a final check (the very one a save runs) gives
``{"op": "done", "workflow": {...}}``, a valid definition that is not saved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import marshmallow as ma
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.errors import ConveyorError, NotFound, ValidationFailed, flatten_errors
from app.models import Credential
from app.schemas.workflows import SettingsSchema, StepSchema
from app.services.credentials import CredentialUnavailable, open_credential
from app.services.entities import get_entity_type
from steps import registry
from steps.clients import ResolvedCredential
from steps.clients.outbound import OutboundPolicy, client_for, origin
from steps.errors import StepError, UnknownStepType

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
LLM_CREDENTIAL_TYPE = "openai"
MAX_STEPS = 100
TIMEOUT_SECONDS = 120.0


class GenerationFailed(Exception):
    """An operation that cannot go into the workflow: ``path`` names what is wrong."""

    def __init__(self, path: str, message: str, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.errors = errors or {path: [message]}

    def op(self) -> dict[str, Any]:
        return {"op": "error", "path": self.path, "message": self.message, "errors": self.errors}


def llm_credential(
    *, session: Session, workspace_id: str, name: str | None, box: Any
) -> ResolvedCredential:
    """The credential generation calls: the one named, else the workspace's only (first by
    name) ``openai`` one; 422 saying which credential to add when there is none."""
    query = select(Credential).where(col(Credential.workspace_id) == workspace_id)
    if name:
        row = session.exec(query.where(col(Credential.name) == name)).first()
        if row is None:
            raise ValidationFailed(
                f"No credential named {name!r} in this workspace.",
                {"credential": [f"No credential named {name!r}; add an openai credential."]},
            )
        if row.type != LLM_CREDENTIAL_TYPE:
            raise ValidationFailed(
                f"Credential {name!r} is of type {row.type!r}; generation needs an "
                f"{LLM_CREDENTIAL_TYPE!r} one (any OpenAI-compatible endpoint).",
                {"credential": [f"Not an {LLM_CREDENTIAL_TYPE} credential."]},
            )
    else:
        rows = session.exec(
            query.where(col(Credential.type) == LLM_CREDENTIAL_TYPE).order_by(col(Credential.name))
        ).all()
        if not rows:
            raise ValidationFailed(
                "Workflow generation needs an LLM credential: add one of type 'openai' "
                '(POST /api/v1/credentials {"name": "llm", "type": "openai", "data": '
                '{"apiKey": "..."}, "settings": {"baseUrl": "..."}}; any OpenAI-compatible '
                "endpoint), or name one in `credential`.",
                {"credential": ["No openai credential in this workspace: add one."]},
            )
        row = rows[0]
    try:
        return open_credential(row, box)
    except CredentialUnavailable as exc:
        raise ValidationFailed(str(exc), {"credential": [str(exc)]}) from exc


def entity_type_for(*, session: Session, workspace_id: str, type_id: str) -> dict[str, Any]:
    """``{id, name, schema}`` of the type the workflow will run over; 422 if unknown."""
    try:
        row = get_entity_type(session=session, workspace_id=workspace_id, type_id=type_id)
        return {"id": row.id, "name": row.name, "schema": row.schema_}
    except NotFound as exc:
        raise ValidationFailed(
            "Unknown entity type.", {"entityTypeId": ["Unknown entity type."]}
        ) from exc


def tools(step_types: list[str]) -> list[dict[str, Any]]:
    """The functions the model may call (its only way to answer)."""

    def function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": parameters},
        }

    retry = {
        "type": "object",
        "properties": {
            "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 10},
            "backoffSeconds": {"type": "number", "minimum": 0},
        },
    }
    return [
        function(
            "setName",
            "Name and describe the workflow. Call once, first.",
            {
                "type": "object",
                "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
                "required": ["name"],
            },
        ),
        function(
            "addStep",
            "Append one step. Steps run in the order added. `config` follows the configSchema "
            "of the step's type given in the instructions.",
            {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                    "type": {"type": "string", "enum": step_types},
                    "name": {"type": "string"},
                    "config": {"type": "object"},
                },
                "required": ["id", "type", "config"],
            },
        ),
        function(
            "setSettings",
            "Run settings, only when the request implies them.",
            {
                "type": "object",
                "properties": {
                    "concurrency": {"type": "integer", "minimum": 1},
                    "toleratedFailurePercentage": {"type": "number", "minimum": 0, "maximum": 100},
                    "retry": retry,
                    "entityTimeoutSeconds": {"type": "number", "minimum": 0.1},
                },
            },
        ),
        function(
            "explain",
            "One or two sentences for the user on what the workflow does and why.",
            {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        ),
    ]


def instructions(entity_type: dict[str, Any]) -> str:
    """The system message: the task, the entity type, and every step type's config schema."""
    catalogue = [
        {k: v for k, v in registry.describe(name).items() if k != "outputSchema"}
        for name in registry.step_type_names()
    ]
    return (
        "You design workflows for Conveyor, a platform that runs ordered, typed steps over "
        "batches of entities. Answer only with tool calls: setName once, then addStep for "
        "each step in order, setSettings if the request implies run settings, and a short "
        "explain. Templates use Jinja ({{ entity.data.<field> }}); conditions are Jinja "
        "expressions. Use the 'template' provider for ai_generate unless the request names "
        "a credential.\n\n"
        f"Entity type {entity_type['name']!r}, data JSON Schema:\n"
        f"{json.dumps(entity_type['schema'] or {}, ensure_ascii=False)}\n\n"
        f"Step types (type, description, configSchema):\n{json.dumps(catalogue)}"
    )


@dataclass
class Draft:
    """The workflow being generated, checked one operation at a time."""

    entity_type_id: str
    name: str
    description: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def apply(self, tool: str, arguments: Any) -> dict[str, Any]:
        """The operation for one tool call, checked; raises ``GenerationFailed``."""
        if not isinstance(arguments, dict):
            raise GenerationFailed(tool, f"{tool}: the arguments are not a JSON object.")
        if tool == "addStep":
            return {"op": "addStep", "step": self.add_step(arguments)}
        if tool == "setSettings":
            return {"op": "setSettings", "settings": self.set_settings(arguments)}
        if tool == "setName":
            name = arguments.get("name")
            if not isinstance(name, str) or not 0 < len(name.strip()) <= 200:
                raise GenerationFailed("name", "The name must be 1 to 200 characters.")
            self.name = name.strip()
            description = arguments.get("description")
            self.description = description if isinstance(description, str) else None
            return {"op": "setName", "name": self.name, "description": self.description}
        if tool == "explain":
            return {"op": "explain", "text": str(arguments.get("text", ""))}
        raise GenerationFailed("op", f"Unknown operation {tool!r}.")

    def add_step(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """A step checked against the registry: its shape, its type, its type's Config."""
        index = len(self.steps)
        path = f"steps[{index}]"
        if index >= MAX_STEPS:
            raise GenerationFailed(path, f"At most {MAX_STEPS} steps.")
        arguments = {k: v for k, v in arguments.items() if k in ("id", "type", "name", "config")}
        try:
            step = StepSchema().load(arguments)
        except ma.ValidationError as exc:
            raise _failed(flatten_errors(exc.messages, path)) from exc
        try:
            module = registry.get_step_type(step["type"])
        except UnknownStepType as exc:
            known = ", ".join(registry.step_type_names())
            raise GenerationFailed(
                f"{path}.type", f"Unknown step type {step['type']!r}; one of {known}."
            ) from exc
        try:
            module.Config().load(step["config"])
        except ma.ValidationError as exc:
            raise _failed(flatten_errors(exc.messages, f"{path}.config")) from exc
        step_id = step["id"] or f"{step['type']}_{index + 1}"
        if any(s["id"] == step_id for s in self.steps):
            raise GenerationFailed(f"{path}.id", f"Duplicate step id {step_id!r}.")
        checked = {"id": step_id, "type": step["type"], "name": step["name"]}
        checked["config"] = step["config"]
        self.steps.append(checked)
        return checked

    def set_settings(self, arguments: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.settings, **arguments}
        try:
            SettingsSchema().load(merged)
        except ma.ValidationError as exc:
            raise _failed(flatten_errors(exc.messages, "settings")) from exc
        self.settings = merged
        return merged

    def body(self) -> dict[str, Any]:
        """The definition as ``POST /api/v1/workflows`` takes it."""
        workflow: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "entityTypeId": self.entity_type_id,
            "status": "draft",
            "steps": self.steps,
        }
        if self.settings:
            workflow["settings"] = self.settings
        return workflow


def _failed(errors: dict[str, list[str]]) -> GenerationFailed:
    path = next(iter(errors))
    return GenerationFailed(path, f"{path}: {' '.join(errors[path])}", errors)


@dataclass
class ToolCall:
    """One tool call being reassembled from streamed fragments."""

    name: str = ""
    arguments: str = ""
    emitted: bool = False

    def complete(self) -> Any:
        """The parsed arguments once they form a JSON object, else None."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def stream_tool_calls(
    client: httpx.Client,
    credential: ResolvedCredential,
    *,
    model: str,
    messages: list[dict[str, Any]],
    functions: list[dict[str, Any]],
) -> Iterator[tuple[str, Any]]:
    """``("call", (name, arguments))`` as each streamed tool call completes, and
    ``("text", str)`` for any prose the model adds (shown as ``explain``, never parsed)."""
    base_url = str(credential.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    headers = {"Content-Type": "application/json"}
    api_key = credential.data.get("api_key")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if credential.settings.get("organization"):
        headers["OpenAI-Organization"] = str(credential.settings["organization"])
    body = {
        "model": model,
        "messages": messages,
        "tools": functions,
        "tool_choice": "required",
        "stream": True,
    }
    timeout = float(credential.settings.get("timeout_seconds") or TIMEOUT_SECONDS)
    calls: dict[int, ToolCall] = {}
    text: list[str] = []
    with client.stream(
        "POST", f"{base_url}/chat/completions", json=body, headers=headers, timeout=timeout
    ) as response:
        if response.status_code >= 400:
            response.read()
            detail = response.text[:300]
            if api_key:  # some providers echo the key they refused
                detail = detail.replace(str(api_key), "***")
            raise ProviderFailed(f"{origin(base_url)} answered {response.status_code}: {detail}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise ProviderFailed(f"{origin(base_url)} sent a chunk that is not JSON") from exc
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    text.append(str(delta["content"]))
                for fragment in delta.get("tool_calls") or []:
                    call = calls.setdefault(int(fragment.get("index", 0)), ToolCall())
                    function = fragment.get("function") or {}
                    call.name += function.get("name") or ""
                    call.arguments += function.get("arguments") or ""
                    arguments = call.complete()
                    if arguments is not None and not call.emitted:
                        call.emitted = True
                        if text:
                            yield "text", "".join(text)
                            text.clear()
                        yield "call", (call.name, arguments)
    if text:
        yield "text", "".join(text)
    for index in sorted(calls):
        call = calls[index]
        if not call.emitted:
            raise GenerationFailed(
                f"op[{index}]", f"The model's {call.name or 'tool'} call has no complete JSON."
            )


class ProviderFailed(ConveyorError):
    """The LLM provider refused or broke off."""

    code = 502


def generate(
    *,
    engine: Engine,
    workspace_id: str,
    entity_type: dict[str, Any],
    credential: ResolvedCredential,
    prompt: str,
    model: str | None,
    policy: OutboundPolicy,
) -> Iterator[dict[str, Any]]:
    """The operations, one by one, ending with ``done`` or ``error``.

    No database session is held while the model streams: the final check opens its own.
    """
    from app.services.workflow_documents import validation_errors

    draft = Draft(entity_type_id=entity_type["id"], name=prompt.strip().splitlines()[0][:80])
    messages = [
        {"role": "system", "content": instructions(entity_type)},
        {"role": "user", "content": prompt},
    ]
    chosen = model or str(credential.settings.get("model") or DEFAULT_MODEL)
    try:
        for kind, value in stream_tool_calls(
            client_for(policy),
            credential,
            model=chosen,
            messages=messages,
            functions=tools(registry.step_type_names()),
        ):
            if kind == "text":
                yield {"op": "explain", "text": value}
            else:
                yield draft.apply(*value)
        if not draft.steps:
            raise GenerationFailed("steps", "The model added no step.")
        with Session(engine) as session:
            errors = validation_errors(
                session=session, workspace_id=workspace_id, body=draft.body()
            )
        if errors:
            raise _failed(errors)
    except GenerationFailed as failure:
        yield failure.op()
        return
    except (httpx.HTTPError, ConveyorError, StepError) as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        yield {"op": "error", "path": "provider", "message": message, "errors": {}}
        return
    yield {"op": "done", "workflow": draft.body()}
