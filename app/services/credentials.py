"""Credentials: secrets encrypted at rest (AES-256-GCM), resolved by name for steps, and
checked for real by ``test_credential``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import marshmallow as ma
from sqlmodel import Session, select

from app.config import Settings
from app.crypto import CryptoError, MissingSecretKey, SecretBox
from app.db import conflict_on_integrity_error
from app.errors import ConveyorError, ServiceUnavailable, ValidationFailed, flatten_errors
from app.ids import new_id, now_ms
from app.models import Credential
from app.redaction import redact_text, remember_secrets
from app.schemas.credentials import load_type_fields
from app.services.ownership import get_owned
from steps.clients import ResolvedCredential
from steps.clients.outbound import OutboundPolicy
from steps.errors import StepError

TEST_TIMEOUT_SECONDS = 15.0


class CredentialUnavailable(ConveyorError):
    """A credential cannot be used: unknown name, or its secret does not decrypt."""

    code = 503


def secret_box(settings: Settings) -> SecretBox:
    """The box for the configured keys; 503 with the reason when CONVEYOR_SECRET_KEY is unset."""
    try:
        return SecretBox(settings.secret_keys)
    except MissingSecretKey as exc:
        raise ServiceUnavailable(str(exc)) from exc


def _aad(workspace_id: str, credential_id: str) -> bytes:
    """Associated data binding a sealed secret to its row."""
    return f"conveyor/credential/{workspace_id}/{credential_id}".encode()


def _load_fields(
    type_: str, data: dict[str, Any] | None, settings: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    try:
        return load_type_fields(type_, data=data, settings=settings)
    except ma.ValidationError as exc:
        errors = flatten_errors(exc.messages)
        first = next(iter(errors))
        raise ValidationFailed(
            f"The {type_} credential is not valid: {first}: {' '.join(errors[first])}", errors
        ) from exc


def list_credentials(*, session: Session, workspace_id: str) -> list[Credential]:
    """The workspace's credentials, oldest first."""
    query = select(Credential).where(Credential.workspace_id == workspace_id)
    return list(session.exec(query.order_by(Credential.id)))


def get_credential(*, session: Session, workspace_id: str, credential_id: str) -> Credential:
    """One credential of the workspace (404 for another workspace's)."""
    return get_owned(session, Credential, credential_id, workspace_id, what="Credential")


def create_credential(
    *, session: Session, workspace_id: str, data: dict[str, Any], box: SecretBox
) -> Credential:
    """Validate the type's fields, seal the secret data, store."""
    secret, settings = _load_fields(data["type"], data["data"], data.get("settings") or {})
    row = Credential(
        id=new_id("cred"),
        workspace_id=workspace_id,
        name=data["name"],
        type=data["type"],
        secret=b"",
        settings=settings,
    )
    row.secret = box.seal_json(secret, aad=_aad(workspace_id, row.id))
    session.add(row)
    with conflict_on_integrity_error(f"A credential named {data['name']!r} already exists."):
        session.commit()
    return row


def update_credential(
    *,
    session: Session,
    workspace_id: str,
    credential_id: str,
    data: dict[str, Any],
    box: SecretBox | None,
) -> Credential:
    """Rename, replace settings and/or replace the secret data (``None`` fields are kept)."""
    row = get_credential(session=session, workspace_id=workspace_id, credential_id=credential_id)
    if data.get("type") not in (None, row.type):
        raise ValidationFailed(
            "A credential's type cannot change; create a new credential.",
            {"type": [f"Must stay {row.type!r}."]},
        )
    secret, settings = _load_fields(row.type, data.get("data"), data.get("settings"))
    row.name = data["name"]
    if settings is not None:
        row.settings = settings
    if secret is not None:
        if box is None:
            raise ServiceUnavailable("CONVEYOR_SECRET_KEY is not set: cannot encrypt the secret.")
        row.secret = box.seal_json(secret, aad=_aad(workspace_id, row.id))
    row.updated_at = now_ms()
    session.add(row)
    with conflict_on_integrity_error(f"A credential named {data['name']!r} already exists."):
        session.commit()
    return row


def delete_credential(*, session: Session, workspace_id: str, credential_id: str) -> None:
    """Delete at once; steps that name it fail from then on."""
    row = get_credential(session=session, workspace_id=workspace_id, credential_id=credential_id)
    session.delete(row)
    session.commit()


def open_credential(row: Credential, box: SecretBox) -> ResolvedCredential:
    """The decrypted credential of a row."""
    try:
        secret = box.open_json(row.secret, aad=_aad(row.workspace_id, row.id))
    except CryptoError as exc:
        raise CredentialUnavailable(f"Credential {row.name!r} cannot be decrypted: {exc}") from exc
    return ResolvedCredential(row.name, row.type, secret or {}, row.settings or {})


