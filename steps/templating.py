"""Jinja templates and expressions rendered in a sandbox with bounded size, memory and time.

Four layers keep a hostile template from hurting the worker:

1. Jinja's ``ImmutableSandboxedEnvironment`` refuses Python internals (``''.__class__``,
   ``_``-names) and every method that changes a list, dict or set (``entity.data.update``,
   ``run.update``, ``l.extend``); only an allow-list of ``str`` methods may be called. Each
   render also gets its own copy of the run context, so nothing one entity does reaches
   another.
2. Every operation that can allocate a lot in one C-level step is checked *before* it runs,
   from the sizes of its operands: ``*``, ``+``, ``%``, ``~``, ``range``, captured blocks,
   ``str`` methods such as ``join``, ``ljust`` and ``replace``, every filter (``center``,
   ``indent``, ``format``, ``join``, ``replace``, ``slice``, ``batch``, ``sum``, ...), and
   turning a list or dict into text (``{{ [s] * 1000 }}``, ``tojson``, ``'%s' % x``), whose
   size is counted without building the text.
3. Each render has a memory budget: what those operations allocate is added up, so a loop
   (``range(100000)|map('center', 999999)|list``) cannot pile up more than
   ``MAX_RENDER_BYTES``. Rendered output is capped at ``MAX_OUTPUT_CHARS``.
4. Time is checked cooperatively: on every loop iteration, call, operator, filter and output
   chunk, a render past ``MAX_RENDER_SECONDS`` stops. No thread is interrupted from outside,
   so tracers and debuggers are unaffected.

A template reading an undefined name fails; ``a.b.c`` of an undefined ``a`` stays undefined
until it is used, so ``steps.skipped.output | default('none')`` and ``is defined`` work.

Every failure surfaces as ``steps.errors.TemplateError``; the entity fails, the worker lives.
"""

from __future__ import annotations

import copy
import functools
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    nodes,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import do_indent, sync_do_slice
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from steps.errors import TemplateError

MAX_OUTPUT_CHARS = 100_000
MAX_RENDER_SECONDS = 2.0
MAX_RANGE = 100_000
MAX_OPERAND_SIZE = 1_000_000
MAX_RENDER_BYTES = 32_000_000
MAX_VALUE_CHARS = 10_000_000
MAX_FORMAT_WIDTH = 10_000
MAX_INT_BITS = 65_536

# ``str`` methods a template may call; the rest (translate, expandtabs, maketrans, ...) are
# refused. The size-changing ones among these are checked in ``ConveyorSandbox.call``.
STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "center",
        "count",
        "endswith",
        "find",
        "format",
        "format_map",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "join",
        "ljust",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "replace",
        "rfind",
        "rindex",
        "rjust",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "zfill",
    }
)
# ``str`` methods that allocate nothing big.
_STR_QUERIES = frozenset(
    {"count", "endswith", "find", "index", "rfind", "rindex", "startswith"}
    | {name for name in STR_METHODS if name.startswith("is")}
)
# ``str`` methods that make one object per piece.
_STR_SPLITS = frozenset({"split", "rsplit", "splitlines", "partition", "rpartition"})
# Filters that turn a list or dict into text: its text size is counted before they run.
_STRINGIFYING_FILTERS = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "lower",
        "pprint",
        "replace",
        "safe",
        "string",
        "striptags",
        "title",
        "tojson",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)
# How much bigger than its input a filter's result can be.
_FILTER_GROWTH = {"urlencode": 12, "tojson": 6, "e": 6, "escape": 6, "forceescape": 6, "urlize": 4}
# Filters whose result does not grow with their input: nothing to count.
_FREE_FILTERS = frozenset(
    {"abs", "attr", "count", "d", "default", "first", "float", "int", "last", "length"}
    | {"max", "min", "random", "round"}
)
# Filters that keep one object per character of a string they iterate over.
_ITERATING_FILTERS = frozenset({"list", "unique", "sort", "batch", "slice", "groupby", "wordcount"})
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_POINTER = 8  # bytes per list slot
_OBJECT = 64  # bytes a new small object (a str, list or tuple) takes at least
_CONTEXT_KWARGS = frozenset({"_loop_vars", "_block_vars"})  # added by Jinja to calls


