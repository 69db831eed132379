"""The ``conveyor`` CLI over HTTP, through ``conveyor-client``.

With ``CONVEYOR_URL`` and ``CONVEYOR_API_KEY`` set (or ``--url``/``--api-key``),
``conveyor runs watch``, ``conveyor runs start`` and ``conveyor workflows
export|import|validate|generate`` talk to a running Conveyor, local or remote, with the key's
role and workspace; no database is opened. Without them ``runs watch`` reads the local
database directly, and, like ``workspaces create``, first checks that it is a migrated
Conveyor database rather than creating an empty one next to the current directory.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from app.statuses import TERMINAL

F = TypeVar("F", bound=Callable[..., Any])


def remote_options(command: F) -> F:
    """``--url`` and ``--api-key`` (defaults: ``CONVEYOR_URL``, ``CONVEYOR_API_KEY``)."""
    command = click.option(
        "--api-key",
        envvar="CONVEYOR_API_KEY",
        default=None,
        help="API key for --url [env: CONVEYOR_API_KEY]",
    )(command)
    command = click.option(
        "--url",
        envvar="CONVEYOR_URL",
        default=None,
        help="A running Conveyor, e.g. http://127.0.0.1:8000 [env: CONVEYOR_URL]",
    )(command)
    return command


def remote_client(url: str | None, api_key: str | None, *, required: bool = False) -> Any:
    """A ``conveyor_client.Conveyor`` for ``url``, or None when no server is configured."""
    if not url and not api_key:
        if required:
            raise click.UsageError(
                "This command talks to a running Conveyor: set CONVEYOR_URL and "
                "CONVEYOR_API_KEY (or pass --url and --api-key)."
            )
        return None
    if not url or not api_key:
        missing = "CONVEYOR_URL (--url)" if not url else "CONVEYOR_API_KEY (--api-key)"
        raise click.UsageError(f"{missing} is not set; both are needed to use a server.")
    try:
        from conveyor_client import Conveyor
    except ImportError as exc:  # pragma: no cover - installed by scripts/bootstrap
        raise click.ClickException(
            "conveyor-client is not installed: pip install -e clients/python"
        ) from exc
    return Conveyor(url, api_key)


def database_problem(database_url: str) -> str | None:
    """Why ``database_url`` is not a migrated Conveyor database, or None when it is.

    Never creates anything: a missing SQLite file is reported, not opened.
    """
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database).resolve()
        if not path.is_file():
            return f"there is no database file at {path}"
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except Exception as exc:  # any driver error: unreachable, refused, bad credentials
        return f"the database cannot be opened ({type(exc).__name__})"
    finally:
        engine.dispose()
    if "alembic_version" not in tables or "workspaces" not in tables:
        return "it is not a migrated Conveyor database"
    return None


def require_migrated(database_url: str) -> None:
    """Refuse clearly, before touching it, a database that is not a migrated Conveyor one."""
    problem = database_problem(database_url)
    if problem is None:
        return
    from sqlalchemy.engine import make_url

    shown = make_url(database_url).render_as_string(hide_password=True)
    raise click.ClickException(
        f"{shown}: {problem}. Point DATABASE_URL (or CONVEYOR_HOME for the embedded "
        "default) at the database `conveyor serve` uses, run `conveyor db upgrade` to "
        "create it, or set CONVEYOR_URL and CONVEYOR_API_KEY to work through a server."
    )


def _progress_bar() -> Callable[[dict[str, Any]], None]:
    """A tqdm bar (counts, rate, ETA) fed with the run as ``runs.wait`` sees it."""
    from tqdm import tqdm

    bar: Any = None

    def update(run: dict[str, Any]) -> None:
        nonlocal bar
        progress = run["progress"]
        done = progress["completed"] + progress["failed"] + progress["cancelled"]
        if bar is None:
            # Start at what is already done, so the rate counts only progress seen here.
            bar = tqdm(total=progress["total"], initial=done, unit="entity", dynamic_ncols=True)
        bar.total = progress["total"]
        bar.update(done - bar.n)
        bar.set_description(run["status"])
        bar.set_postfix(
            completed=progress["completed"],
            failed=progress["failed"],
            cancelled=progress["cancelled"],
        )
        if run["status"] in TERMINAL:
            bar.close()

    return update


def summary(run: dict[str, Any]) -> str:
    """``run run_01... completed: 412 completed, 3 failed, 0 cancelled of 415``."""
    p = run["progress"]
    return (
        f"run {run['id']} {run['status']}: {p['completed']} completed, {p['failed']} failed, "
        f"{p['cancelled']} cancelled of {p['total']}"
    )


def watch_remote(client: Any, run_id: str, workflow_id: str | None) -> dict[str, Any]:
    """Follow a run over HTTP until it ends; print its summary."""
    from conveyor_client import ConveyorError

    try:
        run: dict[str, Any] = client.runs.wait(
            run_id, workflow_id=workflow_id, progress=_progress_bar()
        )
    except ConveyorError as error:
        raise click.ClickException(str(error)) from error
    click.echo(summary(run))
    return run


def _fail(error: Exception) -> click.ClickException:
    """A client error as a CLI error, with the failing paths."""
    lines = [str(error)]
    for path, messages in (getattr(error, "errors", None) or {}).items():
        lines.append(f"  {path}: {' '.join(messages) if isinstance(messages, list) else messages}")
    return click.ClickException("\n".join(lines))


@click.command("start")
@click.argument("workflow_id")
@click.argument("entity_ids", nargs=-1)
@click.option("--status", default=None, help="Run over the entities in this status.")
@click.option("--updated-since", type=int, default=None, help="... updated since (epoch ms).")
@click.option("--all", "everything", is_flag=True, help="Run over every entity of the type.")
@click.option("--input", "input_json", default=None, help="The run input, as JSON.")
@click.option("--watch/--no-watch", default=True, show_default=True, help="Follow the run.")
@remote_options
def runs_start(
    workflow_id: str,
    entity_ids: tuple[str, ...],
    status: str | None,
    updated_since: int | None,
    everything: bool,
    input_json: str | None,
    watch: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """Start WORKFLOW_ID over ENTITY_IDS (or --status / --updated-since / --all) on a server.

    Prints the run id; with --watch (the default) follows it and exits 1 unless it
    completes.
    """
    from conveyor_client import ConveyorError

    client = remote_client(url, api_key, required=True)
    selection: dict[str, Any]
    if entity_ids:
        if status or updated_since is not None or everything:
            raise click.UsageError("Give entity ids or a filter, not both.")
        selection = {"entity_ids": list(entity_ids)}
    elif status or updated_since is not None or everything:
        run_filter: dict[str, Any] = {}
        if status:
            run_filter["status"] = status
        if updated_since is not None:
            run_filter["updatedSince"] = updated_since
        selection = {"filter": run_filter}
    else:
        raise click.UsageError("Choose entities: ENTITY_IDS, --status, --updated-since or --all.")
    try:
        run_input = json.loads(input_json) if input_json else None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from exc
    with client:
        try:
            started = client.runs.start(workflow_id, input=run_input, **selection)
        except ConveyorError as error:
            raise _fail(error) from error
        click.echo(f"run {started['runId']} (job {started['jobId']}) started", err=True)
        if not watch:
            click.echo(started["runId"])
            return
        run = watch_remote(client, started["runId"], workflow_id)
    if run["status"] != "completed":
        sys.exit(1)


@click.group("workflows")
def workflows() -> None:
    """Workflows as documents, on a server (CONVEYOR_URL, CONVEYOR_API_KEY)."""


@workflows.command("export")
@click.argument("workflow_id")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None)
@remote_options
def workflows_export(
    workflow_id: str, fmt: str, output: str | None, url: str | None, api_key: str | None
) -> None:
    """Print (or write to --output) WORKFLOW_ID as a portable document."""
    from conveyor_client import ConveyorError

    with remote_client(url, api_key, required=True) as client:
        try:
            document = client.workflows.export(workflow_id, format=fmt)
        except ConveyorError as error:
            raise _fail(error) from error
    text = document if fmt == "yaml" else json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def _read_document(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from exc


@workflows.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@remote_options
def workflows_import(file: str, url: str | None, api_key: str | None) -> None:
    """Create a workflow from FILE (an exported document, YAML or JSON; - for stdin)."""
    from conveyor_client import ConveyorError

    text = _read_document(file)
    with remote_client(url, api_key, required=True) as client:
        try:
            created = client.workflows.import_(text)
        except ConveyorError as error:
            raise _fail(error) from error
    click.echo(f"workflow {created['id']} ({created['name']}) created", err=True)
    click.echo(created["id"])


@workflows.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@remote_options
def workflows_validate(file: str, url: str | None, api_key: str | None) -> None:
    """Check FILE (a document or a workflow body) as a save would; exit 1 when invalid."""
    from conveyor_client import ConveyorError

    text = _read_document(file)
    with remote_client(url, api_key, required=True) as client:
        try:
            result = client.workflows.validate(text)
        except ConveyorError as error:
            raise _fail(error) from error
    if result.get("valid"):
        click.echo("valid")
        return
    for path, messages in (result.get("errors") or {}).items():
        click.echo(f"{path}: {' '.join(messages)}", err=True)
    sys.exit(1)


@workflows.command("generate")
@click.argument("prompt")
@click.option("--entity-type", "entity_type_id", required=True, help="The entity type id.")
@click.option("--credential", default=None, help="An openai credential's name.")
@click.option("--model", default=None, help="The model (default: the credential's).")
@click.option("--save", is_flag=True, help="Create the generated workflow (as a draft).")
@remote_options
def workflows_generate(
    prompt: str,
    entity_type_id: str,
    credential: str | None,
    model: str | None,
    save: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """Generate a workflow from PROMPT; print each operation (NDJSON) as it streams in.

    Exits 1 when generation ends in an error; with --save creates the workflow and
    prints its id on stderr.
    """
    from conveyor_client import ConveyorError

    last: dict[str, Any] = {}
    with remote_client(url, api_key, required=True) as client:
        try:
            for operation in client.workflows.generate(
                prompt, entity_type_id=entity_type_id, credential=credential, model=model
            ):
                click.echo(json.dumps(operation, ensure_ascii=False))
                last = operation
            if last.get("op") != "done":
                sys.exit(1)
            if save:
                created = client.workflows.create(last["workflow"])
                click.echo(f"workflow {created['id']} ({created['name']}) created", err=True)
        except ConveyorError as error:
            raise _fail(error) from error


def register(main: click.Group) -> None:
    """Add the HTTP commands to the ``conveyor`` group (``runs start``, ``workflows``)."""
    runs = main.commands.get("runs")
    if isinstance(runs, click.Group):
        runs.add_command(runs_start)
    main.add_command(workflows)
