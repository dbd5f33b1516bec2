"""GitHub Actions expressions: `${{ }}` in strings, `if:` conditions, and the contexts they read."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import ReplayError

STATUS_FUNCTIONS = ("success", "failure", "cancelled", "always")


class Strict(dict[str, Any]):
    """A context (or part of one) where a missing property is an error, not null: `matrix.sesion` is a typo."""

    def __init__(self, label: str, items: Mapping[str, Any] | None = None) -> None:
        super().__init__(items or {})
        self.label = label


Context = dict[str, Any]
_TOKEN = re.compile(
    r"\s*(?:(?P<num>0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<str>'(?:[^']|'')*')"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,*])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ReplayError(f"cannot parse expression {expr!r} at {expr[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def to_str(value: Any) -> str:
    """How GitHub writes a value into a string: null is empty, booleans lower case, objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2)
    return str(value)


def truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "")


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        try:
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return math.nan
    return math.nan


def equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return a is b
    if a is None and b is None:
        return True
    if type(a) is type(b) and not isinstance(a, str):
        return bool(a == b)
    return _number(a) == _number(b)


def _compare(a: Any, b: Any) -> float:
    if isinstance(a, str) and isinstance(b, str):
        x, y = a.casefold(), b.casefold()
        return (x > y) - (x < y)
    x2, y2 = _number(a), _number(b)
    if math.isnan(x2) or math.isnan(y2):
        return math.nan
    return (x2 > y2) - (x2 < y2)


def _format(fmt: str, *args: Any) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        index = int(m.group(1))
        if index >= len(args):
            raise ReplayError(f"format({fmt!r}): no argument {index}")
        return to_str(args[index])

    return re.sub(r"\{\{|\}\}|\{(\d+)\}", repl, fmt)