class _Undefined(ChainableUndefined, StrictUndefined):
    """Strict when used (printed, compared, iterated), chainable when read through:
    ``steps.skipped.output`` is undefined, not an error, so ``| default`` applies."""

    __slots__ = ()


class _Budget:
    """A render's deadline and memory allowance, checked from loops, calls and operators."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.allocated = 0

    def check(self) -> None:
        """Stop the render once its time is up."""
        if time.monotonic() > self.deadline:
            raise TemplateError(f"template took longer than {MAX_RENDER_SECONDS:g}s to render")

    def charge(self, nbytes: int) -> None:
        """Count an allocation about to happen; refuse it past the render's allowance."""
        self.allocated += nbytes
        if self.allocated > MAX_RENDER_BYTES:
            raise TemplateError(
                f"template would allocate more than {MAX_RENDER_BYTES // 1_000_000} MB"
            )


_state = threading.local()  # this thread's render budget (worker threads render concurrently)


def _budget() -> _Budget | None:
    return getattr(_state, "budget", None)


def _tick() -> None:
    budget = _budget()
    if budget is not None:
        budget.check()


def _charge(nbytes: int) -> None:
    budget = _budget()
    if budget is not None:
        budget.charge(nbytes)


def _str_bytes(text: str, count: int | None = None) -> int:
    """Bytes ``count`` characters like ``text``'s take (up to 4 per character)."""
    n = len(text) if count is None else count
    return n if text.isascii() else 4 * n


def _too_large(what: str) -> TemplateError:
    return TemplateError(f"{what} would be larger than {MAX_OPERAND_SIZE} items")


def _check_size(size: int, what: str) -> None:
    if size > MAX_OPERAND_SIZE:
        raise _too_large(what)


def _text_size(value: Any, limit: int, what: str) -> int:
    """The length of ``str(value)``, counted without building it; over ``limit`` raises.

    ``[s] * 1000`` is a small list, but its text is a thousand copies of ``s``: this is what
    keeps ``{{ [s] * 1000 }}``, ``tojson`` or ``'%s' % x`` from allocating gigabytes.
    An undefined value anywhere inside fails as it would when printed.
    """
    total = 0
    stack = [value]
    visited = 0
    while stack:
        item = stack.pop()
        visited += 1
        if visited % 1000 == 0:
            _tick()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, Undefined):
            item._fail_with_undefined_error()
        elif item is None or isinstance(item, bool | float):
            total += 8
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            for key, child in item.items():
                stack.append(key)
                stack.append(child)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):
            total += 13
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))  # shown by repr
        else:
            total += 100  # a generator, loop or macro: a short repr
        if total > limit:
            raise TemplateError(f"{what} would be over {limit} characters")
    return total


def _check_percent_args(args: Any) -> None:
    """``'%s' % x``: the text of ``x`` is counted before it is built."""
    if not isinstance(args, str | int | float):
        _charge(_text_size(args, MAX_OPERAND_SIZE, "formatted value"))


