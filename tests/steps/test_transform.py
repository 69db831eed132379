"""``transform``: set (templates, literals, typed expressions), unset, rename, status."""

from __future__ import annotations

import marshmallow as ma
import pytest

from steps import transform
from steps.errors import TemplateError
from tests.steps.support import make_ctx


def run(config, ctx):
    return transform.run(transform.Config().load(config), ctx)


def test_set_unset_rename_and_status():
    ctx = make_ctx({"title": "hat", "old": {"name": "x"}, "tmp": 1, "price": 10})
    result = run(
        {
            "set": {
                "seo.title": "Buy {{ entity.data.title|title }}",
                "flags": {"new": True, "label": "{{ entity.data.title }}!"},
                "count": 3,
                "price": "{{ entity.data.price * 1.5 }}",
                "tags": "{{ ['a', 'b'] }}",
            },
            "unset": ["tmp", "absent"],
            "rename": {"old.name": "name"},
            "status": "{{ 'ready' if entity.data.price > 5 else 'draft' }}",
        },
        ctx,
    )
    assert ctx.entity.data == {
        "title": "hat",
        "old": {},
        "name": "x",
        "price": 15.0,
        "seo": {"title": "Buy Hat"},
        "flags": {"new": True, "label": "hat!"},
        "count": 3,
        "tags": ["a", "b"],
    }
    assert ctx.entity.status == "ready"
    assert result.output["changed"] == [
        "old.name",
        "name",
        "seo.title",
        "flags",
        "count",
        "price",
        "tags",
        "tmp",
        "status",
    ]


def test_values_render_against_the_entity_before_the_step():
    ctx = make_ctx({"a": 1})
    run({"set": {"a": 2, "b": "{{ entity.data.a }}"}}, ctx)
    assert ctx.entity.data == {"a": 2, "b": 1}


def test_unchanged_values_are_not_reported():
    ctx = make_ctx({"a": 1}, status="draft")
    assert run({"set": {"a": 1}, "status": "draft"}, ctx).output == {"changed": []}


def test_template_failure_is_a_template_error():
    with pytest.raises(TemplateError, match="sandbox"):
        run({"set": {"x": "{{ ''.__class__ }}"}}, make_ctx({}))


def test_config_is_checked():
    with pytest.raises(ma.ValidationError):
        transform.Config().load({})
    with pytest.raises(ma.ValidationError):
        transform.Config().load({"set": {"bad path!": 1}})
    with pytest.raises(ma.ValidationError):
        transform.Config().load({"set": {"a": "{{ broken"}})


def test_templates_cannot_change_the_entity_or_the_run():
    ctx = make_ctx({"price": 10, "tags": ["a"]})
    for value in (
        "{{ entity.data.update({'price': 0}) }}",
        "{{ entity.data.tags.append('b') }}",
        "x{{ run.update({'id': 'run_FORGED'}) }}",
    ):
        with pytest.raises(TemplateError, match="refused by the sandbox"):
            run({"set": {"copy": value}}, ctx)
    assert ctx.entity.data == {"price": 10, "tags": ["a"]}
    assert ctx.run["id"] == "run_1"


def test_a_set_value_is_built_within_the_size_limits():
    # Lazy bombs such as range(100000)|map('center', 999999) are in test_templating's BOMBS,
    # run in a child process whose memory is measured.
    ctx = make_ctx({"n": 1})
    with pytest.raises(TemplateError, match="undefined"):
        run({"set": {"tags": "{{ [entity.data.tag] }}"}}, ctx)
    assert ctx.entity.data == {"n": 1}
    result = run({"set": {"x": "{{ range(3)|map('string') }}", "y": "{{ {'a': [1]} }}"}}, ctx)
    assert result.output == {"changed": ["x", "y"]}
    assert ctx.entity.data == {"n": 1, "x": ["0", "1", "2"], "y": {"a": [1]}}
