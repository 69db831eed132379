"""Examples for the OpenAPI document, one per component schema, keyed by the schema's name.

``app.api.openapi`` attaches ``EXAMPLES[name]`` to every request body and response whose
schema is that component (a list of one element for an array of it), leaving out the
fields that do not travel that way (``readOnly`` ones in requests, ``writeOnly`` ones in
responses). A new schema without an entry here fails ``tests/app/api/test_openapi.py``,
and each example is checked against its schema there.
"""

from __future__ import annotations

from typing import Any

T0 = 1767225600000  # 2026-01-01T00:00:00Z in epoch milliseconds
WS = "ws_01JD8X0M5Q6W7E8R9T0Y1U2I3O"
KEY = "key_01JD8X0M5Q6W7E8R9T0Y1U2I3P"
ET = "et_01JD8X0M5Q6W7E8R9T0Y1U2I3Q"
ENT = "ent_01JD8X0M5Q6W7E8R9T0Y1U2I3R"
WF = "wf_01JD8X0M5Q6W7E8R9T0Y1U2I3S"
RUN = "run_01JD8X0M5Q6W7E8R9T0Y1U2I3T"
JOB = "job_01JD8X0M5Q6W7E8R9T0Y1U2I3U"
TRG = "trg_01JD8X0M5Q6W7E8R9T0Y1U2I3V"
CRED = "cred_01JD8X0M5Q6W7E8R9T0Y1U2I3W"
TEV = "tev_01JD8X0M5Q6W7E8R9T0Y1U2I3X"
APR = "apr_01JD8X0M5Q6W7E8R9T0Y1U2I3Y"
AUD = "aud_01JD8X0M5Q6W7E8R9T0Y1U2I3Z"

PRODUCT_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
    "required": ["title"],
}
STEPS = [
    {
        "id": "describe",
        "type": "ai_generate",
        "name": "Write a description",
        "config": {
            "provider": "template",
            "prompt": "A short description of {{ entity.data.title }}",
            "outputField": "description",
        },
    },
    {"id": "check", "type": "validate", "name": None, "config": {}},
    {"id": "ship", "type": "publish", "name": None, "config": {}},
]
RETRY = {"maxAttempts": 3, "backoffSeconds": 2.0}
SETTINGS = {
    "concurrency": 50,
    "toleratedFailurePercentage": 5,
    "retry": RETRY,
    "entityTimeoutSeconds": 300,
    "notifyOnFinish": None,
}
PROGRESS = {"total": 250, "completed": 240, "failed": 3, "cancelled": 0, "pending": 7}
WORKFLOW_SUMMARY = {
    "id": WF,
    "name": "Describe and publish products",
    "description": "Writes a description, checks it, publishes.",
    "status": "active",
    "entityTypeId": ET,
    "stepsCount": 3,
    "version": 4,
    "lastRunAt": T0 + 3_600_000,
    "createdAt": T0,
    "updatedAt": T0 + 60_000,
}
STEP_RESULT = {
    "stepId": "describe",
    "type": "ai_generate",
    "status": "completed",
    "output": {
        "text": "A sturdy oak desk.",
        "model": "template",
        "usage": {"inputTokens": 12, "outputTokens": 5},
    },
    "error": None,
    "durationMs": 14,
    "attempts": 1,
}
ENTITY = {
    "id": ENT,
    "entityTypeId": ET,
    "data": {"title": "Oak desk", "price": 249},
    "status": "draft",
    "version": 1,
    "publishedAt": None,
    "publishedVersion": None,
    "createdAt": T0,
    "updatedAt": T0,
}
TRIGGER = {
    "id": TRG,
    "workflowId": WF,
    "type": "cron",
    "enabled": True,
    "cron": "0 9 * * 1-5",
    "timezone": "Europe/Paris",
    "selector": {"status": "ready"},
    "overlapPolicy": "skip",
    "catchUp": "none",
    "nextRunAt": T0 + 86_400_000,
    "lastRunAt": None,
    "createdAt": T0,
    "updatedAt": T0,
}

