"""conveyor-client: a typed Python client for the Conveyor API.

from conveyor_client import Conveyor

with Conveyor("http://127.0.0.1:8000", api_key="cvk_...") as conveyor:
    for workflow in conveyor.workflows.list():
        print(workflow["name"])
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType

import httpx

from conveyor_client._transport import Transport, parse_retry_after
from conveyor_client.errors import (
    BadRequest,
    Conflict,
    ConveyorConnectionError,
    ConveyorError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
)
from conveyor_client.progress import ProgressBar
from conveyor_client.resources import (
    JSON,
    ApiKeys,
    Approvals,
    Audit,
    Credentials,
    Entities,
    EntityTypes,
    Jobs,
    Kv,
    Me,
    Operations,
    Revisions,
    Runs,
    StepTypes,
    Triggers,
    Webhooks,
    Workflows,
)
from conveyor_client.types import Progress, Run, RunCreated, RunItem, StepResult

__version__ = "0.1.0"


class Conveyor:
    """A Conveyor server: ``Conveyor(url, api_key)``, one attribute per resource.

    ``url`` and ``api_key`` default to ``CONVEYOR_URL`` and ``CONVEYOR_API_KEY``. A
    ``429``/``503`` answer is retried after its ``Retry-After`` (at most ``max_wait``
    seconds each, ``max_retries`` times); see ``conveyor_client._transport`` for which
    requests are retried after a dropped connection.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        http_client: httpx.Client | None = None,
    ) -> None:
        url = url or os.environ.get("CONVEYOR_URL")
        if not url:
            raise ValueError("No Conveyor URL: pass url= or set CONVEYOR_URL.")
        self.http = Transport(
            url,
            api_key or os.environ.get("CONVEYOR_API_KEY"),
            timeout=timeout,
            max_retries=max_retries,
            max_wait=max_wait,
            sleep=sleep,
            http_client=http_client,
        )
        self.me = Me(self.http)
        self.api_keys = ApiKeys(self.http)
        self.entity_types = EntityTypes(self.http)
        self.entities = Entities(self.http)
        self.workflows = Workflows(self.http)
        self.runs = Runs(self.http)
        self.jobs = Jobs(self.http)
        self.triggers = Triggers(self.http)
        self.webhooks = Webhooks(self.http)
        self.credentials = Credentials(self.http)
        self.step_types = StepTypes(self.http)
        self.revisions = Revisions(self.http)
        self.approvals = Approvals(self.http)
        self.kv = Kv(self.http)
        self.audit = Audit(self.http)
        self.operations = Operations(self.http)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Conveyor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "JSON",
    "BadRequest",
    "Conflict",
    "Conveyor",
    "ConveyorConnectionError",
    "ConveyorError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Progress",
    "ProgressBar",
    "RateLimited",
    "Run",
    "RunCreated",
    "RunItem",
    "ServerError",
    "ServiceUnavailable",
    "StepResult",
    "Unauthorized",
    "ValidationError",
    "parse_retry_after",
]
