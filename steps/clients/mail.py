"""SMTP with the TLS modes of an SMTP credential (``starttls``, ``ssl``, ``none``), connecting
only to addresses the outbound policy allows."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from steps.clients.outbound import OutboundPolicy
from steps.errors import OutboundRefused, OutboundTimeout, OutboundUnreachable, StepError

TLS_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to log in, from an SMTP credential (``password`` is its secret)."""

    host: str
    port: int
    tls: str = "starttls"
    username: str | None = None
    password: str | None = None
    from_address: str | None = None
    verify_tls: bool = True
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_credential(cls, data: Mapping[str, Any], settings: Mapping[str, Any]) -> SmtpSettings:
        """Build from a credential's ``data`` and ``settings`` (snake_case)."""
        tls = settings.get("tls") or "starttls"
        return cls(
            host=str(settings["host"]),
            port=int(settings.get("port") or DEFAULT_PORTS[tls]),
            tls=tls,
            username=settings.get("username"),
            password=data.get("password"),
            from_address=settings.get("from_address") or settings.get("username"),
            verify_tls=bool(settings.get("verify_tls", True)),
            timeout=float(settings.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Certificate checks on, unless the credential turned them off (self-signed relays)."""
        context = ssl.create_default_context()
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _guarded_socket(policy: OutboundPolicy, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to a policy-checked address of ``host``."""
    last: OSError | None = None
    for address in policy.resolve(host, port, timeout):
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            last = exc
    raise last or OSError(f"no address for {host}")


class _GuardedSMTP(smtplib.SMTP):
    policy: OutboundPolicy

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:  # type: ignore[override]
        return _guarded_socket(self.policy, host, port, timeout)


class _GuardedSMTPSSL(smtplib.SMTP_SSL):
    policy: OutboundPolicy

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:  # type: ignore[override]
        sock = _guarded_socket(self.policy, host, port, timeout)
        return self.context.wrap_socket(sock, server_hostname=host)  # type: ignore[attr-defined, no-any-return]


def _connect(settings: SmtpSettings, policy: OutboundPolicy) -> smtplib.SMTP:
    """An open, TLS-protected (as configured) and logged-in SMTP session."""
    client: smtplib.SMTP
    if settings.tls == "ssl":
        client = _GuardedSMTPSSL(timeout=settings.timeout, context=settings.ssl_context())
    else:
        client = _GuardedSMTP(timeout=settings.timeout)
    client.policy = policy  # type: ignore[attr-defined]
    # STARTTLS checks the certificate against _host, which connect() does not set.
    client._host = settings.host  # type: ignore[union-attr]
    try:
        client.connect(settings.host, settings.port)
        client.ehlo()
        if settings.tls == "starttls":
            client.starttls(context=settings.ssl_context())
            client.ehlo()
        if settings.username:
            client.login(settings.username, settings.password or "")
    except BaseException:
        client.close()
        raise
    return client


def _failure(settings: SmtpSettings, exc: Exception) -> StepError:
    """A clear step error for an SMTP failure (transient only when nothing was sent)."""
    where = f"SMTP server {settings.host}:{settings.port}"
    if isinstance(exc, StepError):
        return exc
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return StepError(f"{where} refused the login: {exc.smtp_code} {_text(exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return StepError(f"{where}: {exc} (check the credential's tls setting)")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return StepError(f"{where}: TLS failed: {exc}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{r}: {_text(e[1])}" for r, e in exc.recipients.items())
        return StepError(f"{where} refused the recipients: {refused}")
    if isinstance(exc, smtplib.SMTPConnectError | ConnectionRefusedError | socket.gaierror):
        return OutboundUnreachable(f"could not connect to {where}: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        message = f"{where} answered {exc.smtp_code}: {_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            return OutboundUnreachable(message)  # a 4xx reply means "not accepted, try later"
        return StepError(message)
    if isinstance(exc, TimeoutError | socket.timeout):
        return OutboundTimeout(f"{where} timed out")
    return OutboundTimeout(f"{where}: {type(exc).__name__}: {exc}")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def check_login(settings: SmtpSettings, policy: OutboundPolicy) -> str:
    """Connect, negotiate TLS and log in, then quit: what ``POST /credentials/{id}/test`` does."""
    try:
        client = _connect(settings, policy)
        client.quit()
    except OutboundRefused:
        raise
    except Exception as exc:
        raise _failure(settings, exc) from exc
    login = f"logged in as {settings.username}" if settings.username else "connected (no login)"
    return f"{settings.host}:{settings.port} ({settings.tls}): {login}"


def send_email(
    settings: SmtpSettings,
    policy: OutboundPolicy,
    *,
    to: Sequence[str],
    subject: str,
    body: str,
    message_id: str | None = None,
) -> None:
    """Send one plain-text message."""
    if not settings.from_address:
        raise StepError("the SMTP credential needs a fromAddress (or a username to send as)")
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    if message_id:
        message["Message-ID"] = message_id
    message.set_content(body)
    try:
        client = _connect(settings, policy)
        try:
            client.send_message(message)
        finally:
            try:
                client.quit()
            except smtplib.SMTPException:
                client.close()
    except OutboundRefused:
        raise
    except Exception as exc:
        raise _failure(settings, exc) from exc