class _Parser:
    """GitHub Actions expression syntax, evaluated while parsing (no side effects, so no short circuit needed)."""

    def __init__(self, expr: str, ctx: Context) -> None:
        self.expr = expr
        self.toks = _tokens(expr)
        self.i = 0
        self.ctx = ctx

    def error(self, what: str) -> ReplayError:
        return ReplayError(f"{what} in expression {self.expr!r}", hint="the replay supports what mnnrepro.yml uses")

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise self.error(f"expected {value or 'more'}")
        self.i += 1
        return tok

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] == value:
            self.i += 1
            return True
        return False

    def parse(self) -> Any:
        value = self.or_()
        rest = self.peek()
        if rest is not None:
            raise self.error(f"unexpected {rest[1]!r}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.accept("||"):
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.eq()
        while self.accept("&&"):
            right = self.eq()
            value = right if truthy(value) else value
        return value

    def eq(self) -> Any:
        value = self.cmp()
        while True:
            if self.accept("=="):
                value = equal(value, self.cmp())
            elif self.accept("!="):
                value = not equal(value, self.cmp())
            else:
                return value

    def cmp(self) -> Any:
        value = self.unary()
        while True:
            tok = self.peek()
            if tok is None or tok[0] != "op" or tok[1] not in ("<", "<=", ">", ">="):
                return value
            self.i += 1
            c = _compare(value, self.unary())
            value = (not math.isnan(c)) and {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0}[tok[1]]

    def unary(self) -> Any:
        if self.accept("!"):
            return not truthy(self.unary())
        return self.postfix(self.primary())

    def postfix(self, value: Any) -> Any:
        while True:
            if self.accept("."):
                kind, name = self.take()
                if kind != "name":
                    raise self.error(f"expected a property name after '.', got {name!r}")
                value = self.member(value, name)
            elif self.accept("["):
                key = self.or_()
                self.take("]")
                value = self.member(value, key)
            else:
                return value

    def member(self, value: Any, key: Any) -> Any:
        if isinstance(value, list):
            n = _number(key)
            return value[int(n)] if not math.isnan(n) and 0 <= int(n) < len(value) else None
        if isinstance(value, dict):
            if not isinstance(key, str):
                key = to_str(key)
            for k, v in value.items():
                if k.casefold() == key.casefold():
                    return v
            if isinstance(value, Strict):
                raise self.error(f"unknown property {value.label}.{key}")
            return None
        if value is None:
            return None
        raise self.error(f"property {to_str(key)!r} of a {type(value).__name__}")

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "op" and text == "(":
            value = self.or_()
            self.take(")")
            return value
        if kind != "name":
            raise self.error(f"unexpected {text!r}")
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low == "null":
            return None
        if self.accept("("):
            args: list[Any] = []
            if not self.accept(")"):
                args.append(self.or_())
                while self.accept(","):
                    args.append(self.or_())
                self.take(")")
            return self.call(low, text, args)
        for name, value in self.ctx.items():
            if name.casefold() == low and not name.startswith("__"):
                return value
        known = ", ".join(sorted(k for k in self.ctx if not k.startswith("__")))
        raise self.error(f"unknown context {text!r} (known here: {known})")

    def call(self, low: str, name: str, args: list[Any]) -> Any:
        status = str(self.ctx.get("__status", "success"))
        if low in STATUS_FUNCTIONS:
            if args:
                raise self.error(f"{name}() takes no arguments")
            return {
                "always": True,
                "success": status == "success",
                "failure": status == "failure",
                "cancelled": status == "cancelled",
            }[low]
        if low == "contains" and len(args) == 2:
            hay, needle = args
            if isinstance(hay, list):
                return any(equal(x, needle) for x in hay)
            return to_str(needle).casefold() in to_str(hay).casefold()
        if low == "startswith" and len(args) == 2:
            return to_str(args[0]).casefold().startswith(to_str(args[1]).casefold())
        if low == "endswith" and len(args) == 2:
            return to_str(args[0]).casefold().endswith(to_str(args[1]).casefold())
        if low == "format" and args:
            return _format(to_str(args[0]), *args[1:])
        if low == "join" and len(args) in (1, 2):
            sep = to_str(args[1]) if len(args) == 2 else ","
            return sep.join(to_str(x) for x in args[0]) if isinstance(args[0], list) else to_str(args[0])
        if low == "tojson" and len(args) == 1:
            return json.dumps(args[0], indent=2)
        if low == "fromjson" and len(args) == 1:
            try:
                return _from_json(json.loads(to_str(args[0])))
            except json.JSONDecodeError as exc:
                raise self.error(f"fromJSON of {to_str(args[0])!r}: {exc}") from None
        if low == "hashfiles" and args:
            hasher = self.ctx.get("__hash_files")
            if not callable(hasher):
                raise self.error("hashFiles() where there is no workspace")
            return hasher([to_str(a) for a in args])
        raise self.error(f"unknown function {name}() with {len(args)} argument(s)")


def _from_json(value: Any) -> Any:
    """JSON numbers are floats in expressions (`fromJSON('1') == 1.0`)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return {str(k): _from_json(v) for k, v in dict(value).items()}


def evaluate(expr: str, ctx: Context) -> Any:
    """The value of one expression (the text inside `${{ }}`)."""
    return _Parser(expr, ctx).parse()


def _segments(text: str) -> Iterator[tuple[bool, str]]:
    """(is_expression, text) pieces of a string with `${{ ... }}` in it; `}}` inside a '...' literal is kept."""
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            if pos < len(text):
                yield False, text[pos:]
            return
        if start > pos:
            yield False, text[pos:start]
        i, quoted = start + 3, False
        while i < len(text):
            if text[i] == "'":
                quoted = not quoted
            elif not quoted and text.startswith("}}", i):
                break
            i += 1
        else:
            raise ReplayError(f"unterminated ${{{{ in {text!r}")
        yield True, text[start + 3 : i]
        pos = i + 2


def expand(text: str, ctx: Context) -> str:
    """A string with every `${{ expr }}` replaced by its value."""
    return "".join(to_str(evaluate(piece, ctx)) if is_expr else piece for is_expr, piece in _segments(text))


def expand_value(value: Any, ctx: Context) -> Any:
    """A YAML value with expressions evaluated: a string that is exactly one `${{ }}` keeps its type (lists from
    fromJSON for a matrix), other strings are expanded, lists and mappings are walked."""
    if isinstance(value, str):
        pieces = list(_segments(value))
        if len(pieces) == 1 and pieces[0][0]:
            return evaluate(pieces[0][1], ctx)
        return expand(value, ctx)
    if isinstance(value, list):
        return [expand_value(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: expand_value(v, ctx) for k, v in value.items()}
    return value


def evaluate_if(condition: Any, ctx: Context) -> bool:
    """A step's or job's `if:`; without a status function it means `success() && (condition)`, as on GitHub."""
    if condition is None:
        condition = "success()"
    if isinstance(condition, bool):
        return condition and evaluate("success()", ctx) is True
    text = str(condition).strip()
    pieces = list(_segments(text))
    if len(pieces) == 1 and pieces[0][0]:
        text = pieces[0][1].strip()
    elif any(is_expr for is_expr, _ in pieces):
        raise ReplayError(f"if: {condition!r} mixes text and ${{{{ }}}}")
    if not re.search(r"\b(" + "|".join(STATUS_FUNCTIONS) + r")\s*\(", text, re.I):
        text = f"success() && ({text})"
    return truthy(evaluate(text, ctx))
