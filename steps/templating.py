"""Jinja templates and expressions rendered in a sandbox with bounded size and time."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from steps.errors import TemplateError

MAX_OUTPUT_CHARS = 100_000
MAX_RENDER_SECONDS = 2.0
MAX_RANGE = 100_000
MAX_OPERAND_SIZE = 1_000_000


class _Budget:
    """A render's deadline, checked from loops, calls and operators."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        """Stop the render once its time is up."""
        if time.monotonic() > self.deadline:
            raise TemplateError(f"template took longer than {MAX_RENDER_SECONDS:g}s to render")


class ConveyorSandbox(SandboxedEnvironment):
    """A sandbox that also bounds ``range``, ``*``/``**`` and render time."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, cache_size=1000)
        self._local = threading.local()
        self.globals["range"] = self._bounded_range

    @property
    def budget(self) -> _Budget | None:
        """This thread's render budget (worker threads render concurrently)."""
        return getattr(self._local, "budget", None)

    @budget.setter
    def budget(self, value: _Budget | None) -> None:
        self._local.budget = value

    def _bounded_range(self, *args: int) -> Iterator[int]:
        """``range`` capped at MAX_RANGE items that checks the deadline as it goes."""
        r = range(*args)
        if len(r) > MAX_RANGE:
            raise TemplateError(f"range() of {len(r)} items is over the limit of {MAX_RANGE}")
        for i, value in enumerate(r):
            if i % 1000 == 0 and self.budget:
                self.budget.check()
            yield value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse operations whose result would be huge."""
        if self.budget:
            self.budget.check()
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise TemplateError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    if len(seq) * n > MAX_OPERAND_SIZE:
                        raise TemplateError("result of '*' would be too large")
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Check the deadline on every call a template makes."""
        if self.budget:
            self.budget.check()
        return super().call(__context, __obj, *args, **kwargs)


_env = ConveyorSandbox()


@functools.lru_cache(maxsize=2048)
def _compile(source: str) -> Any:
    return _env.from_string(source)


@functools.lru_cache(maxsize=2048)
def _compile_expression(source: str) -> Any:
    return _env.compile_expression(source)


def render(source: str, variables: dict[str, Any]) -> str:
    """Render a template string; any failure is a ``TemplateError`` with a clear message."""
    if "{" not in source:
        return source
    try:
        template = _compile(source)
        budget = _env.budget = _Budget(MAX_RENDER_SECONDS)
        parts: list[str] = []
        size = 0
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"template output is over {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
            budget.check()
        return "".join(parts)
    except TemplateError:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message} (line {exc.lineno})") from exc
    except SecurityError as exc:
        raise TemplateError(f"template refused by the sandbox: {exc}") from exc
    except UndefinedError as exc:
        raise TemplateError(f"template variable is undefined: {exc.message}") from exc
    except Exception as exc:  # anything a template can raise fails the entity, not the worker
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _env.budget = None


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a Jinja expression such as ``entity.data.price > 100``."""
    try:
        compiled = _compile_expression(expression)
        _env.budget = _Budget(MAX_RENDER_SECONDS)
        return compiled(**variables)
    except TemplateError:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateError(f"expression syntax error: {exc.message}") from exc
    except SecurityError as exc:
        raise TemplateError(f"expression refused by the sandbox: {exc}") from exc
    except UndefinedError as exc:
        raise TemplateError(f"expression variable is undefined: {exc.message}") from exc
    except Exception as exc:  # see render()
        raise TemplateError(f"expression failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _env.budget = None


def check_syntax(source: str) -> str | None:
    """None when ``source`` parses as a template, else the syntax error."""
    try:
        _env.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} (line {exc.lineno})"
    return None


def check_expression(source: str) -> str | None:
    """None when ``source`` parses as an expression, else the syntax error."""
    try:
        _compile_expression(source)
    except TemplateSyntaxError as exc:
        return f"expression syntax error: {exc.message}"
    return None
