"""Jinja templates and expressions rendered in a sandbox with bounded size and time.

Three layers keep a hostile template from hurting the worker:

1. Jinja's ``SandboxedEnvironment`` refuses Python internals (``''.__class__``, ``_``-names),
   and only an allow-list of ``str`` methods may be called.
2. Every operation that can allocate a lot in one C-level step is checked *before* it runs:
   ``*``, ``+``, ``%``, ``~``, ``range``, captured blocks, ``str`` methods such as ``ljust`` and
   ``replace``, and the filters ``center``, ``indent``, ``format``, ``join``, ``replace``,
   ``slice``, ``batch`` and ``sum``. Rendered output is capped at ``MAX_OUTPUT_CHARS``.
3. A render that runs past ``MAX_RENDER_SECONDS`` (a loop over a big string inside another,
   say) is interrupted by a watchdog thread that raises in the rendering thread.

Every failure surfaces as ``steps.errors.TemplateError``; the entity fails, the worker lives.
"""

from __future__ import annotations

import ctypes
import functools
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import do_indent, sync_do_slice
from jinja2.sandbox import SandboxedEnvironment

from steps.errors import TemplateError

MAX_OUTPUT_CHARS = 100_000
MAX_RENDER_SECONDS = 2.0
MAX_RANGE = 100_000
MAX_OPERAND_SIZE = 1_000_000
MAX_FORMAT_WIDTH = 10_000
MAX_INT_BITS = 65_536
WATCHDOG_POLL_SECONDS = 0.05

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
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class _RenderInterrupted(BaseException):
    """Raised inside a rendering thread by the watchdog (a BaseException: filters that
    catch ``Exception`` must not swallow it)."""


class _Watchdog:
    """One daemon thread that interrupts renders running past their deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, list[Any]] = {}  # thread id -> [deadline, fired]
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        """Watch the calling thread for ``seconds``."""
        with self._lock:
            self._armed[threading.get_ident()] = [time.monotonic() + seconds, False]
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="conveyor-template-watchdog", daemon=True
                )
                self._thread.start()

    def disarm(self) -> bool:
        """Stop watching the calling thread; True when it had been interrupted.

        An interrupt that was sent but not yet raised is withdrawn, so it can never land
        in the caller's code after the render.
        """
        tid = threading.get_ident()
        with self._lock:
            entry = self._armed.pop(tid, None)
            if entry is not None and entry[1]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
        return bool(entry and entry[1])

    def _watch(self) -> None:
        while True:
            time.sleep(WATCHDOG_POLL_SECONDS)
            now = time.monotonic()
            with self._lock:
                for tid, entry in self._armed.items():
                    if not entry[1] and now > entry[0]:
                        entry[1] = True
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(tid), ctypes.py_object(_RenderInterrupted)
                        )


_watchdog = _Watchdog()


def _too_large(what: str) -> TemplateError:
    return TemplateError(f"{what} would be larger than {MAX_OPERAND_SIZE} items")


def _check_size(size: int, what: str) -> None:
    if size > MAX_OPERAND_SIZE:
        raise _too_large(what)


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


def _bounded_join(parts: Iterable[Any], sep: str = "") -> str:
    """``sep.join`` that stops before building a string over the size limit."""
    out: list[str] = []
    size = 0
    for part in parts:
        text = part if isinstance(part, str) else str(part)
        size += len(text) + len(sep)
        _check_size(size, "joined string")
        out.append(text)
    return sep.join(out)


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` through ``environment.concat_checked`` so its size is checked."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """``str_join((a, b))`` → ``environment.concat_checked((a, b))``."""
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Budget:
    """A render's deadline, checked from loops, calls and operators."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        """Stop the render once its time is up."""
        if time.monotonic() > self.deadline:
            raise TemplateError(f"template took longer than {MAX_RENDER_SECONDS:g}s to render")