EXAMPLES: dict[str, Any] = {
    "Error": {
        "code": 422,
        "status": "Unprocessable Entity",
        "message": "The request is not valid: steps[0].config.model: Missing data.",
        "errors": {"steps[0].config.model": ["Missing data for required field."]},
    },
    "Workspace": {"id": WS, "name": "Acme", "createdAt": T0},
    "CallerKey": {"id": KEY, "name": "ci", "role": "editor", "keyPrefix": "cvk_3fa9"},
    "Me": {
        "workspace": {"id": WS, "name": "Acme", "createdAt": T0},
        "key": {"id": KEY, "name": "ci", "role": "editor", "keyPrefix": "cvk_3fa9"},
    },
    "ApiKey": {
        "id": KEY,
        "name": "ci",
        "role": "executor",
        "keyPrefix": "cvk_3fa9",
        "createdAt": T0,
        "lastUsedAt": None,
    },
    "ApiKeyCreated": {
        "id": KEY,
        "name": "ci",
        "role": "executor",
        "keyPrefix": "cvk_3fa9",
        "createdAt": T0,
        "lastUsedAt": None,
        "key": "cvk_3fa9Qm1x7Vb2Lr8KpT0sWc4ZyH6nEa5D",
    },
    "EntityType": {
        "id": ET,
        "name": "Product",
        "description": "Catalogue products",
        "schema": PRODUCT_SCHEMA,
        "createdAt": T0,
        "updatedAt": T0,
    },
    "EntityTypeUpdate": {"description": "Catalogue products (EU)"},
    "Entity": ENTITY,
    "EntityBulk": {
        "entities": [
            {"entityTypeId": ET, "data": {"title": "Oak desk", "price": 249}},
            {"entityTypeId": ET, "data": {"title": "Pine shelf", "price": 59}, "status": "ready"},
        ]
    },
    "EntityUpdate": {"data": {"title": "Oak desk, large", "price": 279}, "status": "ready"},
    "EntityRun": {
        "runId": RUN,
        "workflowId": WF,
        "runStatus": "completed",
        "status": "completed",
        "error": None,
        "createdAt": T0,
        "completedAt": T0 + 42_000,
    },
    "WorkflowSummary": WORKFLOW_SUMMARY,
    "Step": STEPS[0],
    "Retry": RETRY,
    "NotifyOnFinish": {
        "channel": "slack",
        "url": None,
        "to": None,
        "credential": "team-slack",
        "linkBaseUrl": "https://conveyor.example.com",
    },
    "Settings": SETTINGS,
    "Workflow": {**WORKFLOW_SUMMARY, "steps": STEPS, "settings": SETTINGS},
    "WorkflowUpdate": {"status": "active", "settings": {"concurrency": 20}},
    "StepType": {
        "type": "validate",
        "category": "data",
        "description": "Checks entity data against a JSON Schema and rules.",
        "configSchema": {"type": "object", "properties": {"rules": {"type": "array"}}},
        "outputSchema": {"type": "object", "properties": {"valid": {"type": "boolean"}}},
    },
    "Credential": {
        "id": CRED,
        "name": "openai-prod",
        "type": "openai",
        "data": {"apiKey": "sk-..."},
        "settings": {"baseUrl": "https://api.openai.com/v1", "requestsPerMinute": 500},
        "createdAt": T0,
        "updatedAt": T0,
    },
    "CredentialUpdate": {
        "name": "openai-prod",
        "type": "openai",
        "data": {"apiKey": "sk-..."},
        "settings": {"baseUrl": "https://api.openai.com/v1", "requestsPerMinute": 500},
    },
    "CredentialTest": {"url": None},
    "CredentialTestResult": {
        "ok": True,
        "message": "HTTP 200 from the models endpoint",
        "durationMs": 182,
    },
    "RunFilter": {"status": "ready"},
    "RunCreate": {"entityIds": [ENT], "input": {"source": "api"}},
    "RunCreated": {"jobId": JOB, "runId": RUN},
    "Progress": PROGRESS,
    "TriggerRef": {"type": "api", "triggerId": None},
    "Usage": {"inputTokens": 3000, "outputTokens": 1250},
    "Run": {
        "id": RUN,
        "workflowId": WF,
        "workflowVersion": 4,
        "jobId": JOB,
        "status": "running",
        "progress": PROGRESS,
        "trigger": {"type": "api", "triggerId": None},
        "retryOf": None,
        "input": None,
        "usage": {"inputTokens": 3000, "outputTokens": 1250},
        "error": None,
        "createdAt": T0,
        "startedAt": T0 + 120,
        "completedAt": None,
    },
    "StepResult": STEP_RESULT,
    "RunItem": {
        "entityId": ENT,
        "status": "completed",
        "attempts": 1,
        "error": None,
        "steps": [STEP_RESULT],
        "startedAt": T0 + 200,
        "completedAt": T0 + 260,
    },
    "Job": {
        "id": JOB,
        "type": "workflow_run",
        "status": "running",
        "progress": PROGRESS,
        "runId": RUN,
        "workflowId": WF,
        "error": None,
        "createdAt": T0,
        "startedAt": T0 + 120,
        "completedAt": None,
    },
    "JobLog": {
        "id": 1042,
        "timestamp": T0 + 260,
        "level": "error",
        "entityId": ENT,
        "stepId": "check",
        "message": "validation failed: title is required",
        "data": {"errors": [{"path": "title", "message": "'title' is a required property"}]},
    },
    "Selector": {"status": "ready", "updatedSince": "lastRun"},
    "Trigger": TRIGGER,
    "TriggerUpdate": {"enabled": False},
    "TriggerEvent": {
        "id": TEV,
        "triggerId": TRG,
        "outcome": "fired",
        "reason": None,
        "message": None,
        "runId": RUN,
        "scheduledAt": T0 + 32_400_000,
        "createdAt": T0 + 32_400_150,
    },
    "WebhookFired": {
        "jobId": JOB,
        "runId": RUN,
        "eventId": TEV,
        "outcome": "fired",
        "reason": None,
    },
    "WorkflowDuplicate": {"name": "Describe and publish products (EU)"},
    "EntityTypeRef": {"name": "Product", "schema": PRODUCT_SCHEMA},
    "WorkflowDocument": {
        "apiVersion": "conveyor/v1",
        "kind": "Workflow",
        "name": "Describe and publish products",
        "description": "Writes a description, checks it, publishes.",
        "entityType": {"name": "Product", "schema": PRODUCT_SCHEMA},
        "steps": STEPS,
        "settings": SETTINGS,
    },
    "ValidationResult": {
        "valid": False,
        "errors": {"steps[1].config.rules[0].pattern": ["Not a valid regular expression."]},
    },
    "Actor": {"keyId": KEY, "keyPrefix": "cvk_3fa9"},
    "RevisionSummary": {
        "version": 4,
        "createdAt": T0 + 60_000,
        "actor": {"keyId": KEY, "keyPrefix": "cvk_3fa9"},
        "changes": ["steps", "settings"],
        "restoredFrom": None,
    },
    "Revision": {
        "version": 4,
        "createdAt": T0 + 60_000,
        "actor": {"keyId": KEY, "keyPrefix": "cvk_3fa9"},
        "changes": ["steps", "settings"],
        "restoredFrom": None,
        "name": "Describe and publish products",
        "description": "Writes a description, checks it, publishes.",
        "status": "active",
        "entityTypeId": ET,
        "steps": STEPS,
        "settings": SETTINGS,
    },
    "JsonPatchOperation": {"op": "replace", "path": "/settings/concurrency", "value": 50},
    "Deleted": {"deleted": 12},
    "Approval": {
        "id": APR,
        "runId": RUN,
        "workflowId": WF,
        "stepId": "review",
        "entityId": ENT,
        "status": "pending",
        "preview": {"data": {"title": "Oak desk", "description": "A sturdy oak desk."}},
        "instructions": "Check the tone of the description.",
        "assignees": ["copy-desk"],
        "expiresAt": T0 + 86_400_000,
        "createdAt": T0 + 300,
        "decidedAt": None,
        "decidedBy": None,
        "comment": None,
    },
    "DecideFilter": {"runId": RUN, "stepId": "review"},
    "Decide": {
        "filter": {"runId": RUN, "stepId": "review"},
        "decision": "approve",
        "comment": "Batch looks good.",
    },
    "Decided": {"decided": 48},
    "Decision": {"comment": "Tone is right; ship it."},
    "KvKey": {"namespace": "catalog", "key": "published-count", "version": 7, "updatedAt": T0},
    "KvEntry": {
        "namespace": "catalog",
        "key": "published-count",
        "value": 42,
        "version": 7,
        "updatedAt": T0,
    },
    "AuditActor": {"keyId": KEY, "keyPrefix": "cvk_3fa9", "role": "editor"},
    "AuditEntry": {
        "id": AUD,
        "at": T0 + 60_000,
        "actor": {"keyId": KEY, "keyPrefix": "cvk_3fa9", "role": "editor"},
        "action": "workflow.updated",
        "resourceType": "workflow",
        "resourceId": WF,
        "details": {"fields": ["steps"]},
    },
}
