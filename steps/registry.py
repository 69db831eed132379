"""The step-type registry: built-ins by dotted path, imported lazily; plug-ins by entry point."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import MappingProxyType, ModuleType
from typing import Any

from apispec.ext.marshmallow import OpenAPIConverter

from steps.errors import UnknownStepType

_BUILTINS = {
    "ai_generate": "steps.ai_generate",
    "validate": "steps.validate",
    "transform": "steps.transform",
    "condition": "steps.condition",
    "publish": "steps.publish",
    "notify": "steps.notify",
    "approval": "steps.approval",
}
ENTRY_POINT_GROUP = "conveyor.step_types"

_registry: dict[str, str] = dict(_BUILTINS)
registry: MappingProxyType[str, str] = MappingProxyType(_registry)
_loaded: dict[str, ModuleType] = {}
_plugins_loaded = False


def register_step_type(name: str, dotted_path: str) -> None:
    """Add a step type; a name that is already taken is refused."""
    if name in _registry:
        raise ValueError(f"step type {name!r} is already registered")
    _registry[name] = dotted_path


def _load_plugins() -> None:
    """Register third-party step types from the ``conveyor.step_types`` entry points once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _registry:
            register_step_type(ep.name, ep.value)


def step_type_names() -> list[str]:
    """Every registered type name, built-ins first."""
    _load_plugins()
    return list(_registry)


def get_step_type(name: str) -> Any:
    """The module implementing step type ``name``."""
    _load_plugins()
    if name not in _registry:
        raise UnknownStepType(name)
    module = _loaded.get(name)
    if module is None:
        module = importlib.import_module(_registry[name])
        _loaded[name] = module
    return module


# No spec: the resolver names no schema, so nested schemas are inlined and the converter
# never registers a component in (or reads refs from) a spec. OpenAPI 3.1's schemas are JSON
# Schema 2020-12: nullable fields come out as type unions (``["string", "null"]``), not as
# OpenAPI 3.0's ``nullable``.
_converter = OpenAPIConverter(
    openapi_version="3.1.0",
    schema_name_resolver=lambda s: None,
    spec=None,  # type: ignore[arg-type]  # never used (see above); apispec types it APISpec
)


def json_schema_2020(schema: Any) -> Any:
    """``schema`` with OpenAPI 3.0's ``nullable: true`` spelled as JSON Schema 2020-12 does
    (``null`` added to ``type`` and ``enum``), recursively; for plug-ins' hand-written schemas."""
    if isinstance(schema, list):
        return [json_schema_2020(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: json_schema_2020(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable") is not True:
        return out
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        out["type"] = [*kind, "null"]
    elif kind is None:
        return {"anyOf": [out, {"type": "null"}]}
    if isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out


def config_json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a step type's config, from its marshmallow ``Config``."""
    module = get_step_type(name)
    return json_schema_2020(_converter.schema2jsonschema(module.Config))  # type: ignore[no-any-return]


def describe(name: str) -> dict[str, Any]:
    """``{type, description, configSchema, outputSchema}`` for the API (JSON Schema 2020-12)."""
    module = get_step_type(name)
    return {
        "type": name,
        "description": module.DESCRIPTION,
        "configSchema": config_json_schema(name),
        "outputSchema": json_schema_2020(module.OUTPUT_SCHEMA),
    }
