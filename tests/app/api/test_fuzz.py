"""A short schemathesis run against a real ``conveyor serve``: no request gets a 500.

The full run (every check, the stateful phase, 50 examples per operation, against
PostgreSQL and Redis) is in the README's testing section; this is its quick version for
every CI run: a few examples per operation, every phase, the server-error check and the
error-shape checks that must hold for any input.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.live_server import conveyor_serve

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

pytestmark = pytest.mark.skipif(
    not SCHEMATHESIS.exists() and shutil.which("schemathesis") is None,
    reason="schemathesis is a dev dependency: pip install -e '.[dev]'",
)

# Every phase, few examples: well under three minutes on a small machine.
MAX_EXAMPLES = 3
CHECKS = "not_a_server_error,content_type_conformance,missing_required_header"


def test_schemathesis_finds_no_server_error(settings, keys, tmp_path):
    with conveyor_serve(settings) as url:
        done = subprocess.run(
            [
                str(SCHEMATHESIS if SCHEMATHESIS.exists() else shutil.which("schemathesis")),
                "run",
                f"{url}/api/v1/openapi.json",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "1",
                "--workers",
                "1",
                "--no-color",
                "-H",
                f"Authorization: Bearer {keys.admin}",
                # Revoking the admin key the run authenticates with would end the run.
                "--exclude-operation-id",
                "api_keys_delete",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Tested: 0" not in done.stdout