def _check_format_spec(fmt: str) -> None:
    """Refuse ``'{:>999999999}'``-style widths and nested (argument-given) widths."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format will raise the real error
    for _literal, _name, spec, _conv in fields:
        if spec and (
            "{" in spec or any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec))
        ):
            raise TemplateError(f"format width or precision over {MAX_FORMAT_WIDTH}")


def _check_percent_format(fmt: str) -> None:
    """Refuse ``'%0999999999d'``-style widths and ``*`` widths."""
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group == "*" or (group and int(group) > MAX_FORMAT_WIDTH):
                raise TemplateError(f"format width or precision over {MAX_FORMAT_WIDTH}")


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def _as_text(part: Any, room: int) -> str:
    """``str(part)``, its size counted first when it is not text already."""
    if isinstance(part, str):
        return part
    _text_size(part, max(room, 0), "joined string")
    return str(part)


def _bounded_join(parts: Iterable[Any], sep: str = "") -> str:
    """``sep.join`` that stops before building a string over the size limit."""
    out: list[str] = []
    size = 0
    wide = not sep.isascii()
    for part in parts:
        _tick()
        text = _as_text(part, MAX_OPERAND_SIZE - size)
        size += len(text) + len(sep)
        _check_size(size, "joined string")
        wide = wide or not text.isascii()
        out.append(text)
    _charge(size * (4 if wide else 1) + _POINTER * len(out))
    return sep.join(out)


def _str_join(sep: str, iterable: Any) -> str:
    """``sep.join(iterable)``, refused before the result would be over the size limit."""
    parts: list[Any] = []
    size = 0
    for i, part in enumerate(iterable):
        if i % 1000 == 0:
            _tick()
        size += _length(part) + len(sep)
        _check_size(size, "result of join()")
        parts.append(part)
    _charge(size * 4 + _POINTER * len(parts))
    return sep.join(parts)


def _checked_loop(loop: nodes.For) -> None:
    """``{% for x in items %}`` → ``for x in environment.loop_checked(items)``."""
    call = loop.iter
    if not (
        isinstance(call, nodes.Call)
        and isinstance(call.node, nodes.EnvironmentAttribute)
        and call.node.name == "loop_checked"
    ):
        loop.iter = nodes.Call(
            nodes.EnvironmentAttribute("loop_checked"), [call], [], None, None, lineno=call.lineno
        )


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` and ``{% for %}`` so their size and time are checked."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        """Every loop checks the budget on each item, whatever it iterates over."""
        for loop in node.find_all(nodes.For):
            _checked_loop(loop)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """``str_join((a, b))`` → ``environment.concat_checked((a, b))``."""
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _charged_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` that first checks the time, and counts what it may allocate from its input."""
    if name in _FREE_FILTERS:
        return func
    offset = 0 if getattr(func, "jinja_pass_arg", None) is None else 1
    stringifies = name in _STRINGIFYING_FILTERS
    iterates = name in _ITERATING_FILTERS
    growth = _FILTER_GROWTH.get(name, 1)

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _charge(_OBJECT)  # a filter makes a new object, mapped over a million items or not
        value = args[offset] if len(args) > offset else None
        if isinstance(value, str):
            if iterates:  # one object per character: cached for ASCII, new ones otherwise
                _charge(len(value) * (_POINTER if value.isascii() else 80))
            else:
                _charge(_str_bytes(value) * growth)
        elif isinstance(value, Namespace) or (
            stringifies and isinstance(value, list | tuple | dict | set | frozenset)
        ):
            size = _text_size(value, MAX_OPERAND_SIZE, f"input of {name}")
            _charge(4 * size * growth)
        elif isinstance(value, list | tuple | dict | set | frozenset):
            _charge(_POINTER * len(value))
        return func(*args, **kwargs)

    return checked


class ConveyorSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox that also bounds sizes, memory, ``str`` methods and time."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            undefined=_Undefined, autoescape=False, cache_size=1000, finalize=self._finalize
        )
        self.globals["range"] = self._bounded_range
        self.globals.pop("lipsum", None)
        self.filters.update(
            {
                "center": self._filter_center,
                "indent": self._filter_indent,
                "format": self._filter_format,
                "join": self._filter_join,
                "replace": self._filter_replace,
                "slice": self._filter_slice,
                "batch": self._filter_batch,
                "sum": self._filter_sum,
            }
        )
        self.filters = {name: _charged_filter(name, f) for name, f in self.filters.items()}

    # -- time -----------------------------------------------------------------------------

    def loop_checked(self, iterable: Any) -> Iterator[Any]:
        """A ``{% for %}`` iterable that checks the deadline on every item."""
        for item in iterable:
            _tick()
            yield item

    # -- sizes ----------------------------------------------------------------------------

    @staticmethod
    def _finalize(value: Any) -> Any:
        """``{{ value }}``: a list or dict is measured before it is turned into text."""
        if not isinstance(value, str):
            _text_size(value, MAX_OUTPUT_CHARS, "template output")
        return value

    def concat(self, parts: Iterable[Any]) -> str:  # type: ignore[override]
        """Join captured output (``{% set %}`` blocks, macros, ``call``) within the limit."""
        return _bounded_join(parts)

    def concat_checked(self, parts: Iterable[Any]) -> str:
        """The ``~`` operator, within the size limit."""
        _tick()
        return _bounded_join(parts)

    def _bounded_range(self, *args: int) -> Iterator[int]:
        """``range`` capped at MAX_RANGE items that checks the deadline as it goes."""
        r = range(*args)
        if len(r) > MAX_RANGE:
            raise TemplateError(f"range() of {len(r)} items is over the limit of {MAX_RANGE}")
        for i, value in enumerate(r):
            if i % 1000 == 0:
                _tick()
            yield value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse operations whose result would be huge."""
        _tick()
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``a.b`` on a mapping is its key ``b`` first: entity data and step ids named
        ``items``, ``keys`` or ``values`` must not resolve to the dict's methods."""
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Jinja's immutable rules, plus: only the allow-listed ``str`` methods."""
        if isinstance(obj, str) and callable(value) and attr not in STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``'{:>9999999}'.format(x)`` is refused before it allocates."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        _check_format_spec(fmt)
        name = name_of(value)

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_str_call(fmt, name, args, kwargs)  # the arguments' text is counted first
            return wrapped(*args, **kwargs)

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Check the deadline on every call, and the size of growing ``str`` methods."""
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = name_of(__obj)
            given = {k: v for k, v in kwargs.items() if k not in _CONTEXT_KWARGS}
            if name == "join" and len(args) == 1 and not given:
                return _str_join(owner, args[0])
            _check_str_call(owner, name, args, given)
        elif isinstance(owner, list | dict | tuple | set) and name_of(__obj) == "copy":
            _charge(_POINTER * len(owner))
        return super().call(__context, __obj, *args, **kwargs)

    # -- filters that can grow their input --------------------------------------------------

    def _filter_center(self, value: Any, width: int = 80) -> str:
        _check_size(int(width), "centered string")
        text = str(value)
        _charge(_str_bytes(text, int(width)))
        return text.center(width)

    def _filter_indent(
        self, value: Any, width: int | str = 4, first: bool = False, blank: bool = False
    ) -> str:
        text = str(value)
        step = len(width) if isinstance(width, str) else int(width)
        size = len(text) + step * (text.count("\n") + 1)
        _check_size(size, "indented string")
        _charge(_str_bytes(text, size))
        return do_indent(text, width, first, blank)

    def _filter_format(self, value: Any, *args: Any, **kwargs: Any) -> str:
        if args and kwargs:
            raise TemplateError("format filter takes positional or keyword arguments, not both")
        text = str(value)
        _check_percent_format(text)
        _check_percent_args(kwargs or args)
        return text % (kwargs or args)

    def _filter_join(self, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        if attribute is not None:
            from jinja2.filters import make_attrgetter

            value = map(make_attrgetter(self, attribute), value)
        return _bounded_join(value, str(d))

    def _filter_replace(self, value: Any, old: str, new: str, count: int | None = None) -> str:
        text = str(value)
        _check_replace(text, str(old), str(new), -1 if count is None else count)
        return text.replace(str(old), str(new), -1 if count is None else count)

    def _filter_slice(self, value: Iterable[Any], slices: int, fill_with: Any = None) -> Any:
        if not 0 < int(slices) <= MAX_RANGE:
            raise TemplateError(f"slice() count must be between 1 and {MAX_RANGE}")
        return sync_do_slice(list(value), slices, fill_with)

    def _filter_batch(
        self, value: Iterable[Any], linecount: int, fill_with: Any = None
    ) -> Iterator[list[Any]]:
        if not 0 < int(linecount) <= MAX_RANGE:
            raise TemplateError(f"batch() size must be between 1 and {MAX_RANGE}")
        from jinja2.filters import do_batch

        return _charged_chunks(do_batch(value, linecount, fill_with))

    def _filter_sum(self, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
        if attribute is not None:
            from jinja2.filters import make_attrgetter

            iterable = map(make_attrgetter(self, attribute), iterable)
        total = start
        for item in iterable:
            _tick()
            if isinstance(total, list | tuple):
                _check_size(len(total) + _length(item), "sum()")
                _charge(_POINTER * (len(total) + _length(item)))
            total = total + item
        return total


def name_of(func: Any) -> str:
    """A method's name (``"join"`` for ``"".join``)."""
    return str(getattr(func, "__name__", ""))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**``, ``+`` and ``%`` whose result would be over a size limit, and
    count what the others allocate."""
    both_int = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and isinstance(right, int | float):
        if abs(right) > 100 or (both_int and left.bit_length() * right > MAX_INT_BITS):
            raise TemplateError("exponent too large")
    elif operator == "*":
        if both_int and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateError("result of '*' is too large a number")
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int) and n > 0:
                _check_size(len(seq) * n, "result of '*'")
                per_item = _str_bytes(seq, 1) if isinstance(seq, str) else _POINTER
                _charge(_OBJECT + per_item * len(seq) * n)
    elif operator == "+" and isinstance(left, str | list | tuple):
        _charge(_OBJECT)
        size = len(left) + _length(right)
        _check_size(size, "result of '+'")
        wide = isinstance(left, str) and not (left.isascii() and _ascii(right))
        _charge(size * (4 if wide else 1 if isinstance(left, str) else _POINTER))
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left)
        _check_percent_args(right)
        _charge(_str_bytes(left))


def _charged_chunks(chunks: Iterator[list[Any]]) -> Iterator[list[Any]]:
    """``batch``'s lists, each counted as it is made."""
    for chunk in chunks:
        _charge(_OBJECT + _POINTER * len(chunk))
        yield chunk


