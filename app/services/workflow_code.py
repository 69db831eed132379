"""Workflows as code: a standalone Python script, and a ZIP project around it.

The script embeds the workflow's portable document (``export_document``: no ids, no
secrets, credentials by name) and uses ``conveyor-client`` to create the workflow by
importing that document, or to update the workflow of the same name when it differs,
then runs it over the selection given on its command line and watches the run. It reads
the server and the key from ``--url``/``--api-key`` or ``CONVEYOR_URL``/``CONVEYOR_API_KEY``:
nothing secret is ever written into it.
"""

from __future__ import annotations

import io
import pprint
import re
import zipfile
from typing import Any

import yaml
from sqlmodel import Session

from app.models import Workflow

CLIENT_REQUIREMENT = "conveyor-client>=0.1"


def workflow_document(*, session: Session, workflow: Workflow) -> dict[str, Any]:
    """The workflow's portable document, as ``GET /workflows/{id}/export`` gives it."""
    from app.services.workflow_documents import export_document

    return export_document(session=session, workflow=workflow)


def module_name(name: str) -> str:
    """A Python module name for a workflow name: ``Describe products!`` → ``describe_products``."""
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()[:60] or "workflow"
    return f"workflow_{slug}" if slug[0].isdigit() else slug


def render_script(document: dict[str, Any]) -> str:
    """The standalone script for ``document``."""
    literal = pprint.pformat(document, indent=1, width=96, sort_dicts=False)
    return _SCRIPT.replace("__NAME__", _one_line(document.get("name") or "workflow")).replace(
        "__DOCUMENT__", literal
    )


def render_project(document: dict[str, Any]) -> bytes:
    """A ZIP: ``<module>/`` with the script, ``workflow.yaml``, ``pyproject.toml``, README."""
    module = module_name(str(document.get("name") or "workflow"))
    project = module.replace("_", "-")
    files = {
        f"{module}.py": render_script(document),
        "workflow.yaml": yaml.safe_dump(document, sort_keys=False, allow_unicode=True),
        "pyproject.toml": _PYPROJECT.format(
            project=project, module=module, requirement=CLIENT_REQUIREMENT
        ),
        "README.md": _README.format(
            name=_one_line(str(document.get("name") or module)), module=module, project=project
        ),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for filename, text in files.items():
            info = zipfile.ZipInfo(f"{project}/{filename}", date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if filename.endswith(".py") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
    return buffer.getvalue()


def _one_line(text: str) -> str:
    """A name safe inside the script's docstring and comments."""
    return re.sub(r'[\r\n"\\]+', " ", text)[:200]


_SCRIPT = '''#!/usr/bin/env python3
"""Create or update the Conveyor workflow "__NAME__" and run it.

    pip install conveyor-client
    export CONVEYOR_URL=http://127.0.0.1:8000 CONVEYOR_API_KEY=cvk_...
    python this_script.py --status ready           # entities in status "ready"
    python this_script.py --entity-id ent_1 ent_2  # these entities
    python this_script.py --all                    # every entity of the type

The workflow is matched by name: created from WORKFLOW below (its entity type too, by
name) when absent, updated when its steps, settings or description differ. Exits 0 when
the run completes, 1 when it fails or is cancelled. Exported from Conveyor; no secrets
here: credentials are named, the key comes from the environment or --api-key.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from conveyor_client import Conveyor, ConveyorError

WORKFLOW: dict[str, Any] = __DOCUMENT__

CONTENT = ("description", "steps", "settings")


def create_or_update(conveyor: Conveyor) -> dict[str, Any]:
    """The workflow named like WORKFLOW, made to match it."""
    existing = conveyor.workflows.find_by_name(WORKFLOW["name"])
    if existing is None:
        created = conveyor.workflows.import_(WORKFLOW)
        print(f"created workflow {created['id']} ({WORKFLOW['name']})", file=sys.stderr)
        return created
    wanted = {key: WORKFLOW.get(key) for key in CONTENT}
    if all(existing.get(key) == value for key, value in wanted.items()):
        print(f"workflow {existing['id']} is up to date", file=sys.stderr)
        return existing
    updated = conveyor.workflows.update(existing["id"], wanted, if_match=existing["version"])
    print(f"updated workflow {updated['id']} to version {updated['version']}", file=sys.stderr)
    return updated


def selection(args: argparse.Namespace) -> dict[str, Any]:
    """The run body's selection from the command line."""
    if args.entity_id:
        return {"entity_ids": args.entity_id}
    run_filter: dict[str, Any] = {}
    if args.status:
        run_filter["status"] = args.status
    if args.updated_since is not None:
        run_filter["updatedSince"] = args.updated_since
    return {"filter": run_filter}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CONVEYOR_URL"))
    parser.add_argument("--api-key", default=os.environ.get("CONVEYOR_API_KEY"))
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--entity-id", nargs="+", help="run over these entity ids")
    chosen.add_argument("--status", help="run over the entities in this status")
    chosen.add_argument("--all", action="store_true", help="run over every entity of the type")
    parser.add_argument("--updated-since", type=int, help="with --status/--all: epoch ms")
    parser.add_argument("--no-watch", action="store_true", help="start the run and exit")
    args = parser.parse_args(argv)
    if not args.url or not args.api_key:
        parser.error("set CONVEYOR_URL and CONVEYOR_API_KEY (or pass --url and --api-key)")
    try:
        with Conveyor(args.url, args.api_key) as conveyor:
            workflow = create_or_update(conveyor)
            started = conveyor.runs.start(workflow["id"], **selection(args))
            print(f"run {started['runId']} started", file=sys.stderr)
            if args.no_watch:
                print(started["runId"])
                return 0
            run = conveyor.runs.wait(started["runId"], workflow_id=workflow["id"], progress=True)
    except ConveyorError as error:
        print(f"error: {error}", file=sys.stderr)
        for path, messages in error.errors.items():
            print(f"  {path}: {messages}", file=sys.stderr)
        return 2
    progress = run["progress"]
    print(
        f"run {run['id']} {run['status']}: {progress['completed']} completed, "
        f"{progress['failed']} failed, {progress['cancelled']} cancelled of {progress['total']}"
    )
    return 0 if run["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
'''

_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{project}"
version = "0.1.0"
description = "A Conveyor workflow as code"
requires-python = ">=3.10"
dependencies = ["{requirement}"]

[project.scripts]
{project} = "{module}:main"

[tool.setuptools]
py-modules = ["{module}"]
"""

_README = """# {name}

A Conveyor workflow as code, exported from Conveyor.

- `{module}.py` creates this workflow on a Conveyor server (matched by name; created when
  absent, updated when it differs) and runs it over the entities you choose, with a
  progress bar.
- `workflow.yaml` is the same workflow as a portable document
  (`conveyor workflows import workflow.yaml`, or `POST /api/v1/workflows/import`).

## Run it

```sh
python -m venv .venv && .venv/bin/pip install .
export CONVEYOR_URL=http://127.0.0.1:8000 CONVEYOR_API_KEY=cvk_...
.venv/bin/{project} --status ready          # or: --entity-id ID ... | --all
```

`conveyor-client` lives in the Conveyor repository (`clients/python`); where your
package index does not carry it, install it from there first
(`.venv/bin/pip install path/to/conveyor/clients/python`).

The API key needs the `editor` role (it creates or updates the workflow). Credentials that
steps use are referred to by name and must exist on the server; none are in this project.
"""
