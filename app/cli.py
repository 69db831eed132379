"""The ``conveyor`` command line."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from app.cli_remote import register as register_remote_commands
from app.cli_remote import remote_options
from app.config import Settings


class LazyGroup(click.Group):
    """A command group whose listed subcommands are imported when first used.

    The commands that run the job side (``worker``, ``scheduler``, ``demo``) live in
    ``jobs.cli``: the web app never imports ``jobs``, and ``conveyor --help`` stays fast.
    """

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Eager and lazy commands, sorted."""
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import a lazy command by its dotted path."""
        path = self.lazy_subcommands.get(cmd_name)
        if path is None:
            return super().get_command(ctx, cmd_name)
        module, _, name = path.rpartition(".")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command), path
        return command


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "worker": "jobs.cli.worker",
        "scheduler": "jobs.cli.scheduler",
        "demo": "jobs.cli.demo",
    },
)
def main() -> None:
    """Conveyor: typed workflows over batches of entities."""
    from app.redaction import install_log_redaction

    install_log_redaction()  # every process scrubs secrets from its logs from the start


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations up to REVISION (default: head)."""
    from app import migrate

    settings = Settings.from_env()
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}: {safe_url(settings.database_url)}")


@db.command("check")
def db_check() -> None:
    """Exit 0 when the schema is at this version's head revision; else say what to do."""
    from app import migrate
    from app.db import get_engine

    settings = Settings.from_env()
    shown = safe_url(settings.database_url)
    if settings.database_url.startswith("sqlite:///"):
        path = settings.database_url.removeprefix("sqlite:///")
        if not os.path.isfile(path):  # opening it would create an empty file
            raise click.ClickException(f"{shown}: no database file: {migrate.UPGRADE_HINT}")
    try:
        problem = migrate.schema_problem(get_engine(settings.database_url))
    except Exception as exc:  # any driver error: unreachable, refused, bad credentials
        raise click.ClickException(f"{shown}: the database cannot be opened ({exc})") from exc
    if problem:
        raise click.ClickException(f"{shown}: {problem}")
    click.echo(f"database schema at head: {shown}")


def safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.group()
def workspaces() -> None:
    """Workspaces."""


@workspaces.command("create")
@click.argument("name")
def workspaces_create(name: str) -> None:
    """Create workspace NAME and print its first admin key (shown once)."""
    from sqlmodel import Session

    from app.cli_remote import require_migrated
    from app.db import get_engine
    from app.services.workspaces import create_workspace

    settings = Settings.from_env()
    # Refuse, rather than create, a database that `conveyor serve` would not be using.
    require_migrated(settings.database_url)
    with Session(get_engine(settings.database_url), expire_on_commit=False) as session:
        workspace, key_row, key = create_workspace(session=session, name=name)
    click.echo(f"workspace {workspace.id} ({name})", err=True)
    click.echo(f"admin key {key_row.id} - store it now, it is not shown again:", err=True)
    click.echo(key)


@main.command()
@click.option(
    "--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="127.0.0.1"
)
@click.option("--port", default=lambda: int(os.environ.get("PORT", "8000")), show_default="8000")
@click.option("--workers", default=None, type=int, help="gunicorn processes (embedded: 1)")
def serve(host: str, port: int, workers: int | None) -> None:
    """Serve the API with gunicorn (embedded default: one process, worker threads)."""
    from gunicorn.app.base import BaseApplication

    from app import create_app

    settings = Settings.from_env()
    # The embedded queue lives in the web process, so it must be exactly one process.
    processes = 1 if settings.embedded_queue else (workers or 2)

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", processes)
            self.cfg.set("threads", 8)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            return create_app()

    click.echo(f"Conveyor on http://{host}:{port}/api/v1/docs", err=True)
    _Server().run()


@main.group()
def runs() -> None:
    """Runs."""


@runs.command("watch")
@click.argument("run_id")
@click.option("--interval", default=0.5, show_default=True)
@click.option("--workflow", "workflow_id", default=None, help="(server) the run's workflow id.")
@remote_options
def runs_watch(
    run_id: str, interval: float, workflow_id: str | None, url: str | None, api_key: str | None
) -> None:
    """Show a live progress bar (counts, rate, ETA) for RUN_ID until it finishes.

    Through a server when CONVEYOR_URL and CONVEYOR_API_KEY (or --url/--api-key) are set,
    else from the local database.
    """
    from app.cli_remote import remote_client, require_migrated, watch_remote
    from app.db import get_engine
    from app.watch import watch_run

    client = remote_client(url, api_key)
    if client is not None:
        with client:
            watch_remote(client, run_id, workflow_id)
        return
    settings = Settings.from_env()
    require_migrated(settings.database_url)
    run = watch_run(get_engine(settings.database_url), run_id, interval=interval)
    if run is None:
        raise click.ClickException(f"no run {run_id}")


register_remote_commands(main)  # runs start, workflows export|import|validate (over HTTP)


if __name__ == "__main__":
    sys.exit(main())