def resolve_credential(
    *, session: Session, workspace_id: str, name: str, box: SecretBox
) -> ResolvedCredential:
    """The workspace's credential named ``name``, decrypted."""
    query = select(Credential).where(
        Credential.workspace_id == workspace_id, Credential.name == name
    )
    row = session.exec(query).first()
    if row is None:
        raise CredentialUnavailable(f"No credential named {name!r} in this workspace.")
    return open_credential(row, box)


def rotate_credentials(*, session: Session, box: SecretBox, batch_size: int = 500) -> int:
    """Re-seal every secret still under an older key with the newest; how many were."""
    count = 0
    for row in _all_rows(session, batch_size):
        if box.needs_rotation(row.secret):
            aad = _aad(row.workspace_id, row.id)
            row.secret = box.seal(box.open(row.secret, aad=aad), aad=aad)
            session.add(row)
            count += 1
    session.commit()
    return count


def _all_rows(session: Session, batch_size: int) -> Iterator[Credential]:
    last = ""
    while True:
        query = select(Credential).where(Credential.id > last).order_by(Credential.id)
        rows = list(session.exec(query.limit(batch_size)))
        yield from rows
        if len(rows) < batch_size:
            return
        last = rows[-1].id


def secret_values(value: Any) -> list[str]:
    """Every string inside a credential's secret data (to redact from messages)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in secret_values(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in secret_values(v)]
    return []


def check_credential(
    *,
    session: Session,
    workspace_id: str,
    credential_id: str,
    box: SecretBox,
    policy: OutboundPolicy,
    url: str | None = None,
) -> dict[str, Any]:
    """Really use the credential once: list models, log in to SMTP, or POST a test message.

    Returns ``{ok, message, duration_ms}``; the message never contains the secret.
    """
    row = get_credential(session=session, workspace_id=workspace_id, credential_id=credential_id)
    credential = open_credential(row, box)
    remember_secrets(secret_values(credential.data))  # scrubbed from this process's logs
    if url is not None:
        _check_test_url(credential, url)
    started = time.monotonic()
    try:
        message = _exercise(credential, policy, url=url, message_id=f"test:{row.id}:{now_ms()}")
        ok = True
    except StepError as exc:
        message, ok = exc.message, False
    return {
        "ok": ok,
        "message": redact_text(message, secret_values(credential.data)),
        "duration_ms": int((time.monotonic() - started) * 1000),
    }


def _check_test_url(credential: ResolvedCredential, url: str) -> None:
    """422 when a test ``url`` would send the credential somewhere it does not belong.

    Only webhook credentials take a ``url``, and only one of the origin of the url stored
    with them (or, without a stored url, a credential that only signs).
    """
    from steps.clients.webhooks import credential_url

    if credential.type != "webhook":
        raise ValidationFailed(
            f"A {credential.type} credential is tested against its own destination only; omit url.",
            {"url": ["Only webhook credentials take a url."]},
        )
    try:
        credential_url(credential, url)
    except StepError as exc:
        raise ValidationFailed(exc.message, {"url": [exc.message]}) from exc


def _exercise(
    credential: ResolvedCredential, policy: OutboundPolicy, *, url: str | None, message_id: str
) -> str:
    """One real call with the credential; a short description of what worked."""
    from steps.clients import mail, notifiers, webhooks
    from steps.clients.llm import AnthropicProvider, OpenAIProvider

    data, settings = credential.data, credential.settings
    if credential.type == "openai":
        return OpenAIProvider(
            policy=policy,
            api_key=data.get("api_key"),
            base_url=settings.get("base_url"),
            organization=settings.get("organization"),
        ).check(timeout=TEST_TIMEOUT_SECONDS)
    if credential.type == "anthropic":
        return AnthropicProvider(
            policy=policy,
            api_key=str(data.get("api_key") or ""),
            base_url=settings.get("base_url"),
            version=settings.get("anthropic_version"),
        ).check(timeout=TEST_TIMEOUT_SECONDS)
    if credential.type == "smtp":
        return mail.check_login(mail.SmtpSettings.from_credential(data, settings), policy)
    if credential.type == "slack":
        notifiers.send_slack(
            policy,
            data["url"],
            text=f"Conveyor: test message for credential {credential.name!r}.",
            timeout=TEST_TIMEOUT_SECONDS,
        )
        return "Slack accepted the test message"
    if not (url or data.get("url")):
        raise StepError('this webhook credential has no url; pass {"url": ...} to test it')
    target = webhooks.credential_url(credential, url)  # the secret goes only where it belongs
    payload = webhooks.event("conveyor.test", {"credential": credential.name})
    response = webhooks.post_event(
        policy,
        target,
        payload,
        message_id=message_id,
        secret=data.get("secret"),
        headers=data.get("headers"),
        timeout=TEST_TIMEOUT_SECONDS,
        pin_origin=True,
    )
    if not 200 <= response.status_code < 300:
        raise StepError(f"the receiver answered {response.status_code}: {response.snippet(200)}")
    signed = "signed" if data.get("secret") else "unsigned"
    return f"the receiver accepted a {signed} test event ({response.status_code})"
