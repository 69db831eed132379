"""A run's summary notification is sent once per attempt of the workflow's settings.retry."""

from __future__ import annotations

import pytest

from jobs.step_services import send_run_summary
from tests.jobs.test_step_services import finished_run
from tests.peers import WebhookReceiver
from tests.steps.support import runtime_for


@pytest.fixture
def runtime(app, settings):
    return runtime_for(app, settings)


@pytest.mark.parametrize(("max_attempts", "sent"), [(None, 1), (3, 3)])
def test_max_attempts_bounds_the_summary_requests(runtime, keys, max_attempts, sent):
    waits: list[float] = []
    with WebhookReceiver(fail_first=100) as receiver:
        settings = {"notify_on_finish": {"channel": "webhook", "url": receiver.url}}
        if max_attempts:
            settings["retry"] = {"max_attempts": max_attempts, "backoff_seconds": 2}
        with pytest.raises(RuntimeError, match="answered 500"):
            send_run_summary(runtime, finished_run(keys.workspace.id), settings, sleep=waits.append)
    assert len(receiver.requests) == sent
    assert waits == [2, 4][: sent - 1]


def test_a_summary_that_recovers_is_sent_on_a_later_attempt(runtime, keys):
    with WebhookReceiver(fail_first=1) as receiver:
        settings = {
            "notify_on_finish": {"channel": "webhook", "url": receiver.url},
            "retry": {"max_attempts": 2, "backoff_seconds": 0},
        }
        send_run_summary(runtime, finished_run(keys.workspace.id), settings, sleep=lambda s: None)
    assert receiver.statuses == {500: 1, 200: 1} and receiver.unique_ids == 1
