"""``/api/v1/entities``: schema-checked data, bulk create, versions, filters and cursors."""

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import update

from app.models import Entity, Run, RunItem, Workflow
from app.pagination import encode_cursor
from tests.app.api import assert_error
from tests.conftest import auth, make_entities, make_entity_type

ENTITIES = "/api/v1/entities"


def _create(client, keys, entity_type_id, data, **extra):
    body = {"entityTypeId": entity_type_id, "data": data, **extra}
    response = client.post(ENTITIES, json=body, headers=keys.header("editor"))
    assert response.status_code == 201, response.json
    return response


def _all_ids(client, keys, query=""):
    response = client.get(f"{ENTITIES}?limit=1000{query}", headers=keys.header("viewer"))
    assert response.status_code == 200, response.json
    return [e["id"] for e in response.json]


# --- single entities ---------------------------------------------------------------


def test_create_and_get(client, keys):
    entity_type = make_entity_type(client, keys)
    response = _create(client, keys, entity_type["id"], {"title": "Lamp", "price": 12.5})
    created = response.json
    assert response.headers["ETag"] == '"1"'
    assert created["id"].startswith("ent_")
    assert created["entityTypeId"] == entity_type["id"]
    assert created["data"] == {"title": "Lamp", "price": 12.5}
    assert created["status"] == "draft"
    assert created["version"] == 1
    assert created["publishedAt"] is None and created["publishedVersion"] is None
    assert isinstance(created["createdAt"], int) and created["updatedAt"] == created["createdAt"]

    fetched = client.get(f"{ENTITIES}/{created['id']}", headers=keys.header("viewer"))
    assert fetched.status_code == 200
    assert fetched.headers["ETag"] == '"1"'
    assert fetched.json == created


def test_create_with_a_status(client, keys):
    entity_type = make_entity_type(client, keys)
    created = _create(client, keys, entity_type["id"], {"title": "A"}, status="ready").json
    assert created["status"] == "ready"


def test_patch_replaces_data_and_bumps_the_version(client, keys):
    entity_type = make_entity_type(client, keys)
    created = _create(client, keys, entity_type["id"], {"title": "A", "price": 1}).json
    url = f"{ENTITIES}/{created['id']}"
    headers = keys.header("editor")

    patched = client.patch(url, json={"data": {"title": "B"}}, headers=headers)
    assert patched.status_code == 200
    assert patched.json["data"] == {"title": "B"}  # replaced as a whole, not merged
    assert patched.json["version"] == 2
    assert patched.headers["ETag"] == '"2"'
    assert patched.json["status"] == "draft"

    patched = client.patch(url, json={"status": "ready"}, headers=headers)
    assert patched.json["status"] == "ready"
    assert patched.json["data"] == {"title": "B"}
    assert patched.json["version"] == 3
    assert patched.json["updatedAt"] >= created["updatedAt"]
    assert client.get(url, headers=headers).json == patched.json


