"""Secrets are scrubbed from every log record of every process, in every form they take."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest

from app.redaction import REDACTED, install_log_redaction, redact, redact_text, remember_secrets

SECRET = 'pw "quoted"/with\\slash&more é'  # noqa: S105 (test data)


@pytest.mark.parametrize(
    "form",
    [
        json.dumps({"password": SECRET}),
        json.dumps({"password": SECRET}, ensure_ascii=False),
        quote(SECRET),
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        "https://hooks.example/x?token=" + quote(SECRET, safe=""),
    ],
)
def test_json_escaped_and_url_encoded_forms_are_redacted(form):
    assert SECRET not in form or form == SECRET  # the form really is a different spelling
    cleaned = redact_text(form, [SECRET])
    assert REDACTED in cleaned
    for spelling in (SECRET, json.dumps(SECRET)[1:-1], quote(SECRET), quote(SECRET, safe="")):
        assert spelling not in cleaned
    assert redact({"log": [form]}, [SECRET]) == {"log": [cleaned]}


def test_every_record_is_scrubbed_whatever_handler_gets_it(caplog):
    install_log_redaction()
    remember_secrets(["sk-live-remembered-0001"])
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("test.redaction.anywhere")
    logger.info("calling %s", "https://x.example/?key=" + quote("sk-live-remembered-0001"))
    logger.info('body {"k": %s}', json.dumps("sk-live-remembered-0001"))
    try:
        raise ValueError("sk-live-remembered-0001 in a traceback")
    except ValueError:
        logger.exception("failed")
    assert "sk-live-remembered-0001" not in caplog.text
    assert caplog.text.count(REDACTED) >= 3  # the traceback quotes the source line too


@pytest.mark.parametrize(
    "code",
    [
        "from app import create_app; create_app()",
        "from app.cli import main; main(['db', '--help'], standalone_mode=False)",
    ],
)
def test_every_entry_point_installs_redaction_at_start(code, tmp_path):
    check = (
        "; import logging, app.redaction as r"
        "; r.remember_secrets(['sk-proc-secret-0001'])"
        "; print(logging.getLogRecordFactory()('x', 20, 'f', 1, 'use %s', ('sk-proc-secret-0001',),"
        " None).getMessage())"
    )
    env = {"CONVEYOR_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code + check],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"use {REDACTED}"
