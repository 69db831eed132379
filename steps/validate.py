"""``validate``: check entity data against a JSON Schema and field rules."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from steps import schemas, templating
from steps.base import Action, Category, SideEffect, StepContext, StepResult
from steps.fields import DataPath, Expression, JsonSchemaDict, StepConfig
from steps.paths import get_path, has_path

NAME = "validate"
SIDE_EFFECT = SideEffect.NONE
CATEGORY = Category.DATA
DESCRIPTION = (
    "Checks the entity data against a JSON Schema (default: the entity type's) and `rules`. "
    "On failure the entity fails with every error, unless `onInvalid` is `stop`, which "
    "ends the entity's workflow as completed."
)
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "valid": {"type": "boolean"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "required": ["valid", "errors"],
}


class Rule(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    field = DataPath(load_default=None)
    required = ma.fields.Boolean(load_default=False)
    min_length = ma.fields.Integer(
        data_key="minLength", load_default=None, validate=ma.validate.Range(min=0)
    )
    max_length = ma.fields.Integer(
        data_key="maxLength", load_default=None, validate=ma.validate.Range(min=0)
    )
    pattern = ma.fields.String(load_default=None)
    enum = ma.fields.List(ma.fields.Raw(), load_default=None)
    expression = Expression(load_default=None)
    message = ma.fields.String(load_default=None)

    @ma.validates("pattern")
    def _pattern_compiles(self, value: str | None, **kwargs: Any) -> None:
        """The pattern must run on RE2 (linear time): refused on save, not at run time."""
        if value is not None:
            try:
                schemas.compile_user_regex(value)
            except schemas.UserRegexError as exc:
                raise ma.ValidationError(str(exc)) from exc

    @ma.validates_schema
    def _has_subject(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("field") and not data.get("expression"):
            raise ma.ValidationError("A rule needs a `field` or an `expression`.")


class Config(StepConfig):
    schema = JsonSchemaDict(load_default=None, metadata={"description": "default: entity type's"})
    rules = ma.fields.List(ma.fields.Nested(Rule), load_default=list)
    on_invalid = ma.fields.String(
        data_key="onInvalid", load_default="fail", validate=ma.validate.OneOf(["fail", "stop"])
    )


def schema_errors(schema: dict[str, Any], data: Any) -> list[dict[str, str]]:
    """Every place ``data`` breaks ``schema``, as ``{path, message}``."""
    validator = schemas.validator(schema)  # cached per schema; regexes run on RE2
    errors = []
    for error in validator.iter_errors(data):
        base = [str(p) for p in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, dict):
            # Name the missing property itself: /seo/title rather than /seo.
            for name in error.validator_value:
                if name not in error.instance:
                    errors.append({"path": _pointer([*base, name]), "message": error.message})
            continue
        errors.append({"path": _pointer(base), "message": error.message})
    return sorted(errors, key=lambda e: e["path"])


def _pointer(parts: list[str]) -> str:
    """A JSON Pointer (RFC 6901) for ``parts``."""
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _rule_errors(rule: dict[str, Any], ctx: StepContext) -> list[dict[str, str]]:
    """The errors one rule finds."""
    path = rule.get("field")
    data = ctx.entity.data
    where = "/" + path.replace(".", "/") if path else "/"
    errors: list[dict[str, str]] = []

    def fail(default: str) -> None:
        errors.append({"path": where, "message": rule.get("message") or default})

    if path:
        if not has_path(data, path):
            if rule["required"]:
                fail(f"{path} is required")
            return errors
        value = get_path(data, path)
        if rule["required"] and value in (None, ""):
            fail(f"{path} is required")
        if isinstance(value, str | list | dict):
            if rule["min_length"] is not None and len(value) < rule["min_length"]:
                fail(f"{path} is shorter than {rule['min_length']}")
            if rule["max_length"] is not None and len(value) > rule["max_length"]:
                fail(f"{path} is longer than {rule['max_length']}")
        if rule["pattern"] is not None and not (
            isinstance(value, str) and schemas.regex_search(rule["pattern"], value)
        ):
            fail(f"{path} does not match {rule['pattern']}")
        if rule["enum"] is not None and value not in rule["enum"]:
            fail(f"{path} is not one of {rule['enum']}")
    if rule.get("expression") and not templating.evaluate(rule["expression"], ctx.variables()):
        fail(f"expression is false: {rule['expression']}")
    return errors


def run(config: dict[str, Any], ctx: StepContext) -> StepResult:
    """Collect every schema and rule error; fail or stop the entity when there are any."""
    schema = config.get("schema") or ctx.entity_schema
    errors = schema_errors(schema, ctx.entity.data) if schema else []
    for rule in config["rules"]:
        errors.extend(_rule_errors(rule, ctx))
    output = {"valid": not errors, "errors": errors}
    if not errors:
        return StepResult(output=output)
    if config["on_invalid"] == "stop":
        return StepResult(output=output, action=Action.STOP)
    summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:10])
    return StepResult(output=output, action=Action.FAIL, error=f"validation failed: {summary}")