def _ascii(value: Any) -> bool:
    return not isinstance(value, str) or value.isascii()


def _check_replace(text: str, old: str, new: str, count: int) -> None:
    """Refuse a ``replace`` whose result would be over the size limit."""
    hits = text.count(old) if old else len(text) + 1
    if count >= 0:
        hits = min(hits, count)
    size = len(text) + hits * max(len(new) - len(old), 0)
    _check_size(size, "result of replace()")
    _charge(size if text.isascii() and new.isascii() else 4 * size)


def _check_str_call(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Size checks for the allow-listed ``str`` methods, before they run."""
    if name in _STR_QUERIES:
        return
    _charge(_OBJECT)
    if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int):
        _check_size(args[0], f"result of {name}()")
        _charge(_str_bytes(owner, max(args[0], len(owner))))
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _check_replace(owner, str(args[0]), str(args[1]), int(count))
    elif name == "join":
        items = args[0] if args else kwargs.get("iterable", ())
        _charge(_POINTER * _length(items))
    elif name in ("format", "format_map"):
        size = len(owner)
        for arg in (*args, *kwargs.values()):
            size += _text_size(arg, MAX_OPERAND_SIZE, f"argument of {name}()")
        _check_size(size, f"result of {name}()")
        _charge(4 * size)
    elif name in _STR_SPLITS:
        _charge(24 * len(owner))  # a piece can be a whole object per two characters
    else:
        _charge(_str_bytes(owner))


_env = ConveyorSandbox()


@functools.lru_cache(maxsize=2048)
def _compile(source: str) -> Any:
    return _env.from_string(source)


@functools.lru_cache(maxsize=2048)
def _compile_expression(source: str) -> Any:
    return _env.compile_expression(source, undefined_to_none=False)


def _own_copy(variables: dict[str, Any]) -> dict[str, Any]:
    """The variables with a private copy of ``run``: it is shared by every entity of a
    chunk (and names their side effects), so no render may see another's changes."""
    run = variables.get("run")
    if isinstance(run, dict):
        return {**variables, "run": copy.deepcopy(run)}
    return variables


def _guarded(kind: str, work: Callable[[], Any]) -> Any:
    """Run ``work`` under a fresh budget; turn every failure into TemplateError."""
    _state.budget = _Budget(MAX_RENDER_SECONDS)
    try:
        return work()
    except TemplateError:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{kind} syntax error: {exc.message} (line {exc.lineno})") from exc
    except SecurityError as exc:
        raise TemplateError(f"{kind} refused by the sandbox: {exc}") from exc
    except UndefinedError as exc:
        raise TemplateError(f"{kind} variable is undefined: {exc.message}") from exc
    except RecursionError as exc:
        raise TemplateError(f"{kind} recursed too deeply") from exc
    except MemoryError as exc:
        raise TemplateError(f"{kind} ran out of memory") from exc
    except Exception as exc:  # anything a template can raise fails the entity, not the worker
        raise TemplateError(f"{kind} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _state.budget = None


def render(source: str, variables: dict[str, Any]) -> str:
    """Render a template string; any failure is a ``TemplateError`` with a clear message."""
    if "{" not in source:
        return source

    def work() -> str:
        template = _compile(source)
        parts: list[str] = []
        size = 0
        for chunk in template.generate(_own_copy(variables)):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"template output is over {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
            _tick()
        return "".join(parts)

    return str(_guarded("template", work))


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a Jinja expression such as ``entity.data.price > 100``."""

    def work() -> Any:
        value = _compile_expression(expression)(**_own_copy(variables))
        if isinstance(value, Undefined):
            bool(value)  # raises the UndefinedError with its message
        return value

    return _guarded("expression", work)


def evaluate_data(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate an expression into JSON data (lists, objects, strings, numbers...).

    Iterables become lists and other objects strings, inside the render's budget: a lazy
    ``range(100000)|map('center', 999999)`` is refused while it is being built, not after.
    """

    def work() -> Any:
        value = _compile_expression(expression)(**_own_copy(variables))
        if isinstance(value, Undefined):
            bool(value)
        return _to_data(value, [0])

    return _guarded("expression", work)


def _to_data(value: Any, tally: list[int]) -> Any:
    """``value`` as JSON data; ``tally[0]`` counts its text size, capped at MAX_VALUE_CHARS."""
    tally[0] += 2
    _tick()
    if tally[0] > MAX_VALUE_CHARS:
        raise TemplateError(f"the value would be over {MAX_VALUE_CHARS} characters")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        tally[0] += len(value)
        if tally[0] > MAX_VALUE_CHARS:
            raise TemplateError(f"the value would be over {MAX_VALUE_CHARS} characters")
        return str(value)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, dict):
        return {str(k): _to_data(v, tally) for k, v in value.items()}
    if isinstance(value, list | tuple | set) or hasattr(value, "__next__"):
        items: list[Any] = []
        for item in value:
            if len(items) >= MAX_RANGE:
                raise TemplateError(f"a list over {MAX_RANGE} items")
            items.append(_to_data(item, tally))
        _charge(_POINTER * len(items))
        return items
    tally[0] += _text_size(value, MAX_VALUE_CHARS - tally[0], "the value")
    return str(value)


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
