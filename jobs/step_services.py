"""What steps reach through ``ctx.services``: credentials from the vault, the LLM gateway on the
workspace-wide rate limiter, signed publish delivery and notifications.

The engine builds one ``ChunkServices`` per chunk with ``build_services`` and redacts
``services.secrets()`` (every credential value loaded so far) from logs, outputs and errors.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.config import Settings
from app.crypto import MissingSecretKey, SecretBox
from app.errors import ConveyorError
from app.models import JobLog, Run, Workflow
from app.redaction import install_log_redaction, redact_text, remember_secrets
from jobs.runtime import Runtime
from steps.base import StepContext
from steps.clients import ResolvedCredential, mail, notifiers, webhooks
from steps.clients.llm import LLMGateway, RetryPolicy
from steps.clients.outbound import OutboundPolicy
from steps.clients.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from steps.errors import StepError, TransientError
from steps.retry import backoff_delay

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "Conveyor notification"

_local_limiter = LocalRateLimiter()


def limiter_for(settings: Settings) -> RateLimiter:
    """The process's limiter: shared through Redis, or in process in the embedded mode."""
    if not settings.redis_url:
        return _local_limiter
    from app.queue import shared_per_redis

    return shared_per_redis("rate-limiter", settings.redis_url, RedisRateLimiter)


class CredentialStore:
    """The workspace's credentials by name, loaded and decrypted once per chunk."""

    def __init__(self, runtime: Runtime, workspace_id: str) -> None:
        self.runtime = runtime
        self.workspace_id = workspace_id
        self._cache: dict[str, ResolvedCredential] = {}
        self._secrets: list[str] = []
        self._lock = threading.Lock()

    def get(self, name: str) -> ResolvedCredential:
        """The credential named ``name``; a StepError saying why when it cannot be had."""
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None:
            return cached
        from app.services.credentials import resolve_credential, secret_values

        try:
            box = SecretBox(self.runtime.settings.secret_keys)
        except MissingSecretKey as exc:
            raise StepError(f"credential {name!r} cannot be used: {exc}") from exc
        try:
            with self.runtime.session() as session:
                credential = resolve_credential(
                    session=session, workspace_id=self.workspace_id, name=name, box=box
                )
        except ConveyorError as exc:
            raise StepError(exc.message) from exc
        except SQLAlchemyError as exc:
            raise TransientError(f"credential {name!r}: the database is not reachable") from exc
        values = secret_values(credential.data)
        remember_secrets(values)
        with self._lock:
            self._cache[name] = credential
            self._secrets.extend(v for v in values if v not in self._secrets)
        return credential

    def secrets(self) -> list[str]:
        """Every secret value loaded so far."""
        with self._lock:
            return list(self._secrets)


_MISSING = object()


