"""marshmallow fields shared by step configs: templates, expressions, data paths."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from jsonschema.exceptions import SchemaError

from steps import templating
from steps.paths import PATH_PATTERN
from steps.schemas import check_schema


class Template(ma.fields.String):
    """A Jinja template string, syntax-checked on save."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        problem = templating.check_syntax(text)
        if problem:
            raise ma.ValidationError(problem)
        return text


class Expression(ma.fields.String):
    """A Jinja expression (``entity.data.price > 100``), syntax-checked on save."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        problem = templating.check_expression(text)
        if problem:
            raise ma.ValidationError(problem)
        return text


class DataPath(ma.fields.String):
    """A dotted path into entity data, such as ``seo.title``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            validate=ma.validate.Regexp(PATH_PATTERN, error="Not a dotted data path."), **kwargs
        )


class JsonSchemaDict(ma.fields.Dict):
    """A JSON Schema (2020-12), checked to be one on save, with regexes RE2 can run."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        schema = super()._deserialize(value, attr, data, **kwargs)
        try:
            check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "(root)"
            raise ma.ValidationError(f"Not a valid JSON Schema at {where}: {exc.message}") from exc
        return schema


class StepConfig(ma.Schema):
    """Base of every step ``Config``: unknown keys are refused."""

    class Meta:
        unknown = ma.RAISE
