"""``app.queue``: the port the web side sends background work through, by task name."""

from __future__ import annotations

import pytest
from sqlmodel import Session, create_engine, text

from app.queue import (
    DISPATCH_RUN,
    EMBEDDED_LOOPS,
    NOTIFY_FINISHED,
    PROCESS_LANE,
    enqueue_after_commit,
    resolve,
)


class RecordingQueue:
    """A TaskQueue that keeps what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple]] = []

    def enqueue(self, func: str, *args) -> None:
        self.sent.append((func, args))

    def depth(self) -> int:
        return len(self.sent)

    def workers(self) -> int:
        return 1


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
        session.commit()
        yield session
    engine.dispose()


def _write(session: Session) -> None:
    session.execute(text("INSERT INTO t VALUES (1)"))


def test_a_task_leaves_only_when_the_session_commits(session):
    queue = RecordingQueue()
    _write(session)
    enqueue_after_commit(session, queue, DISPATCH_RUN, "run_1")
    session.flush()
    assert queue.sent == []
    session.commit()
    assert queue.sent == [(DISPATCH_RUN, ("run_1",))]
    session.commit()  # sent once, not again on the next commit
    assert queue.sent == [(DISPATCH_RUN, ("run_1",))]


def test_a_rollback_drops_the_task(session):
    queue = RecordingQueue()
    _write(session)
    enqueue_after_commit(session, queue, DISPATCH_RUN, "run_1")
    session.rollback()
    _write(session)
    session.commit()
    assert queue.sent == []


def test_a_savepoint_neither_sends_nor_drops_the_outer_transactions_tasks(session):
    queue = RecordingQueue()
    _write(session)
    enqueue_after_commit(session, queue, PROCESS_LANE, "run_1")
    with session.begin_nested():
        _write(session)
    assert queue.sent == []
    nested = session.begin_nested()
    _write(session)
    nested.rollback()
    session.commit()
    assert queue.sent == [(PROCESS_LANE, ("run_1",))]


def test_tasks_leave_in_the_order_they_were_queued(session):
    queue = RecordingQueue()
    _write(session)
    enqueue_after_commit(session, queue, DISPATCH_RUN, "run_1")
    enqueue_after_commit(session, queue, DISPATCH_RUN, "run_2")
    session.commit()
    assert [args for _, args in queue.sent] == [("run_1",), ("run_2",)]


@pytest.mark.parametrize(
    "name", [DISPATCH_RUN, PROCESS_LANE, NOTIFY_FINISHED, *(path for _, path in EMBEDDED_LOOPS)]
)
def test_every_task_name_the_port_declares_resolves_to_a_function(name):
    assert callable(resolve(name))


def test_a_session_closed_without_its_commit_sends_nothing(session):
    queue = RecordingQueue()
    _write(session)
    enqueue_after_commit(session, queue, DISPATCH_RUN, "run_1")
    session.close()
    _write(session)
    session.commit()
    assert queue.sent == []