@dataclass
class ChunkServices:
    """The side-effect clients of one chunk of one run."""

    workspace_id: str
    run_id: str
    policy: OutboundPolicy
    credentials: CredentialStore
    llm: LLMGateway
    runtime: Runtime | None = None
    _kv_cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Credential values to redact from logs, outputs and errors."""
        return self.credentials.secrets()

    def kv(self, namespace: str, key: str, default: Any = None) -> Any:
        """The workspace's KV value, read once per chunk (the run sees one value of it)."""
        from app.services.kv import read_kv

        cache = self._kv_cache
        if (namespace, key) not in cache:
            if self.runtime is None:
                return default
            try:
                with self.runtime.session() as session:
                    cache[(namespace, key)] = read_kv(
                        session,
                        workspace_id=self.workspace_id,
                        namespace=namespace,
                        key=key,
                        default=_MISSING,
                    )
            except SQLAlchemyError as exc:
                raise TransientError(f"kv({namespace!r}, {key!r}): {exc}") from exc
        value = cache[(namespace, key)]
        return default if value is _MISSING else value

    def deliver(self, target: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """POST the published entity to ``target``, signed with its credential's secret.

        ``webhook-id`` is ``ctx.idempotency_key`` on every attempt and every resumption, so a
        receiver that dedupes on it sees each (run, entity, step) exactly once.
        """
        secret, headers, url = None, dict(target.get("headers") or {}), target["url"]
        if target.get("credential"):
            credential = self._typed(target["credential"], "webhook")
            secret = credential.data.get("secret")
            if not secret:
                raise StepError(f"credential {credential.name!r} has no signing secret")
            url = webhooks.credential_url(credential, url)  # its secret goes only there
            headers = {**(credential.data.get("headers") or {}), **headers}
        payload = published_event(ctx)
        response = webhooks.deliver(  # one request: settings.retry decides about another
            self.policy,
            url,
            payload,
            message_id=ctx.idempotency_key,
            secret=secret,
            headers=headers,
            timeout=float(target.get("timeout_seconds") or 10.0),
            remaining=_remaining(ctx),
            pin_origin=bool(target.get("credential")),
        )
        return {"statusCode": response.status_code}

    def notify(
        self, config: dict[str, Any], *, message: str, subject: str | None, ctx: StepContext
    ) -> None:
        """Send a rendered notification (at most once per run, entity and step)."""
        context = {
            "entity": {"id": ctx.entity.id, "status": ctx.entity.status},
            "run": {"id": ctx.run.get("id"), "workflowId": ctx.run.get("workflowId")},
            "stepId": ctx.step_id,
        }
        self.send(
            config,
            message=message,
            subject=subject,
            message_id=ctx.idempotency_key,
            context=context,
            remaining=_remaining(ctx),
        )

    def send(
        self,
        config: dict[str, Any],
        *,
        message: str,
        subject: str | None,
        message_id: str,
        context: dict[str, Any],
        remaining: Callable[[], float] = lambda: float("inf"),
    ) -> None:
        """Send on ``config['channel']``: ``webhook``, ``slack`` or ``email``."""
        channel = config["channel"]
        if channel == "email":
            credential = self._typed(config.get("credential"), "smtp")
            settings = mail.SmtpSettings.from_credential(credential.data, credential.settings)
            digest = hashlib.sha256(message_id.encode()).hexdigest()[:32]
            mail.send_email(
                settings,
                self.policy,
                to=config.get("to") or [],
                subject=subject or DEFAULT_SUBJECT,
                body=message,
                message_id=f"<{digest}@conveyor.invalid>",
            )
            return
        if channel == "slack":
            url = config.get("url")
            if not url:
                url = self._typed(config.get("credential"), "slack").data.get("url")
            text = f"*{subject}*\n{message}" if subject else message
            notifiers.send_slack(self.policy, str(url), text=text)
            return
        if channel != "webhook":
            raise StepError(f"unknown notification channel {channel!r}")
        secret, headers, url = None, {}, config.get("url")
        if config.get("credential"):
            credential = self._typed(config["credential"], "webhook")
            secret = credential.data.get("secret")
            headers = dict(credential.data.get("headers") or {})
            url = webhooks.credential_url(credential, url)  # its secret goes only there
        if not url:
            raise StepError("the webhook notification has no url (in the step or its credential)")
        payload = webhooks.event(
            "conveyor.notification", {"message": message, "subject": subject, **context}
        )
        notifiers.send_webhook(
            self.policy,
            str(url),
            payload,
            message_id=message_id,
            secret=secret,
            headers=headers,
            remaining=remaining,
            pin_origin=bool(config.get("credential")),
        )

    def _typed(self, name: str | None, type_: str) -> ResolvedCredential:
        """The credential ``name``, which must be of type ``type_``."""
        if not name:
            raise StepError(f"a {type_} credential is needed")
        credential = self.credentials.get(name)
        if credential.type != type_:
            raise StepError(f"credential {name!r} is of type {credential.type!r}, not {type_!r}")
        return credential


def published_event(ctx: StepContext) -> dict[str, Any]:
    """The ``entity.published`` event a ``publish`` delivers (or a dry run shows)."""
    entity = ctx.entity
    return webhooks.event(
        "entity.published",
        {
            "entity": {
                "id": entity.id,
                "data": entity.data,
                "status": entity.status,
                "version": entity.version,
                "publishedVersion": entity.version + 1,
            },
            "run": {"id": ctx.run.get("id"), "workflowId": ctx.run.get("workflowId")},
            "stepId": ctx.step_id,
        },
    )


def _remaining(ctx: StepContext | None) -> Callable[[], float]:
    def remaining() -> float:
        seconds = ctx.remaining_seconds() if ctx is not None else None
        return float("inf") if seconds is None else seconds

    return remaining


def build_services(runtime: Runtime, workspace_id: str, run_id: str) -> ChunkServices:
    """The services of one chunk: credentials are loaded lazily, clients are shared."""
    settings = runtime.settings
    install_log_redaction()  # credential values loaded below never reach the process's logs
    policy = OutboundPolicy(tuple(settings.outbound_allow_hosts))
    credentials = CredentialStore(runtime, workspace_id)
    llm = LLMGateway(
        workspace_id=workspace_id,
        policy=policy,
        limiter=limiter_for(settings),
        credentials=credentials.get,
        retry=RetryPolicy(),
        observe=functools.partial(metrics.observe_provider_call, metrics.store_for(settings)),
    )
    return ChunkServices(workspace_id, run_id, policy, credentials, llm, runtime)


def format_duration(ms: int) -> str:
    """``130_000`` → ``"2 m 10 s"``."""
    seconds = max(0, round(ms / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes} m")
    parts.append(f"{seconds} s")
    return " ".join(parts)


def summary_line(run: Run) -> str:
    """``"412 completed, 3 failed, 2 m 10 s"`` (cancelled only when there are some)."""
    counts = [f"{run.completed} completed", f"{run.failed} failed"]
    if run.cancelled:
        counts.append(f"{run.cancelled} cancelled")
    started = run.started_at or run.created_at
    duration = (run.completed_at or started) - started
    return ", ".join([*counts, format_duration(duration)])


MAX_SUMMARY_BACKOFF_SECONDS = 30.0


def send_run_summary(
    runtime: Runtime,
    run: Run,
    workflow_settings: dict[str, Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Send ``settings.notify_on_finish``'s one summary of a finished run, with a link to it.

    Like a step, it is sent once per attempt of the workflow's ``settings.retry`` (retryable
    failures only, each wait at most 30 s). Raises (with credential values redacted) when it
    could not be sent; the engine logs that.
    """
    config = dict(workflow_settings.get("notify_on_finish") or {})
    if not config.get("channel"):
        return
    with runtime.session() as session:
        workflow = session.get(Workflow, run.workflow_id)
    name = workflow.name if workflow else run.workflow_id
    line = summary_line(run)
    subject = f"Conveyor: {name} run {run.status} ({line})"
    message = f"Run {run.id} of workflow {name!r} {run.status}: {line}."
    base = config.get("link_base_url")
    if base:
        message += f"\n{base.rstrip('/')}/api/v1/workflows/{run.workflow_id}/runs/{run.id}"
    services = build_services(runtime, run.workspace_id, run.id)
    context = {
        "run": {
            "id": run.id,
            "workflowId": run.workflow_id,
            "status": run.status,
            "total": run.total,
            "completed": run.completed,
            "failed": run.failed,
            "cancelled": run.cancelled,
        }
    }
    retry = workflow_settings.get("retry") or {}
    attempts = max(1, int(retry.get("max_attempts", 1)))
    backoff = float(retry.get("backoff_seconds", 1.0))
    for attempt in range(1, attempts + 1):
        try:
            services.send(
                config,
                message=message,
                subject=subject,
                message_id=f"{run.id}:summary",
                context=context,
            )
            break
        except StepError as exc:
            if not exc.retryable or attempt == attempts:
                raise RuntimeError(redact_text(exc.message, services.secrets())) from None
            hint = exc.retry_after if isinstance(exc, TransientError) else None
            delay = backoff_delay(attempt, backoff, hint, jitter=(1.0, 1.0))
            sleep(min(delay, MAX_SUMMARY_BACKOFF_SECONDS))
    with runtime.session() as session:
        session.add(
            JobLog(
                job_id=run.job_id,
                level="info",
                message=f"run summary sent ({config['channel']}): {line}",
            )
        )
        session.commit()