def test_if_match_refuses_a_stale_write(client, keys):
    entity_type = make_entity_type(client, keys)
    created = _create(client, keys, entity_type["id"], {"title": "A"}).json
    url = f"{ENTITIES}/{created['id']}"
    editor = keys.header("editor")

    ok = client.patch(url, json={"status": "a"}, headers={**editor, "If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json["version"] == 2
    stale = client.patch(url, json={"status": "b"}, headers={**editor, "If-Match": '"1"'})
    assert "version 2" in assert_error(stale, 412)["message"]
    ahead = client.patch(url, json={"status": "b"}, headers={**editor, "If-Match": '"3"'})
    assert_error(ahead, 412)
    garbage = client.patch(url, json={"status": "b"}, headers={**editor, "If-Match": "x"})
    assert_error(garbage, 412)
    fetched = client.get(url, headers=editor).json
    assert fetched["status"] == "a" and fetched["version"] == 2


def test_if_match_spellings(client, keys):
    entity_type = make_entity_type(client, keys)
    editor = keys.header("editor")
    for value in ('"1"', "1", 'W/"1"', "*"):
        created = _create(client, keys, entity_type["id"], {"title": "A"}).json
        url = f"{ENTITIES}/{created['id']}"
        response = client.patch(url, json={"status": "x"}, headers={**editor, "If-Match": value})
        assert response.status_code == 200, value


def test_patch_checks_data_against_the_schema(client, keys):
    entity_type = make_entity_type(client, keys)
    created = _create(client, keys, entity_type["id"], {"title": "A"}).json
    url = f"{ENTITIES}/{created['id']}"
    response = client.patch(
        url, json={"data": {"title": 3, "price": -1}}, headers=keys.header("editor")
    )
    errors = assert_error(response, 422)["errors"]
    assert set(errors) == {"data.title", "data.price"}
    fetched = client.get(url, headers=keys.header("viewer")).json
    assert fetched["data"] == {"title": "A"} and fetched["version"] == 1


def test_patch_rejects_bad_input(client, keys):
    entity_type = make_entity_type(client, keys)
    url = f"{ENTITIES}/{_create(client, keys, entity_type['id'], {'title': 'A'}).json['id']}"
    cases = [
        ({"data": "x"}, "data"),
        ({"status": ""}, "status"),
        ({"status": "s" * 65}, "status"),
        ({"version": 9}, "version"),
        ({"entityTypeId": "et_x"}, "entityTypeId"),
        ({"colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = client.patch(url, json=body, headers=keys.header("editor"))
        assert field in assert_error(response, 422)["errors"], body


def test_delete(client, keys):
    entity_type = make_entity_type(client, keys)
    url = f"{ENTITIES}/{_create(client, keys, entity_type['id'], {'title': 'A'}).json['id']}"
    response = client.delete(url, headers=keys.header("editor"))
    assert response.status_code == 204
    assert_error(client.get(url, headers=keys.header("viewer")), 404)
    assert_error(client.delete(url, headers=keys.header("editor")), 404)
    assert_error(client.patch(url, json={"status": "x"}, headers=keys.header("editor")), 404)


def test_data_not_matching_the_type_is_422_naming_the_paths(client, keys):
    entity_type = make_entity_type(client, keys)
    response = client.post(
        ENTITIES,
        json={"entityTypeId": entity_type["id"], "data": {"price": -1}},
        headers=keys.header("editor"),
    )
    body = assert_error(response, 422)
    assert set(body["errors"]) == {"data.price", "data"}
    assert "minimum" in body["errors"]["data.price"][0]
    assert "title" in body["errors"]["data"][0]
    assert "data.price" in body["message"]
    assert _all_ids(client, keys) == []


def test_nested_data_errors_name_the_nested_path(client, keys):
    schema = {
        "type": "object",
        "properties": {
            "seo": {"type": "object", "properties": {"title": {"type": "string"}}},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    entity_type = make_entity_type(client, keys, schema=schema)
    response = client.post(
        ENTITIES,
        json={"entityTypeId": entity_type["id"], "data": {"seo": {"title": 1}, "tags": ["a", 2]}},
        headers=keys.header("editor"),
    )
    assert set(assert_error(response, 422)["errors"]) == {"data.seo.title", "data.tags[1]"}


def test_create_rejects_bad_input(client, keys):
    entity_type = make_entity_type(client, keys)
    type_id = entity_type["id"]
    cases = [
        ({}, {"entityTypeId", "data"}),
        ({"entityTypeId": type_id}, {"data"}),
        ({"data": {"title": "A"}}, {"entityTypeId"}),
        ({"entityTypeId": type_id, "data": ["title"]}, {"data"}),
        ({"entityTypeId": 5, "data": {"title": "A"}}, {"entityTypeId"}),
        ({"entityTypeId": type_id, "data": {"title": "A"}, "status": 1}, {"status"}),
        ({"entityTypeId": type_id, "data": {"title": "A"}, "version": 3}, {"version"}),
        ({"entityTypeId": type_id, "data": {"title": "A"}, "id": "ent_x"}, {"id"}),
        ({"entityTypeId": type_id, "data": {"title": "A"}, "colour": 1}, {"colour"}),
        ({"entityTypeId": "et_unknown", "data": {"title": "A"}}, {"entityTypeId"}),
    ]
    for body, fields in cases:
        response = client.post(ENTITIES, json=body, headers=keys.header("editor"))
        assert set(assert_error(response, 422)["errors"]) == fields, body
    assert _all_ids(client, keys) == []


def test_another_workspace_entity_type_is_unknown(client, keys):
    theirs = client.post(
        "/api/v1/entity-types", json={"name": "Theirs"}, headers=auth(keys.other_admin)
    ).json
    response = client.post(
        ENTITIES, json={"entityTypeId": theirs["id"], "data": {}}, headers=keys.header("editor")
    )
    assert "entityTypeId" in assert_error(response, 422)["errors"]


def test_roles(client, keys):
    entity_type = make_entity_type(client, keys)
    created = _create(client, keys, entity_type["id"], {"title": "A"}).json
    url = f"{ENTITIES}/{created['id']}"
    body = {"entityTypeId": entity_type["id"], "data": {"title": "B"}}
    for role in ("viewer", "executor"):
        headers = keys.header(role)
        assert client.get(url, headers=headers).status_code == 200
        assert client.get(ENTITIES, headers=headers).status_code == 200
        assert_error(client.post(ENTITIES, json=body, headers=headers), 403)
        bulk = client.post(f"{ENTITIES}/bulk", json={"entities": [body]}, headers=headers)
        assert_error(bulk, 403)
        assert_error(client.patch(url, json={"status": "x"}, headers=headers), 403)
        assert_error(client.delete(url, headers=headers), 403)
    assert _all_ids(client, keys) == [created["id"]]
    assert client.get(url, headers=keys.header("viewer")).json["version"] == 1


def test_needs_a_key(client, keys):
    assert_error(client.get(ENTITIES), 401)
    assert_error(client.post(f"{ENTITIES}/bulk", json={"entities": []}), 401)
    assert_error(client.get(ENTITIES, headers=auth("cvk_bad")), 401)


def test_another_workspace_entity_is_404(client, keys):
    entity_type = make_entity_type(client, keys)
    created = _create(client, keys, entity_type["id"], {"title": "A"}).json
    url = f"{ENTITIES}/{created['id']}"
    other = auth(keys.other_admin)
    assert_error(client.get(url, headers=other), 404)
    assert_error(client.patch(url, json={"status": "x"}, headers=other), 404)
    assert_error(client.delete(url, headers=other), 404)
    assert_error(client.get(f"{url}/runs", headers=other), 404)
    assert client.get(ENTITIES, headers=other).json == []
    assert client.get(f"{ENTITIES}?ids={created['id']}", headers=other).json == []
    assert client.get(url, headers=keys.header("viewer")).json == created


# --- bulk ---------------------------------------------------------------------------


def test_bulk_creates_in_request_order(client, keys):
    entity_type = make_entity_type(client, keys)
    items = [
        {"entityTypeId": entity_type["id"], "data": {"title": f"T{i}"}, "status": f"s{i % 2}"}
        for i in range(50)
    ]
    response = client.post(
        f"{ENTITIES}/bulk", json={"entities": items}, headers=keys.header("editor")
    )
    assert response.status_code == 201
    assert [e["data"]["title"] for e in response.json] == [f"T{i}" for i in range(50)]
    assert [e["status"] for e in response.json] == [f"s{i % 2}" for i in range(50)]
    assert all(e["version"] == 1 for e in response.json)
    assert sorted(_all_ids(client, keys)) == sorted(e["id"] for e in response.json)
    one = client.get(f"{ENTITIES}/{response.json[7]['id']}", headers=keys.header("viewer"))
    assert one.json == response.json[7]


def test_bulk_is_all_or_nothing_with_errors_keyed_by_index(client, keys):
    entity_type = make_entity_type(client, keys)
    good = {"entityTypeId": entity_type["id"], "data": {"title": "ok"}}
    items = [good, good, {"entityTypeId": entity_type["id"], "data": {"title": "x", "price": "1"}}]
    items += [good, {"entityTypeId": "et_unknown", "data": {"title": "y"}}]
    response = client.post(
        f"{ENTITIES}/bulk", json={"entities": items}, headers=keys.header("editor")
    )
    body = assert_error(response, 422)
    assert set(body["errors"]) == {"entities[2].data.price", "entities[4].entityTypeId"}
    assert _all_ids(client, keys) == []


def test_bulk_item_of_the_wrong_shape_is_keyed_by_index(client, keys):
    entity_type = make_entity_type(client, keys)
    good = {"entityTypeId": entity_type["id"], "data": {"title": "ok"}}
    items = [good, {"entityTypeId": entity_type["id"], "data": "x"}, {"data": {}}, good]
    response = client.post(
        f"{ENTITIES}/bulk", json={"entities": items}, headers=keys.header("editor")
    )
    errors = assert_error(response, 422)["errors"]
    assert set(errors) == {"entities[1].data", "entities[2].entityTypeId"}
    assert _all_ids(client, keys) == []


def test_bulk_rejects_a_bad_envelope(client, keys):
    headers = keys.header("editor")
    for body, field in [
        ({}, "entities"),
        ({"entities": {}}, "entities"),
        ({"entities": [], "extra": 1}, "extra"),
    ]:
        response = client.post(f"{ENTITIES}/bulk", json=body, headers=headers)
        assert field in assert_error(response, 422)["errors"], body
    empty = client.post(f"{ENTITIES}/bulk", json={"entities": []}, headers=headers)
    assert empty.status_code == 201 and empty.json == []


def test_bulk_accepts_10000_and_refuses_10001(client, keys):
    entity_type = make_entity_type(client, keys, schema=None)
    item = {"entityTypeId": entity_type["id"], "data": {}}
    headers = keys.header("editor")
    too_many = client.post(f"{ENTITIES}/bulk", json={"entities": [item] * 10_001}, headers=headers)
    assert "entities" in assert_error(too_many, 422)["errors"]
    assert _all_ids(client, keys) == []
    ok = client.post(f"{ENTITIES}/bulk", json={"entities": [item] * 10_000}, headers=headers)
    assert ok.status_code == 201
    assert len(ok.json) == 10_000
    assert len({e["id"] for e in ok.json}) == 10_000


def test_bulk_idempotency_key_replays_the_first_response(client, keys):
    entity_type = make_entity_type(client, keys)
    items = [{"entityTypeId": entity_type["id"], "data": {"title": f"T{i}"}} for i in range(5)]
    headers = {**keys.header("editor"), "Idempotency-Key": "import-2024-06-01"}
    first = client.post(f"{ENTITIES}/bulk", json={"entities": items}, headers=headers)
    second = client.post(f"{ENTITIES}/bulk", json={"entities": items}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json == first.json
    assert sorted(_all_ids(client, keys)) == sorted(e["id"] for e in first.json)

    other_body = client.post(f"{ENTITIES}/bulk", json={"entities": items[:2]}, headers=headers)
    assert "Idempotency-Key" in assert_error(other_body, 422)["errors"]
    assert len(_all_ids(client, keys)) == 5

    fresh = client.post(
        f"{ENTITIES}/bulk",
        json={"entities": items},
        headers={**keys.header("editor"), "Idempotency-Key": "import-2024-06-02"},
    )
    assert fresh.status_code == 201
    assert len(_all_ids(client, keys)) == 10


def test_idempotency_keys_are_per_workspace(client, keys):
    mine = make_entity_type(client, keys)
    theirs = client.post(
        "/api/v1/entity-types", json={"name": "T"}, headers=auth(keys.other_admin)
    ).json
    for type_id, key in ((mine["id"], keys.editor), (theirs["id"], keys.other_admin)):
        response = client.post(
            f"{ENTITIES}/bulk",
            json={"entities": [{"entityTypeId": type_id, "data": {"title": "A"}}]},
            headers={**auth(key), "Idempotency-Key": "same"},
        )
        assert response.status_code == 201
        assert response.json[0]["entityTypeId"] == type_id


def test_a_failed_bulk_is_not_remembered_by_its_idempotency_key(client, keys):
    entity_type = make_entity_type(client, keys)
    headers = {**keys.header("editor"), "Idempotency-Key": "k1"}
    bad = [{"entityTypeId": entity_type["id"], "data": {}}]
    assert_error(client.post(f"{ENTITIES}/bulk", json={"entities": bad}, headers=headers), 422)
    assert_error(client.post(f"{ENTITIES}/bulk", json={"entities": bad}, headers=headers), 422)
    good = [{"entityTypeId": entity_type["id"], "data": {"title": "A"}}]
    response = client.post(f"{ENTITIES}/bulk", json={"entities": good}, headers=headers)
    assert response.status_code == 201


def test_an_overlong_idempotency_key_is_422(client, keys):
    response = client.post(
        f"{ENTITIES}/bulk",
        json={"entities": []},
        headers={**keys.header("editor"), "Idempotency-Key": "k" * 256},
    )
    assert "Idempotency-Key" in assert_error(response, 422)["errors"]


# --- listing ------------------------------------------------------------------------


def test_walking_every_page_sees_each_entity_once(client, keys):
    entity_type = make_entity_type(client, keys)
    made = {e["id"] for e in make_entities(client, keys, entity_type["id"], 23)}
    seen: list[str] = []
    url = f"{ENTITIES}?limit=5"
    pages = 0
    while True:
        response = client.get(url, headers=keys.header("viewer"))
        assert response.status_code == 200
        pages += 1
        seen += [e["id"] for e in response.json]
        if "X-Next-Cursor" not in response.headers:
            assert "Link" not in response.headers
            break
        assert len(response.json) == 5
        link = response.headers["Link"]
        assert link.endswith('>; rel="next"') and link.startswith("<http")
        target = urlsplit(link[1 : link.index(">")])
        assert target.path == ENTITIES
        query = parse_qs(target.query)
        assert query["cursor"] == [response.headers["X-Next-Cursor"]]
        assert query["limit"] == ["5"]
        url = f"{target.path}?{target.query}"
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == made
    assert seen == sorted(seen)


def test_a_full_last_page_has_no_next_cursor(client, keys):
    entity_type = make_entity_type(client, keys)
    make_entities(client, keys, entity_type["id"], 4)
    first = client.get(f"{ENTITIES}?limit=2", headers=keys.header("viewer"))
    cursor = first.headers["X-Next-Cursor"]
    last = client.get(f"{ENTITIES}?limit=2&cursor={cursor}", headers=keys.header("viewer"))
    assert len(last.json) == 2
    assert "X-Next-Cursor" not in last.headers and "Link" not in last.headers


def test_default_limit_is_50(client, keys):
    entity_type = make_entity_type(client, keys)
    make_entities(client, keys, entity_type["id"], 51)
    response = client.get(ENTITIES, headers=keys.header("viewer"))
    assert len(response.json) == 50
    assert "X-Next-Cursor" in response.headers


def test_cursors_keep_the_filters(client, keys):
    entity_type = make_entity_type(client, keys)
    items = [
        {"entityTypeId": entity_type["id"], "data": {"title": f"T{i}"}, "status": ("a", "b")[i % 2]}
        for i in range(10)
    ]
    client.post(f"{ENTITIES}/bulk", json={"entities": items}, headers=keys.header("editor"))
    seen: list[dict] = []
    url = f"{ENTITIES}?status=a&limit=2"
    while url:
        response = client.get(url, headers=keys.header("viewer"))
        seen += response.json
        link = response.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
    assert len(seen) == 5 and {e["status"] for e in seen} == {"a"}


def test_filter_by_entity_type(client, keys):
    products = make_entity_type(client, keys)
    articles = make_entity_type(client, keys, name="Article")
    product_ids = [e["id"] for e in make_entities(client, keys, products["id"], 3)]
    article_ids = [e["id"] for e in make_entities(client, keys, articles["id"], 2)]
    assert _all_ids(client, keys, f"&entityTypeId={products['id']}") == sorted(product_ids)
    assert _all_ids(client, keys, f"&entityTypeId={articles['id']}") == sorted(article_ids)
    assert _all_ids(client, keys, "&entityTypeId=et_unknown") == []


def test_filter_by_status(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 4)
    for entity in entities[:2]:
        client.patch(
            f"{ENTITIES}/{entity['id']}", json={"status": "ready"}, headers=keys.header("editor")
        )
    assert _all_ids(client, keys, "&status=ready") == sorted(e["id"] for e in entities[:2])
    assert _all_ids(client, keys, "&status=draft") == sorted(e["id"] for e in entities[2:])
    assert _all_ids(client, keys, "&status=published") == []


def test_filter_by_updated_since(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 4)
    old, new = [e["id"] for e in entities[:2]], [e["id"] for e in entities[2:]]
    # Fixed timestamps make the boundary exact without depending on the clock.
    session.execute(update(Entity).where(Entity.id.in_(old)).values(updated_at=1_000))
    session.execute(update(Entity).where(Entity.id.in_(new)).values(updated_at=2_000))
    session.commit()
    assert _all_ids(client, keys, "&updatedSince=1500") == sorted(new)
    assert _all_ids(client, keys, "&updatedSince=2000") == sorted(new)
    assert _all_ids(client, keys, "&updatedSince=2001") == []
    assert _all_ids(client, keys, "&updatedSince=0") == sorted(old + new)


def test_filter_by_ids(client, keys):
    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 5)]
    wanted = [ids[4], ids[1]]
    assert _all_ids(client, keys, f"&ids={','.join(wanted)}") == sorted(wanted)
    assert _all_ids(client, keys, "&ids=ent_unknown") == []


def test_filters_combine(client, keys):
    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 3)]
    client.patch(f"{ENTITIES}/{ids[0]}", json={"status": "ready"}, headers=keys.header("editor"))
    query = f"&status=ready&ids={ids[0]},{ids[1]}&entityTypeId={entity_type['id']}"
    assert _all_ids(client, keys, query) == [ids[0]]


def test_bad_list_arguments_are_422(client, keys):
    headers = keys.header("viewer")
    for query, field in [
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("updatedSince=yesterday", "updatedSince"),
        ("cursor=%25%25%25", "cursor"),
        ("cursor=not-a-cursor", "cursor"),
    ]:
        response = client.get(f"{ENTITIES}?{query}", headers=headers)
        assert field in assert_error(response, 422)["errors"], query
    assert client.get(f"{ENTITIES}?limit=1000", headers=headers).status_code == 200


def test_a_cursor_from_a_known_id_starts_after_it(client, keys):
    entity_type = make_entity_type(client, keys)
    ids = sorted(e["id"] for e in make_entities(client, keys, entity_type["id"], 6))
    response = client.get(
        f"{ENTITIES}?limit=2&cursor={encode_cursor(ids[2])}", headers=keys.header("viewer")
    )
    assert [e["id"] for e in response.json] == ids[3:5]


# --- runs of an entity --------------------------------------------------------------


def test_runs_of_an_entity(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entity, untouched = make_entities(client, keys, entity_type["id"], 2)
    url = f"{ENTITIES}/{entity['id']}/runs"
    assert client.get(url, headers=keys.header("viewer")).json == []

    workflow = session.get(Workflow, _workflow_id(client, keys, entity_type["id"]))
    for n, status in enumerate(("completed", "failed")):
        run = Run(
            id=f"run_{n}",
            workspace_id=keys.workspace.id,
            workflow_id=workflow.id,
            workflow_version=1,
            job_id=f"job_{n}",
            status="completed",
            steps=[],
            settings={},
        )
        session.add(run)
        session.flush()
        session.add(
            RunItem(run_id=run.id, seq=0, entity_id=entity["id"], status=status, error=None)
        )
    session.commit()
    response = client.get(url, headers=keys.header("viewer"))
    assert response.status_code == 200
    assert [(r["runId"], r["status"]) for r in response.json] == [
        ("run_1", "failed"),
        ("run_0", "completed"),
    ]
    assert response.json[0]["workflowId"] == workflow.id
    page = client.get(f"{url}?limit=1", headers=keys.header("viewer"))
    assert [r["runId"] for r in page.json] == ["run_1"]
    rest = client.get(
        f"{url}?limit=1&cursor={page.headers['X-Next-Cursor']}", headers=keys.header("viewer")
    )
    assert [r["runId"] for r in rest.json] == ["run_0"]
    other = f"{ENTITIES}/{untouched['id']}/runs"
    assert client.get(other, headers=keys.header("viewer")).json == []
    assert_error(client.get(f"{ENTITIES}/ent_unknown/runs", headers=keys.header("viewer")), 404)


def _workflow_id(client, keys, entity_type_id):
    response = client.post(
        "/api/v1/workflows",
        json={"name": "W", "entityTypeId": entity_type_id, "steps": []},
        headers=keys.header("editor"),
    )
    assert response.status_code == 201
    return response.json["id"]
