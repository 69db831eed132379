"""Credential schemas: the resource, and the secret ``data`` and plain ``settings`` per type.

``data`` is write-only: it is loaded, encrypted and never dumped. ``settings`` holds what is
not secret (hosts, limits) and is shown back.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from app.schemas import Schema, Timestamp
from steps.clients.mail import TLS_MODES
from steps.clients.webhooks import check_secret

CREDENTIAL_TYPES = ("openai", "anthropic", "smtp", "slack", "webhook")
_URL: dict[str, Any] = {"require_tld": False, "schemes": {"http", "https"}}


class ApiKeyData(Schema):
    api_key = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=1000))


class ProviderSettings(Schema):
    base_url = ma.fields.Url(
        load_default=None, metadata={"description": "API base URL (default: the vendor's)"}, **_URL
    )
    requests_per_minute = ma.fields.Integer(
        load_default=None,
        validate=ma.validate.Range(min=1, max=10_000_000),
        metadata={"description": "workspace-wide request limit for calls with this credential"},
    )
    tokens_per_minute = ma.fields.Integer(
        load_default=None,
        validate=ma.validate.Range(min=1, max=1_000_000_000),
        metadata={"description": "workspace-wide token limit (input + output)"},
    )
    timeout_seconds = ma.fields.Float(load_default=None, validate=ma.validate.Range(min=1, max=600))


class OpenAISettings(ProviderSettings):
    organization = ma.fields.String(load_default=None)


class AnthropicSettings(ProviderSettings):
    anthropic_version = ma.fields.String(load_default=None)


class SmtpData(Schema):
    password = ma.fields.String(load_default=None, validate=ma.validate.Length(max=1000))


class SmtpSettings(Schema):
    host = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=255))
    port = ma.fields.Integer(load_default=None, validate=ma.validate.Range(min=1, max=65535))
    tls = ma.fields.String(load_default="starttls", validate=ma.validate.OneOf(TLS_MODES))
    username = ma.fields.String(load_default=None)
    from_address = ma.fields.Email(load_default=None)
    verify_tls = ma.fields.Boolean(
        load_default=True, metadata={"description": "check the server certificate (default)"}
    )
    timeout_seconds = ma.fields.Float(load_default=None, validate=ma.validate.Range(min=1, max=120))


class SlackData(Schema):
    url = ma.fields.Url(required=True, metadata={"description": "incoming-webhook URL"}, **_URL)


class WebhookData(Schema):
    secret = ma.fields.String(
        load_default=None,
        metadata={"description": "Standard Webhooks signing secret: whsec_ + base64 (24-64 bytes)"},
    )
    url = ma.fields.Url(load_default=None, **_URL)
    headers = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), load_default=None)

    @ma.validates("secret")
    def _secret_format(self, value: str | None, **kwargs: Any) -> None:
        problem = check_secret(value) if value is not None else None
        if problem:
            raise ma.ValidationError(f"The signing secret {problem}.")

    @ma.validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not (data.get("secret") or data.get("url") or data.get("headers")):
            raise ma.ValidationError("Give at least one of secret, url or headers.")


class NoSettings(Schema):
    pass


TYPE_SCHEMAS: dict[str, tuple[type[Schema], type[Schema]]] = {
    "openai": (ApiKeyData, OpenAISettings),
    "anthropic": (ApiKeyData, AnthropicSettings),
    "smtp": (SmtpData, SmtpSettings),
    "slack": (SlackData, NoSettings),
    "webhook": (WebhookData, NoSettings),
}


def load_type_fields(
    type_: str, *, data: dict[str, Any] | None, settings: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``data`` and ``settings`` checked against the type's schemas (snake_case, ``None``
    values dropped); ``None`` passes through. Raises ``ma.ValidationError`` keyed by field."""
    data_schema, settings_schema = TYPE_SCHEMAS[type_]
    errors: dict[str, Any] = {}
    loaded: list[dict[str, Any] | None] = []
    pairs = (("data", data_schema, data), ("settings", settings_schema, settings))
    for key, schema, value in pairs:
        if value is None:
            loaded.append(None)
            continue
        try:
            result = schema().load(value)
        except ma.ValidationError as exc:
            errors[key] = exc.messages
            loaded.append(None)
            continue
        loaded.append({k: v for k, v in result.items() if v is not None})
    if errors:
        raise ma.ValidationError(errors)
    return loaded[0], loaded[1]


def dump_settings(type_: str, settings: dict[str, Any] | None) -> dict[str, Any]:
    """Stored (snake_case) settings as the API shows them (camelCase)."""
    schema = TYPE_SCHEMAS.get(type_, (None, NoSettings))[1]
    return schema().dump(settings or {})  # type: ignore[no-any-return]


class CredentialSchema(Schema):
    id = ma.fields.String(dump_only=True)
    name = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=200),
        metadata={"description": "how step configs refer to this credential"},
    )
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(CREDENTIAL_TYPES))
    data = ma.fields.Dict(
        required=True,
        load_only=True,
        metadata={
            "description": "Secret fields, write-only (encrypted at rest, never returned). "
            "openai/anthropic: {apiKey}; smtp: {password}; slack: {url}; "
            "webhook: {secret?, url?, headers?}.",
            "example": {"apiKey": "sk-..."},
        },
    )
    settings = ma.fields.Dict(
        load_default=dict,
        metadata={
            "description": "Non-secret settings. openai/anthropic: {baseUrl?, "
            "requestsPerMinute?, tokensPerMinute?, timeoutSeconds?}; smtp: {host, port?, "
            "tls: starttls|ssl|none, username?, fromAddress?, verifyTls?}.",
            "example": {"requestsPerMinute": 500, "tokensPerMinute": 200000},
        },
    )
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)

    @ma.post_dump(pass_original=True)
    def _typed_settings(self, out: dict[str, Any], original: Any, **kwargs: Any) -> dict[str, Any]:
        out["settings"] = dump_settings(original.type, original.settings)
        return out


class CredentialUpdateSchema(Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    type = ma.fields.String(
        load_default=None,
        validate=ma.validate.OneOf(CREDENTIAL_TYPES),
        metadata={"description": "cannot change; may be repeated"},
    )
    data = ma.fields.Dict(
        load_default=None,
        metadata={"description": "new secret fields (write-only); omit to keep the current ones"},
    )
    settings = ma.fields.Dict(
        load_default=None, metadata={"description": "new settings; omit to keep the current ones"}
    )


class CredentialTestSchema(Schema):
    url = ma.fields.Url(
        load_default=None,
        metadata={
            "description": "webhook credentials only: where to send the test. With a url "
            "stored in the credential it must have that url's origin (else 422: a credential "
            "goes only to its own destination); default: the stored url"
        },
        **_URL,
    )


class CredentialTestResultSchema(Schema):
    ok = ma.fields.Boolean()
    message = ma.fields.String()
    duration_ms = ma.fields.Integer()
