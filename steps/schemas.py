"""User-supplied regexes and JSON Schemas, matched on RE2 so no input takes super-linear time.

Python's ``re`` backtracks: ``^(a+)+$`` against ``"aaa…!"`` runs for hours and holds the GIL.
Every regex a user gives (``validate`` rules, ``pattern`` and ``patternProperties`` in entity
types, ``validate`` schemas and ``ai_generate``'s ``jsonSchema``) runs here, on RE2, whose
matching time is linear in the input. RE2 has no backreferences and no lookaround; such a
pattern is refused when it is saved, with a message naming it.

``validator(schema)`` is a Draft 2020-12 validator whose ``pattern``, ``patternProperties``,
``additionalProperties`` and ``unevaluatedProperties`` match with RE2; ``check_schema`` checks
a schema against the meta-schema, with ``format: regex`` (every ``pattern`` and
``patternProperties`` key) checked by RE2.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # refusals are reported to the user, not to stderr


class UserRegexError(ValueError):
    """A pattern RE2 cannot run (syntax error, backreference, lookaround...)."""


@functools.lru_cache(maxsize=256)
def compile_user_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2, or ``UserRegexError`` saying why it cannot be."""
    if not isinstance(pattern, str):
        raise UserRegexError("A regular expression must be a string.")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise UserRegexError(
            f"Not a supported regular expression {pattern!r}: {reason}. Patterns run on RE2 "
            "(linear time): backreferences and lookaround are not available."
        ) from None


def regex_search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text`` (JSON Schema and ``re.search``)."""
    return compile_user_regex(pattern).search(text) is not None


# --- JSON Schema keywords that match regexes, on RE2 --------------------------------------


def _matches(pattern: str, text: str) -> bool:
    """``regex_search``, with a pattern RE2 refuses reported as a validation error."""
    try:
        return regex_search(pattern, text)
    except UserRegexError as exc:
        raise _UnsupportedPattern(str(exc)) from None


class _UnsupportedPattern(Exception):
    """A schema saved before patterns were checked holds one RE2 cannot run."""


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string"):
        try:
            matched = _matches(patrn, instance)
        except _UnsupportedPattern as exc:
            yield ValidationError(str(exc))
            return
        if not matched:
            yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            try:
                matched = _matches(pattern, key)
            except _UnsupportedPattern as exc:
                yield ValidationError(str(exc))
                break
            if matched:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    """Keys of ``instance`` matched neither by ``properties`` nor ``patternProperties``."""
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for key in instance:
        if key in properties:
            continue
        if any(_safe_matches(p, key) for p in patterns):
            continue
        yield key


def _safe_matches(pattern: str, text: str) -> bool:
    """A refused pattern matches nothing (``patternProperties`` reports it)."""
    try:
        return _matches(pattern, text)
    except _UnsupportedPattern:
        return False


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = set(_additional(instance, schema))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(each) for each in sorted(extras))
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{listed} {verb} not match any of the regexes: {patterns}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {verb} unexpected)"
            )


def _is_valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> list[str]:
    """The keys of ``instance`` that ``schema`` evaluates (for ``unevaluatedProperties``).

    jsonschema's ``find_evaluated_property_keys_by_schema``, with ``patternProperties``
    matched on RE2.
    """
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []
    for keyword in ("$ref", "$dynamicRef"):
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys += _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys += (
                key
                for key, value in instance.items()
                if _is_valid(validator.descend(value, subschema))
            )
    for pattern in schema.get("patternProperties", {}):
        keys += (key for key in instance if _safe_matches(pattern, key))
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _is_valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    bad = [
        key
        for key in instance
        if key not in evaluated
        and not _is_valid(validator.descend(instance[key], unevaluated, path=key, schema_path=key))
    ]
    if bad:
        listed = ", ".join(repr(each) for each in sorted(bad, key=str))
        verb = "was" if len(bad) == 1 else "were"
        if unevaluated is False:
            yield ValidationError(
                f"Unevaluated properties are not allowed ({listed} {verb} unexpected)"
            )
        else:
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({listed} {verb} unevaluated and invalid)"
            )


def _reference(validator: Any, ref: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``$ref`` and ``$dynamicRef``: one that does not resolve (schemas are never fetched)
    or that loops forever is a validation error, not a crash."""
    try:
        yield from validator._validate_reference(ref=ref, instance=instance)
    except Unresolvable:
        yield ValidationError(f"$ref {ref!r} cannot be resolved")
    except RecursionError:
        yield ValidationError(f"$ref {ref!r} nests too deeply")


def _is_user_regex(value: object) -> bool:
    if isinstance(value, str):
        compile_user_regex(value)
    return True


FORMAT_CHECKER = FormatChecker(formats=())
FORMAT_CHECKER.checkers = {
    **Draft202012Validator.FORMAT_CHECKER.checkers,
    "regex": (_is_user_regex, UserRegexError),
}

RE2Draft202012Validator: Any = validators.extend(
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
        "$ref": _reference,
        "$dynamicRef": _reference,
    },
    format_checker=FORMAT_CHECKER,
)


def check_schema(schema: Any) -> None:
    """Raise ``SchemaError`` unless ``schema`` is a JSON Schema 2020-12 whose regexes RE2 runs.

    The error's ``path`` is where in the schema the problem is (``properties/name/pattern``).
    """
    meta = RE2Draft202012Validator(
        RE2Draft202012Validator.META_SCHEMA, format_checker=FORMAT_CHECKER
    )
    error = best_match(meta.iter_errors(schema))
    if error is not None:
        if error.validator == "format" and isinstance(error.cause, UserRegexError):
            error.message = str(error.cause)
        raise SchemaError.create_from(error)
    _check_references(schema)


_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})  # hold data, not schemas


def _check_references(schema: Any) -> None:
    """Every ``$ref`` must resolve inside the schema (nothing is fetched from elsewhere).

    Skipped when a subschema sets its own ``$id`` (its refs resolve against that base);
    those are still reported when data is validated.
    """
    refs: list[tuple[list[Any], str]] = []
    stack: list[tuple[list[Any], Any]] = [([], schema)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if path and "$id" in node:
                return
            if isinstance(node.get("$ref"), str):
                refs.append(([*path, "$ref"], node["$ref"]))
            stack.extend(([*path, k], v) for k, v in node.items() if k not in _DATA_KEYWORDS)
        elif isinstance(node, list):
            stack.extend(([*path, i], v) for i, v in enumerate(node))
    if not refs:
        return
    resolver = RE2Draft202012Validator(schema)._resolver
    for path, ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise SchemaError(
                f"$ref {ref!r} cannot be resolved: it must point inside this schema", path=path
            ) from None


@functools.lru_cache(maxsize=512)
def _cached(schema_json: str) -> Validator:
    return RE2Draft202012Validator(json.loads(schema_json))


def validator(schema: dict[str, Any]) -> Validator:
    """A validator for ``schema`` that matches regexes on RE2 (cached per distinct schema)."""
    return _cached(json.dumps(schema, sort_keys=True))