class ConveyorSandbox(SandboxedEnvironment):
    """A sandbox that also bounds sizes, allowed ``str`` methods and render time."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, cache_size=1000)
        self._local = threading.local()
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

    # -- time -----------------------------------------------------------------------------

    @property
    def budget(self) -> _Budget | None:
        """This thread's render budget (worker threads render concurrently)."""
        return getattr(self._local, "budget", None)

    @budget.setter
    def budget(self, value: _Budget | None) -> None:
        self._local.budget = value

    def _tick(self) -> None:
        if self.budget:
            self.budget.check()

    # -- sizes ----------------------------------------------------------------------------

    def concat(self, parts: Iterable[Any]) -> str:  # type: ignore[override]
        """Join captured output (``{% set %}`` blocks, macros, ``call``) within the limit."""
        return _bounded_join(parts)

    def concat_checked(self, parts: Iterable[Any]) -> str:
        """The ``~`` operator, within the size limit."""
        self._tick()
        return _bounded_join(parts)

    def _bounded_range(self, *args: int) -> Iterator[int]:
        """``range`` capped at MAX_RANGE items that checks the deadline as it goes."""
        r = range(*args)
        if len(r) > MAX_RANGE:
            raise TemplateError(f"range() of {len(r)} items is over the limit of {MAX_RANGE}")
        for i, value in enumerate(r):
            if i % 1000 == 0:
                self._tick()
            yield value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse operations whose result would be huge."""
        self._tick()
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
        """Jinja's rules, plus: only the allow-listed ``str`` methods."""
        if isinstance(obj, str) and callable(value) and attr not in STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``'{:>9999999}'.format(x)`` is refused before it allocates."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_spec(value.__self__)
        return wrapped

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Check the deadline on every call, and the size of growing ``str`` methods."""
        __self._tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_call(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    # -- filters that can grow their input --------------------------------------------------

    def _filter_center(self, value: Any, width: int = 80) -> str:
        _check_size(int(width), "centered string")
        return str(value).center(width)

    def _filter_indent(
        self, value: Any, width: int | str = 4, first: bool = False, blank: bool = False
    ) -> str:
        text = str(value)
        step = len(width) if isinstance(width, str) else int(width)
        _check_size(len(text) + step * (text.count("\n") + 1), "indented string")
        return do_indent(text, width, first, blank)

    def _filter_format(self, value: Any, *args: Any, **kwargs: Any) -> str:
        if args and kwargs:
            raise TemplateError("format filter takes positional or keyword arguments, not both")
        text = str(value)
        _check_percent_format(text)
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

        return do_batch(value, linecount, fill_with)

    def _filter_sum(self, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
        if attribute is not None:
            from jinja2.filters import make_attrgetter

            iterable = map(make_attrgetter(self, attribute), iterable)
        total = start
        for item in iterable:
            self._tick()
            if isinstance(total, list | tuple):
                _check_size(len(total) + _length(item), "sum()")
            total = total + item
        return total


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**``, ``+`` and ``%`` whose result would be over a size limit."""
    both_int = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and isinstance(right, int | float):
        if abs(right) > 100 or (both_int and left.bit_length() * right > MAX_INT_BITS):
            raise TemplateError("exponent too large")
    elif operator == "*":
        if both_int and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateError("result of '*' is too large a number")
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int):
                _check_size(len(seq) * n, "result of '*'")
    elif operator == "+" and isinstance(left, str | list | tuple):
        _check_size(len(left) + _length(right), "result of '+'")
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left)


def _check_replace(text: str, old: str, new: str, count: int) -> None:
    """Refuse a ``replace`` whose result would be over the size limit."""
    if len(new) <= len(old):
        return
    hits = text.count(old) if old else len(text) + 1
    if count >= 0:
        hits = min(hits, count)
    _check_size(len(text) + hits * (len(new) - len(old)), "result of replace()")


def _check_str_call(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Size checks for the allow-listed ``str`` methods that can grow a string."""
    if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int):
        _check_size(args[0], f"result of {name}()")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _check_replace(owner, str(args[0]), str(args[1]), int(count))
    elif name == "join" and args and isinstance(args[0], list | tuple):
        _check_size(
            sum(_length(x) for x in args[0]) + len(owner) * len(args[0]), "result of join()"
        )


_env = ConveyorSandbox()


@functools.lru_cache(maxsize=2048)
def _compile(source: str) -> Any:
    return _env.from_string(source)


@functools.lru_cache(maxsize=2048)
def _compile_expression(source: str) -> Any:
    return _env.compile_expression(source, undefined_to_none=False)


def _guarded(kind: str, work: Callable[[], Any]) -> Any:
    """Run ``work`` under the budget and the watchdog; turn every failure into TemplateError."""
    _env.budget = _Budget(MAX_RENDER_SECONDS)
    try:
        try:
            _watchdog.arm(MAX_RENDER_SECONDS)
            try:
                return work()
            finally:
                _watchdog.disarm()
        except _RenderInterrupted:
            _watchdog.disarm()
            raise TemplateError(
                f"{kind} took longer than {MAX_RENDER_SECONDS:g}s to render"
            ) from None
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
        _env.budget = None


def render(source: str, variables: dict[str, Any]) -> str:
    """Render a template string; any failure is a ``TemplateError`` with a clear message."""
    if "{" not in source:
        return source

    def work() -> str:
        template = _compile(source)
        parts: list[str] = []
        size = 0
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"template output is over {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
            _env._tick()
        return "".join(parts)

    return str(_guarded("template", work))


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a Jinja expression such as ``entity.data.price > 100``."""

    def work() -> Any:
        value = _compile_expression(expression)(**variables)
        if isinstance(value, StrictUndefined):
            bool(value)  # raises the UndefinedError with its message
        return value

    return _guarded("expression", work)


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
