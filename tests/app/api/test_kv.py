"""Key-value store API (SPEC 13) and the engine's service: compare-and-set, atomic increments."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session

from app.services import kv
from app.services.kv import KvNotANumber, apply_kv_writes, read_kv
from tests.app.api import assert_error
from tests.conftest import PG_URL

KV = "/api/v1/kv"


def _put(client, keys, path, value, role="editor", **headers):
    return client.put(f"{KV}/{path}", json=value, headers={**keys.header(role), **headers})


def test_put_get_list_delete(client, keys):
    created = _put(client, keys, "catalog/last-sku", {"sku": "A-1042", "n": [1, 2]})
    assert created.status_code == 200, created.json
    assert created.json["version"] == 1
    assert created.headers["ETag"] == '"1"'
    updated = _put(client, keys, "catalog/last-sku", "plain string")
    assert updated.json["version"] == 2
    got = client.get(f"{KV}/catalog/last-sku", headers=keys.header("viewer"))
    assert got.status_code == 200
    body = got.json
    assert set(body) == {"namespace", "key", "value", "version", "updatedAt"}
    assert (body["namespace"], body["key"], body["value"], body["version"]) == (
        "catalog",
        "last-sku",
        "plain string",
        2,
    )
    for key, value in (("k-a", 0), ("k-b", [1, {"a": True}]), ("k-c", 3.5)):
        assert _put(client, keys, f"catalog/{key}", value).status_code == 200
    null = client.put(
        f"{KV}/catalog/k-d",
        data=b"null",
        headers={**keys.header("editor"), "Content-Type": "application/json"},
    )
    assert null.status_code == 200 and null.json["value"] is None
    listed = client.get(f"{KV}/catalog?limit=2", headers=keys.header("viewer"))
    assert listed.status_code == 200
    assert [k["key"] for k in listed.json] == ["k-a", "k-b"]
    assert "value" not in listed.json[0]
    rest = client.get(
        f"{KV}/catalog?limit=10&cursor={listed.headers['X-Next-Cursor']}",
        headers=keys.header("viewer"),
    )
    assert [k["key"] for k in rest.json] == ["k-c", "k-d", "last-sku"]
    assert client.delete(f"{KV}/catalog/last-sku", headers=keys.header("editor")).status_code == 204
    assert_error(client.get(f"{KV}/catalog/last-sku", headers=keys.header("viewer")), 404)
    assert_error(client.delete(f"{KV}/catalog/last-sku", headers=keys.header("editor")), 404)


def test_compare_and_set(client, keys):
    _put(client, keys, "ns/counter", 1)
    ok = _put(client, keys, "ns/counter", 2, **{"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json["version"] == 2
    stale = _put(client, keys, "ns/counter", 3, **{"If-Match": '"1"'})
    assert_error(stale, 412)
    assert client.get(f"{KV}/ns/counter", headers=keys.header("viewer")).json["value"] == 2
    # If-Match on a key that does not exist is stale too.
    assert_error(_put(client, keys, "ns/absent", 1, **{"If-Match": "1"}), 412)
    assert_error(
        client.delete(f"{KV}/ns/counter", headers={**keys.header("editor"), "If-Match": "1"}),
        412,
    )
    assert_error(_put(client, keys, "ns/counter", 3, **{"If-Match": "soon"}), 412)


def test_limits_roles_and_isolation(client, keys):
    big = "x" * (64 * 1024)
    assert_error(_put(client, keys, "ns/big", big), 413)
    assert _put(client, keys, "ns/fits", "x" * (64 * 1024 - 100)).status_code == 200
    malformed = client.put(
        f"{KV}/ns/bad",
        data=b"{not json",
        headers={**keys.header("editor"), "Content-Type": "application/json"},
    )
    assert_error(malformed, 400)
    assert_error(_put(client, keys, "bad ns/key", 1), 422)
    assert_error(_put(client, keys, "ns/" + "k" * 201, 1), 422)
    assert_error(_put(client, keys, "ns/k", 1, role="executor"), 403)
    assert_error(client.get(f"{KV}/ns/fits"), 401)
    other = {"Authorization": f"Bearer {keys.other_admin}"}
    assert_error(client.get(f"{KV}/ns/fits", headers=other), 404)
    assert client.get(f"{KV}/ns", headers=other).json == []


def test_engine_reads_and_applies_writes(app, keys, session: Session):
    ws = keys.workspace.id
    assert read_kv(session, workspace_id=ws, namespace="n", key="k", default=7) == 7
    apply_kv_writes(
        session,
        workspace_id=ws,
        sets={"n/k": {"a": 1}, "n/s": "text"},
        increments={"n/count": 2, "n/float": 0.5},
    )
    apply_kv_writes(session, workspace_id=ws, increments={"n/count": 3, "n/float": 0.25})
    session.commit()
    assert read_kv(session, workspace_id=ws, namespace="n", key="k") == {"a": 1}
    assert read_kv(session, workspace_id=ws, namespace="n", key="count") == 5
    assert read_kv(session, workspace_id=ws, namespace="n", key="float") == 0.75
    entry = kv.get_kv(session=session, workspace_id=ws, namespace="n", key="count")
    assert entry.version == 2
    with pytest.raises(KvNotANumber):
        apply_kv_writes(session, workspace_id=ws, increments={"n/s": 1})
    session.rollback()
    with pytest.raises(kv.ValidationFailed):
        apply_kv_writes(session, workspace_id=ws, sets={"no-slash": 1})
    session.rollback()
    with pytest.raises(kv.ValidationFailed):
        apply_kv_writes(session, workspace_id=ws, increments={"n/x": "1"})
    session.rollback()
    # Another workspace sees none of it.
    other = keys.other_workspace.id
    assert read_kv(session, workspace_id=other, namespace="n", key="count") is None


@pytest.mark.skipif(not PG_URL, reason="concurrent increments need PostgreSQL")
def test_two_runs_incrementing_one_counter_end_at_exactly_2000(app, keys):
    """Two writers, 1,000 entity completions each, one transaction per entity."""
    engine = app.extensions["conveyor.engine"]
    ws = keys.workspace.id
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run_entities() -> None:
        try:
            start.wait()
            with Session(engine) as s:
                for _ in range(1000):
                    apply_kv_writes(s, workspace_id=ws, increments={"stats/published": 1})
                    s.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run_entities) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:
        assert read_kv(s, workspace_id=ws, namespace="stats", key="published") == 2000
        assert (
            kv.get_kv(session=s, workspace_id=ws, namespace="stats", key="published").version
            == 2000
        )


@pytest.mark.skipif(not PG_URL, reason="concurrent compare-and-set needs PostgreSQL")
def test_compare_and_set_under_concurrency(app, keys):
    """Many writers read version 1 and all try to write it: exactly one wins."""
    engine = app.extensions["conveyor.engine"]
    ws = keys.workspace.id
    with Session(engine) as s:
        kv.put_kv(session=s, workspace_id=ws, namespace="cas", key="k", value=0)
        s.commit()
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def write(n: int) -> None:
        start.wait()
        with Session(engine) as s:
            try:
                kv.put_kv(
                    session=s,
                    workspace_id=ws,
                    namespace="cas",
                    key="k",
                    value=n,
                    expected_version=1,
                )
                s.commit()
                outcomes.append("won")
            except kv.PreconditionFailed:
                s.rollback()
                outcomes.append("stale")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale"] * 7 + ["won"]
    with Session(engine) as s:
        assert kv.get_kv(session=s, workspace_id=ws, namespace="cas", key="k").version == 2
