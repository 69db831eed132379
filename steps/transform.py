"""``transform``: set fields from templates or literals, unset, rename, set ``status``."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma

from steps import templating
from steps.base import Category, SideEffect, StepContext, StepResult
from steps.errors import StepError
from steps.fields import DataPath, StepConfig, Template
from steps.paths import get_path, has_path, set_path, unset_path

NAME = "transform"
SIDE_EFFECT = SideEffect.NONE
CATEGORY = Category.DATA
DESCRIPTION = (
    "Sets fields of the entity data from templates or literals (`set`), removes fields "
    "(`unset`), renames them (`rename`), and may set the entity `status`. String values "
    "in `set` are templates; a value that is exactly one `{{ expression }}` keeps the "
    "expression's type (number, list, object...). Renames apply first, then `set`, then "
    "`unset`; values are rendered against the entity as it was before the step. "
    '`kvSet` (`"namespace/key": value`, templates allowed) and `kvIncr` (`"namespace/key": '
    "number`) write the workspace's KV store when the entity completes, atomically with it "
    "(increments never lose a count between runs); a dry run writes nothing."
)
KV_REF = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.:@-]{1,200}$")
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "changed": {"type": "array", "items": {"type": "string"}},
        "kvSet": {"type": "object", "description": "KV writes applied when the entity completes"},
        "kvIncr": {"type": "object", "additionalProperties": {"type": "number"}},
    },
    "required": ["changed"],
}


class KvRef(ma.fields.String):
    """``namespace/key`` of the workspace's KV store."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        ref = super()._deserialize(value, attr, data, **kwargs)
        if not KV_REF.match(ref):
            raise ma.ValidationError(f"{ref!r} is not 'namespace/key'.")
        return ref


class Config(StepConfig):
    set = ma.fields.Dict(
        keys=DataPath(),
        values=ma.fields.Raw(allow_none=True),
        load_default=dict,
        metadata={"description": "path → value; string values are templates"},
    )
    unset = ma.fields.List(DataPath(), load_default=list)
    rename = ma.fields.Dict(keys=DataPath(), values=DataPath(), load_default=dict)
    status = Template(load_default=None, validate=ma.validate.Length(min=1, max=64))
    kv_set = ma.fields.Dict(
        data_key="kvSet",
        keys=KvRef(),
        values=ma.fields.Raw(allow_none=True),
        load_default=dict,
        metadata={"description": "namespace/key → value (string values are templates)"},
    )
    kv_incr = ma.fields.Dict(
        data_key="kvIncr",
        keys=KvRef(),
        values=ma.fields.Raw(),
        load_default=dict,
        metadata={"description": "namespace/key → a number, or a template giving one"},
    )

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not (
            data["set"]
            or data["unset"]
            or data["rename"]
            or data.get("status")
            or data["kv_set"]
            or data["kv_incr"]
        ):
            raise ma.ValidationError(
                "Give at least one of set, unset, rename, status, kvSet or kvIncr."
            )

    @ma.validates("kv_incr")
    def _numbers(self, value: dict[str, Any], **kwargs: Any) -> None:
        for ref, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float | str):
                raise ma.ValidationError(f"{ref}: an increment is a number or a template.")

    @ma.validates("set")
    def _templates_parse(self, value: dict[str, Any], **kwargs: Any) -> None:
        for path, item in value.items():
            if isinstance(item, str):
                problem = templating.check_syntax(item)
                if problem:
                    raise ma.ValidationError(f"{path}: {problem}")


_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}$", re.S)


def _resolve(value: Any, variables: dict[str, Any]) -> Any:
    """Render string templates, recursively inside lists and objects.

    A string that is exactly one ``{{ expression }}`` keeps the expression's type, so
    ``"{{ entity.data.price * 1.2 }}"`` sets a number and ``"{{ entity.data.tags }}"`` a list.
    """
    if isinstance(value, str):
        single = _SINGLE_EXPRESSION.match(value.strip())
        if single:
            # Built into JSON data inside the render's budget: sizes checked as it grows.
            return templating.evaluate_data(single.group("expr"), variables)
        return templating.render(value, variables)
    if isinstance(value, list):
        return [_resolve(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, variables) for k, v in value.items()}
    return value


def run(config: dict[str, Any], ctx: StepContext) -> StepResult:
    """Apply the changes to the working copy of the entity."""
    variables = ctx.variables()
    data = ctx.entity.data
    changed: list[str] = []
    # Values are rendered against the entity as it was before this step.
    rendered = {path: _resolve(value, variables) for path, value in config["set"].items()}
    status = templating.render(config["status"], variables) if config.get("status") else None
    for source, target in config["rename"].items():
        if has_path(data, source):
            value = get_path(data, source)
            unset_path(data, source)
            set_path(data, target, value)
            changed += [source, target]
    for path, value in rendered.items():
        if get_path(data, path, object()) != value:
            set_path(data, path, value)
            changed.append(path)
    for path in config["unset"]:
        if unset_path(data, path):
            changed.append(path)
    if status is not None and status != ctx.entity.status:
        ctx.entity.status = status
        changed.append("status")
    output: dict[str, Any] = {"changed": changed}
    if config["kv_set"]:  # applied by the engine when the entity completes
        output["kvSet"] = {ref: _resolve(v, variables) for ref, v in config["kv_set"].items()}
    if config["kv_incr"]:
        output["kvIncr"] = {ref: _amount(ref, v, variables) for ref, v in config["kv_incr"].items()}
    return StepResult(output=output)


def _amount(ref: str, value: Any, variables: dict[str, Any]) -> int | float:
    """An increment: a number, or a template that gives one."""
    amount = _resolve(value, variables)
    if isinstance(amount, str):
        try:
            amount = float(amount) if "." in amount else int(amount)
        except ValueError:
            raise StepError(f"kvIncr {ref}: {amount!r} is not a number") from None
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise StepError(f"kvIncr {ref}: {amount!r} is not a number")
    return amount
