"""Finalize a run in a worker: close it (``app.services.finalize``), then send its summary.

The guarded ``UPDATE`` that closes a run exactly once lives in the service, shared with
the API's cancel; here the worker that closed it also sends the run summary
(``settings.notifyOnFinish``), at most once: after the commit.
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from app.models import JobLog, Run
from app.services import finalize as service
from jobs import runtime
from jobs.step_services import send_run_summary

log = logging.getLogger(__name__)


def finalize_run(session: Session, run_id: str) -> bool:
    """Close the run if all its entities are final; True only for the one caller that did."""
    run = service.finalize_run(session, run_id)
    if run is None:
        return False
    _notify_finished(session, run)
    return True


def notify_finished(run_id: str) -> None:
    """The task the API queues when its cancel or approval closed a run."""
    with runtime.current().session() as session:
        run = session.get(Run, run_id)
        session.commit()  # end the read: no lock is held while the summary goes out
        if run is not None:
            _notify_finished(session, run)


def _notify_finished(session: Session, run: Run) -> None:
    """Send the run summary of ``settings.notifyOnFinish`` (``run`` as it was closed: no
    read here, so no transaction is held while the summary goes out)."""
    if not (run.settings or {}).get("notify_on_finish"):
        return
    try:
        send_run_summary(runtime.current(), run, run.settings)
    except Exception as exc:  # a failed summary must not undo the finished run
        log.warning("run summary for %s not sent: %s", run.id, exc)
        session.add(JobLog(job_id=run.job_id, level="warning", message=f"summary not sent: {exc}"))
        session.commit()
