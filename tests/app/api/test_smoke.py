"""A first end-to-end pass over the foundation endpoints."""

from tests.conftest import make_entities, make_entity_type, make_workflow


def test_entity_type_entities_and_workflow(client, keys):
    entity_type = make_entity_type(client, keys)
    assert entity_type["schema"]["required"] == ["title"]
    entities = make_entities(client, keys, entity_type["id"], 3)
    assert [e["data"]["title"] for e in entities] == ["Item 0", "Item 1", "Item 2"]
    workflow = make_workflow(
        client, keys, entity_type["id"], [{"type": "transform", "config": {"set": {"a": 1}}}]
    )
    assert workflow["stepsCount"] == 1 and workflow["lastRunAt"] is None
