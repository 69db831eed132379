"""One class per API resource; each method is the OpenAPI operation ``<resource>_<method>``.

Bodies and results are the API's JSON (camelCase keys). Methods that take a body accept a
mapping and/or keyword arguments; snake_case keywords become camelCase keys
(``entity_type_id=`` → ``entityTypeId``).
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote

from conveyor_client._transport import Transport
from conveyor_client.errors import NotFound
from conveyor_client.progress import TERMINAL, ProgressBar
from conveyor_client.types import Run, RunCreated, RunItem

JSON = dict[str, Any]
ProgressCallback = Callable[[Run], None]


def camelcase(name: str) -> str:
    """``entity_type_id`` → ``entityTypeId`` (camelCase names pass unchanged)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def body_of(body: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> JSON:
    """A request body from a mapping plus keyword fields (snake_case → camelCase)."""
    merged: JSON = dict(body or {})
    merged.update({camelcase(k): v for k, v in fields.items()})
    return merged


def _p(value: str) -> str:
    """A path segment, escaped."""
    return quote(str(value), safe="")


class Resource:
    def __init__(self, http: Transport) -> None:
        self._http = http

    def _obj(self, method: str, path: str, **kwargs: Any) -> JSON:
        """A JSON object answer."""
        return cast(JSON, self._http.json(method, path, **kwargs))


class Me(Resource):
    def get(self) -> JSON:
        """The workspace and the calling key."""
        return self._obj("GET", "/me")


class ApiKeys(Resource):
    def list(self, **params: Any) -> Iterator[JSON]:
        return self._http.paginate("/api-keys", params)

    def create(self, name: str, role: str = "viewer") -> JSON:
        """A new key; the full ``key`` is in this answer only."""
        return self._obj("POST", "/api-keys", json_body={"name": name, "role": role})

    def delete(self, key_id: str) -> None:
        self._http.request("DELETE", f"/api-keys/{_p(key_id)}")


class EntityTypes(Resource):
    def list(self, **params: Any) -> Iterator[JSON]:
        return self._http.paginate("/entity-types", params)

    def create(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> JSON:
        return self._obj("POST", "/entity-types", json_body=body_of(body, fields))

    def get(self, type_id: str) -> JSON:
        return self._obj("GET", f"/entity-types/{_p(type_id)}")

    def update(self, type_id: str, body: Mapping[str, Any] | None = None, /, **fields: Any) -> JSON:
        return self._obj("PATCH", f"/entity-types/{_p(type_id)}", json_body=body_of(body, fields))

    def delete(self, type_id: str) -> None:
        self._http.request("DELETE", f"/entity-types/{_p(type_id)}")


class Entities(Resource):
    def list(
        self,
        *,
        entity_type_id: str | None = None,
        status: str | None = None,
        updated_since: int | None = None,
        ids: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> Iterator[JSON]:
        """Every entity matching the filters, page after page."""
        params = {
            "entityTypeId": entity_type_id,
            "status": status,
            "updatedSince": updated_since,
            "ids": list(ids) if ids is not None else None,
            "limit": limit,
        }
        return self._http.paginate("/entities", params)

    def create(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> JSON:
        return self._obj("POST", "/entities", json_body=body_of(body, fields))

    def bulk_create(
        self, entities: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> builtins.list[JSON]:
        """Create up to 10,000 entities at once, all or nothing (safe to retry)."""
        return cast(
            builtins.list[JSON],
            self._http.json(
                "POST",
                "/entities/bulk",
                json_body={"entities": [dict(e) for e in entities]},
                idempotent=True,
                idempotency_key=idempotency_key,
            ),
        )

    def get(self, entity_id: str) -> JSON:
        return self._obj("GET", f"/entities/{_p(entity_id)}")

    def update(
        self,
        entity_id: str,
        body: Mapping[str, Any] | None = None,
        /,
        *,
        if_match: int | None = None,
        **fields: Any,
    ) -> JSON:
        """Update data/status; ``if_match=version`` refuses a stale write (412)."""
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        return self._obj(
            "PATCH", f"/entities/{_p(entity_id)}", json_body=body_of(body, fields), headers=headers
        )

    def delete(self, entity_id: str) -> None:
        self._http.request("DELETE", f"/entities/{_p(entity_id)}")

    def runs(self, entity_id: str, **params: Any) -> Iterator[JSON]:
        """The runs that touched this entity and how each ended for it."""
        return self._http.paginate(f"/entities/{_p(entity_id)}/runs", params)


class Workflows(Resource):
    def list(self, *, status: str | None = None, limit: int | None = None) -> Iterator[JSON]:
        return self._http.paginate("/workflows", {"status": status, "limit": limit})

    def create(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> JSON:
        return self._obj("POST", "/workflows", json_body=body_of(body, fields))

    def get(self, workflow_id: str) -> JSON:
        return self._obj("GET", f"/workflows/{_p(workflow_id)}")

    def update(
        self,
        workflow_id: str,
        body: Mapping[str, Any] | None = None,
        /,
        *,
        if_match: int | None = None,
        **fields: Any,
    ) -> JSON:
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        return self._obj(
            "PATCH",
            f"/workflows/{_p(workflow_id)}",
            json_body=body_of(body, fields),
            headers=headers,
        )

    def delete(self, workflow_id: str) -> None:
        self._http.request("DELETE", f"/workflows/{_p(workflow_id)}")

    def export(self, workflow_id: str, *, format: str = "json") -> Any:
        """The portable document: a dict (``format="json"``) or YAML text (``"yaml"``)."""
        accept = "application/yaml" if format == "yaml" else "application/json"
        response = self._http.request(
            "GET", f"/workflows/{_p(workflow_id)}/export", headers={"Accept": accept}
        )
        return response.text if format == "yaml" else response.json()

    def import_(self, document: Mapping[str, Any] | str) -> JSON:
        """Create a workflow from an exported document (a dict, or JSON/YAML text)."""
        return self._obj("POST", "/workflows/import", **_document_body(document))

    def validate(self, document: Mapping[str, Any] | str) -> JSON:
        """``{valid: true}`` or ``{valid: false, errors}`` for a workflow body or document."""
        return self._obj("POST", "/workflows/validate", **_document_body(document))

    def duplicate(self, workflow_id: str, *, name: str | None = None) -> JSON:
        body = {"name": name} if name else {}
        return self._obj("POST", f"/workflows/{_p(workflow_id)}/duplicate", json_body=body)

    def code(self, workflow_id: str) -> str:
        """A standalone Python script that creates-or-updates and runs this workflow."""
        return self._http.request("GET", f"/workflows/{_p(workflow_id)}/code").text

    def project_zip(self, workflow_id: str) -> bytes:
        """A ZIP: the script, the exported YAML, a pyproject.toml and a README."""
        return self._http.request("GET", f"/workflows/{_p(workflow_id)}/project.zip").content

    def generate(
        self,
        prompt: str,
        *,
        entity_type_id: str,
        credential: str | None = None,
        model: str | None = None,
    ) -> Iterator[JSON]:
        """The generation's operations as they stream in, ending with ``done`` or ``error``."""
        body = body_of(
            None,
            {
                "prompt": prompt,
                "entity_type_id": entity_type_id,
                "credential": credential,
                "model": model,
            },
        )
        body = {k: v for k, v in body.items() if v is not None}
        with self._http.stream("POST", "/workflows/generate", json_body=body) as response:
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def find_by_name(self, name: str) -> JSON | None:
        """The workflow named ``name`` (full, with steps), or None."""
        for summary in self.list():
            if summary.get("name") == name:
                return self.get(summary["id"])
        return None


def _document_body(document: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(document, str):
        text = document.lstrip()
        kind = "application/json" if text.startswith(("{", "[")) else "application/yaml"
        return {"content": document.encode(), "headers": {"Content-Type": kind}}
    return {"json_body": dict(document)}


class Runs(Resource):
    def start(
        self,
        workflow_id: str,
        *,
        entity_ids: Iterable[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        input: Any = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> RunCreated:
        """Start a run over ``entity_ids`` or a ``filter``: ``{jobId, runId}`` (safe to retry)."""
        body = body_of(None, fields)
        if entity_ids is not None:
            body["entityIds"] = list(entity_ids)
        if filter is not None:
            body["filter"] = dict(filter)
        if input is not None:
            body["input"] = input
        result = cast(
            RunCreated,
            self._obj(
                "POST",
                f"/workflows/{_p(workflow_id)}/run",
                json_body=body,
                idempotent=True,
                idempotency_key=idempotency_key,
            ),
        )
        result.setdefault("workflowId", workflow_id)
        return result

    def list(self, workflow_id: str, *, status: str | None = None) -> Iterator[Run]:
        """The workflow's runs, newest first."""
        return self._http.paginate(f"/workflows/{_p(workflow_id)}/runs", {"status": status})

    def get(self, workflow_id: str, run_id: str) -> Run:
        return cast(Run, self._obj("GET", f"/workflows/{_p(workflow_id)}/runs/{_p(run_id)}"))

    def items(
        self, workflow_id: str, run_id: str, *, status: str | None = None
    ) -> Iterator[RunItem]:
        """Per-entity results, optionally only those in ``status`` (e.g. ``"failed"``)."""
        return self._http.paginate(
            f"/workflows/{_p(workflow_id)}/runs/{_p(run_id)}/items", {"status": status}
        )

    def cancel(self, workflow_id: str, run_id: str) -> Run:
        return cast(
            Run, self._obj("POST", f"/workflows/{_p(workflow_id)}/runs/{_p(run_id)}/cancel")
        )

    def retry(self, workflow_id: str, run_id: str) -> RunCreated:
        """A new run over the entities that failed or were cancelled: ``{jobId, runId}``."""
        result = cast(
            RunCreated,
            self._obj("POST", f"/workflows/{_p(workflow_id)}/runs/{_p(run_id)}/retry"),
        )
        result.setdefault("workflowId", workflow_id)
        return result

    def delete(self, workflow_id: str, run_id: str) -> None:
        """Remove a finished run with its items and logs (409 while it runs)."""
        self._http.request("DELETE", f"/workflows/{_p(workflow_id)}/runs/{_p(run_id)}")

    def delete_many(self, workflow_id: str, *, before: int) -> JSON:
        """Remove the finished runs started before ``before`` (epoch ms): ``{deleted}``."""
        return self._obj("DELETE", f"/workflows/{_p(workflow_id)}/runs", params={"before": before})

    def find_workflow(self, run_id: str) -> str:
        """The id of the workflow a run belongs to (one request per workflow, at worst)."""
        for workflow in Workflows(self._http).list():
            try:
                self.get(workflow["id"], run_id)
            except NotFound:
                continue
            return str(workflow["id"])
        raise NotFound(f"No run {run_id} in this workspace.", code=404, status="Not Found")

    def wait(
        self,
        run_id: str,
        *,
        workflow_id: str | None = None,
        progress: ProgressCallback | bool | None = None,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        max_interval: float = 10.0,
    ) -> Run:
        """Poll the run until it is terminal and return it.

        Polls with ``If-None-Match`` (an unchanged run answers 304 with no body) at the
        pace of the server's ``Retry-After`` hint (else ``poll_interval``). ``progress``
        is called with the run on every change; ``True`` draws a bar on stderr.
        ``workflow_id`` saves looking the run up. Raises ``TimeoutError`` after
        ``timeout`` seconds.
        """
        callback: ProgressCallback | None
        callback = ProgressBar() if progress is True else (progress or None)
        wf = workflow_id or self.find_workflow(run_id)
        path = f"/workflows/{_p(wf)}/runs/{_p(run_id)}"
        deadline = None if timeout is None else time.monotonic() + timeout
        etag: str | None = None
        run: Run | None = None
        while True:
            headers = {"If-None-Match": etag} if etag else None
            response = self._http.request("GET", path, headers=headers)
            if response.status_code != 304:
                run = cast(Run, response.json())
                etag = response.headers.get("ETag")
                if callback is not None:
                    callback(run)
            if run is None:  # a 304 to a first request cannot happen; ask again plainly
                etag = None
                continue
            if run.get("status") in TERMINAL:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run.get('status')} after {timeout}s")
            hint = response.headers.get("Retry-After")
            try:
                delay = float(hint) if hint else poll_interval
            except ValueError:
                delay = poll_interval
            self._http.sleep(min(max(delay, 0.0), max_interval))


class Jobs(Resource):
    def list(self, *, type: str | None = None, status: str | None = None) -> Iterator[JSON]:
        return self._http.paginate("/jobs", {"type": type, "status": status})

    def get(self, job_id: str) -> JSON:
        return self._obj("GET", f"/jobs/{_p(job_id)}")

    def logs(self, job_id: str, **params: Any) -> Iterator[JSON]:
        """The job's log lines (secrets redacted), page after page."""
        return self._http.paginate(f"/jobs/{_p(job_id)}/logs", params)

    def cancel(self, job_id: str) -> JSON:
        return self._obj("POST", f"/jobs/{_p(job_id)}/cancel")


class Triggers(Resource):
    def list(self, **params: Any) -> Iterator[JSON]:
        return self._http.paginate("/triggers", {camelcase(k): v for k, v in params.items()})

    def create(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> JSON:
        return self._obj("POST", "/triggers", json_body=body_of(body, fields))

    def get(self, trigger_id: str) -> JSON:
        return self._obj("GET", f"/triggers/{_p(trigger_id)}")

    def update(
        self, trigger_id: str, body: Mapping[str, Any] | None = None, /, **fields: Any
    ) -> JSON:
        return self._obj("PATCH", f"/triggers/{_p(trigger_id)}", json_body=body_of(body, fields))

    def delete(self, trigger_id: str) -> None:
        self._http.request("DELETE", f"/triggers/{_p(trigger_id)}")

    def events(self, trigger_id: str, **params: Any) -> Iterator[JSON]:
        return self._http.paginate(f"/triggers/{_p(trigger_id)}/events", params)


class Webhooks(Resource):
    def fire(
        self, trigger_id: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> JSON:
        """Fire a webhook trigger with ``payload`` as the run input (safe to retry)."""
        return self._obj(
            "POST",
            f"/webhooks/{_p(trigger_id)}",
            json_body=payload if payload is not None else {},
            idempotent=True,
            idempotency_key=idempotency_key,
        )


class Credentials(Resource):
    def list(self, **params: Any) -> Iterator[JSON]:
        return self._http.paginate("/credentials", params)

    def create(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> JSON:
        """Store a credential; its secret ``data`` is never returned."""
        return self._obj("POST", "/credentials", json_body=body_of(body, fields))

    def get(self, credential_id: str) -> JSON:
        return self._obj("GET", f"/credentials/{_p(credential_id)}")

    def update(
        self, credential_id: str, body: Mapping[str, Any] | None = None, /, **fields: Any
    ) -> JSON:
        return self._obj(
            "PUT", f"/credentials/{_p(credential_id)}", json_body=body_of(body, fields)
        )

    def delete(self, credential_id: str) -> None:
        self._http.request("DELETE", f"/credentials/{_p(credential_id)}")

    def test(self, credential_id: str, *, url: str | None = None) -> JSON:
        body = {"url": url} if url else {}
        return self._obj("POST", f"/credentials/{_p(credential_id)}/test", json_body=body)


class StepTypes(Resource):
    def list(self, **params: Any) -> Iterator[JSON]:
        return self._http.paginate("/step-types", params)

    def get(self, step_type: str) -> JSON:
        return self._obj("GET", f"/step-types/{_p(step_type)}")


class Revisions(Resource):
    """Every saved version of a workflow."""

    def list(self, workflow_id: str) -> Iterator[JSON]:
        return self._http.paginate(f"/workflows/{_p(workflow_id)}/revisions")

    def get(self, workflow_id: str, version: int) -> JSON:
        return self._obj("GET", f"/workflows/{_p(workflow_id)}/revisions/{int(version)}")

    def diff(
        self, workflow_id: str, version: int, *, against: int | None = None
    ) -> builtins.list[JSON]:
        """An RFC 6902 JSON Patch from ``against`` (default: the version before) to ``version``."""
        return cast(
            builtins.list[JSON],
            self._http.json(
                "GET",
                f"/workflows/{_p(workflow_id)}/revisions/{int(version)}/diff",
                params={"against": against},
            ),
        )

    def restore(self, workflow_id: str, version: int) -> JSON:
        """The workflow, at a new version equal in content to ``version``."""
        return self._obj("POST", f"/workflows/{_p(workflow_id)}/revisions/{int(version)}/restore")


class Approvals(Resource):
    """Review gates: entities waiting at an ``approval`` step."""

    def list(
        self,
        *,
        run_id: str | None = None,
        workflow_id: str | None = None,
        step_id: str | None = None,
        status: str | None = None,
    ) -> Iterator[JSON]:
        params = {"runId": run_id, "workflowId": workflow_id, "stepId": step_id, "status": status}
        return self._http.paginate("/approvals", params)

    def get(self, approval_id: str) -> JSON:
        return self._obj("GET", f"/approvals/{_p(approval_id)}")

    def approve(self, approval_id: str, *, comment: str | None = None) -> JSON:
        return self._obj(
            "POST", f"/approvals/{_p(approval_id)}/approve", json_body={"comment": comment}
        )

    def reject(self, approval_id: str, *, comment: str | None = None) -> JSON:
        return self._obj(
            "POST", f"/approvals/{_p(approval_id)}/reject", json_body={"comment": comment}
        )

    def decide(
        self,
        decision: str,
        *,
        ids: Iterable[str] | None = None,
        filter: Mapping[str, Any] | None = None,
        comment: str | None = None,
    ) -> JSON:
        """Approve or reject many at once (``ids`` or ``filter: {runId, stepId}``)."""
        body: JSON = {"decision": decision, "comment": comment}
        if ids is not None:
            body["ids"] = builtins.list(ids)
        if filter is not None:
            body["filter"] = dict(filter)
        return self._obj("POST", "/approvals/decide", json_body=body)


class Kv(Resource):
    """Namespaced JSON values that last across runs."""

    def list(self, namespace: str) -> Iterator[JSON]:
        return self._http.paginate(f"/kv/{_p(namespace)}")

    def get(self, namespace: str, key: str) -> JSON:
        return self._obj("GET", f"/kv/{_p(namespace)}/{_p(key)}")

    def update(self, namespace: str, key: str, value: Any, *, if_match: int | None = None) -> JSON:
        """Set a value; ``if_match=version`` makes it a compare-and-set (412 when stale)."""
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        return self._obj(
            "PUT",
            f"/kv/{_p(namespace)}/{_p(key)}",
            content=json.dumps(value).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def delete(self, namespace: str, key: str) -> None:
        self._http.request("DELETE", f"/kv/{_p(namespace)}/{_p(key)}")


class Audit(Resource):
    def list(self, **filters: Any) -> Iterator[JSON]:
        """Audit entries, newest first (``action``, ``resource_type``, ``since``, ...)."""
        return self._http.paginate("/audit", {camelcase(k): v for k, v in filters.items()})


class Operations(Resource):
    """Health, readiness and metrics (no key needed)."""

    def healthz(self) -> JSON:
        return self._obj("GET", "/healthz")

    def readyz(self) -> JSON:
        return self._obj("GET", "/readyz")

    def metrics(self) -> str:
        return self._http.request("GET", "/metrics", headers={"Accept": "text/plain"}).text
