#!/usr/bin/env python3
"""The import structure of src/mnnrepro and the long functions of src/ and native/, as a Markdown report.

    python3 tools/structure.py            # the report
    python3 tools/structure.py --check    # the same, exit 1 on a cycle, a back-import, an unlayered module
                                          # or a function over --max-lines (default 80)

A developer tool (issue 23, "Must show: Structure"), not part of the package: standard library only.

What it counts
- Modules: every `*.py` under the package directory; a package is its `__init__.py`. Names are dotted and
  relative to the package (`errors`, `workloads.base`); the package's own `__init__.py` is `__init__`.
- Layers: `tools/layers.toml`, an ordered list of layers (lowest first), each a list of `fnmatch` globs of
  module names. Every module must match exactly one layer; a module may import from its own layer or any
  lower one. An import of a higher layer is a back-import.
- Import edges: intra-package only, read with `ast` (nothing is imported or run). Every `import mnnrepro.x`,
  `from mnnrepro import x`, `from . import x`, `from .x import y` and `from .. import z` counts, wherever it
  stands: at module level (`module`), inside a function (`function`) or under `if TYPE_CHECKING:`
  (`type-checking`); all three count for edges, cycles and back-imports (a typing-only import is still a
  dependency of the design). `from .x import y` is an edge to `x.y` when that is a module, else to `x`; an
  import of `a.b` is an edge to `a.b` only (not also to the package `a`). `importlib.import_module` calls are
  not followed. Self-imports are dropped. The edge count is of distinct (importer, imported) pairs.
- Cycles: strongly connected components of the edge graph with more than one module.
- Python functions: every `def`/`async def` (methods and nested functions included, each on its own) in every
  `*.py` under src/, length = last line - `def` line + 1 (decorators excluded, the docstring included).
- Native functions (native/**/*.cpp, *.hpp): a brace count. Comments, string and character literals (raw
  strings included) and preprocessor lines are blanked first, keeping line numbers. A `{` at namespace or class
  scope (not inside a function body) opens a function body when the text since the previous `;`, `{` or `}`
  (an access specifier such as `public:` dropped) ends with `)` plus optional qualifiers (`const`, `noexcept`,
  `override`, `final`, `&`, `&&`, a trailing `-> type`), or is a constructor's member-initializer list ending
  with `)` or `}`; every brace inside a body (blocks, lambdas, local classes) belongs to that body. Length =
  the closing brace's line - the function name's line + 1 (a return type or `template<...>` on an earlier line
  is excluded, like Python's decorators). Macro-generated functions are not seen; a lambda at namespace scope
  counts as a function named `lambda`.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 80
IMPORT_KINDS = ("module", "function", "type-checking")


@dataclass(frozen=True)
class Module:
    name: str  # dotted, relative to the package; the package's own __init__.py is "__init__"
    path: Path
    lines: int
    is_package: bool


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int  # of the first import statement that makes this edge
    kind: str  # one of IMPORT_KINDS


@dataclass(frozen=True)
class Layer:
    name: str
    globs: tuple[str, ...]


@dataclass(frozen=True)
class LongFunction:
    path: str  # relative to the scanned root's parent, as shown in the report
    line: int
    name: str
    length: int


@dataclass
class Report:
    package: str
    max_lines: int
    modules: list[Module]
    layers: list[Layer]
    layer_of: dict[str, str]
    edges: list[Edge]
    statements: int  # intra-package import statements (an `import a, b` is one)
    cycles: list[list[str]]
    back_imports: list[Edge]
    unlayered: list[str]
    ambiguous: dict[str, list[str]]
    unused_globs: list[str]
    long_python: list[LongFunction]
    long_native: list[LongFunction] = field(default_factory=list)

    def failures(self) -> list[str]:
        """What --check fails on, one line per kind of problem."""
        checks = [
            (len(self.cycles), "import cycles"),
            (len(self.back_imports), "imports that run back up a layer"),
            (len(self.unlayered), "modules in no layer"),
            (len(self.ambiguous), "modules in more than one layer"),
            (len(self.long_python), f"Python functions over {self.max_lines} lines"),
            (len(self.long_native), f"native functions over {self.max_lines} lines"),
        ]
        return [f"{count} {what}" for count, what in checks if count]


# --- modules and imports ------------------------------------------------------------------------------------


def find_modules(package_dir: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package and len(parts) > 1:
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = Module(name, path, len(path.read_text().splitlines()), is_package)
    return modules


def _resolve(parts: Sequence[str], modules: dict[str, Module]) -> str:
    """The deepest module that `parts` (a dotted path inside the package) names: `x.Foo` -> `x`; [] -> `__init__`."""
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return "__init__"


def _base_parts(module: Module, level: int, target: str | None, package: str) -> list[str] | None:
    """The package-relative parts an ImportFrom's module names, or None for an import from outside the package."""
    if level == 0:
        if target is None or (target != package and not target.startswith(package + ".")):
            return None
        return target.split(".")[1:]
    here = [] if module.name == "__init__" else module.name.split(".")
    if not module.is_package:
        here = here[:-1]
    if level - 1 > len(here):
        return None
    base = here[: len(here) - (level - 1)]
    return base + (target.split(".") if target else [])


def _targets(node: ast.Import | ast.ImportFrom, module: Module, modules: dict[str, Module], package: str) -> set[str]:
    if isinstance(node, ast.Import):
        return {
            _resolve(alias.name.split(".")[1:], modules)
            for alias in node.names
            if alias.name == package or alias.name.startswith(package + ".")
        }
    base = _base_parts(module, node.level, node.module, package)
    if base is None:
        return set()
    found = set()
    for alias in node.names:
        sub = ".".join([*base, alias.name])
        found.add(sub if alias.name != "*" and sub in modules else _resolve(base, modules))
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement under `node` with its kind (see IMPORT_KINDS)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, kind
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(child, "type-checking" if kind == "type-checking" else "function")
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), kind)
        else:
            yield from _imports(child, kind)


def find_edges(modules: dict[str, Module], package: str) -> tuple[list[Edge], int]:
    """Distinct intra-package edges (the first statement's line and kind kept) and the count of statements."""
    edges: dict[tuple[str, str], Edge] = {}
    statements = 0
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), str(module.path))
        for node, kind in _imports(tree, "module"):
            targets = _targets(node, module, modules, package) - {module.name}
            statements += bool(targets)
            for target in sorted(targets):
                edges.setdefault((module.name, target), Edge(module.name, target, node.lineno, kind))
    return sorted(edges.values(), key=lambda e: (e.importer, e.imported)), statements


def find_cycles(names: Sequence[str], edges: Sequence[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, listed in name order."""
    graph: dict[str, list[str]] = {name: [] for name in names}
    for edge in edges:
        graph.setdefault(edge.importer, []).append(edge.imported)
        graph.setdefault(edge.imported, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(components)


# --- layers -------------------------------------------------------------------------------------------------


def load_layers(path: Path) -> list[Layer]:
    data = tomllib.loads(path.read_text())
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: needs a non-empty [[layers]] list")
    result = []
    for entry in layers:
        name, globs = entry.get("name"), entry.get("modules")
        if not isinstance(name, str) or not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            raise ValueError(f"{path}: each [[layers]] needs name = str and modules = [str, ...]: {entry!r}")
        result.append(Layer(name, tuple(globs)))
    return result


def assign_layers(
    names: Sequence[str], layers: Sequence[Layer]
) -> tuple[dict[str, str], list[str], dict[str, list[str]], list[str]]:
    """Each module's layer; modules in none; modules in several (with those layers); globs matching nothing."""
    layer_of: dict[str, str] = {}
    unlayered: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    used: set[tuple[str, str]] = set()
    for name in sorted(names):
        hits = []
        for layer in layers:
            matched = [g for g in layer.globs if fnmatch.fnmatchcase(name, g)]
            used.update((layer.name, g) for g in matched)
            if matched:
                hits.append(layer.name)
        if not hits:
            unlayered.append(name)
        elif len(hits) > 1:
            ambiguous[name] = hits
        else:
            layer_of[name] = hits[0]
    unused = [f"{layer.name}: {g}" for layer in layers for g in layer.globs if (layer.name, g) not in used]
    return layer_of, unlayered, ambiguous, unused


def find_back_imports(edges: Sequence[Edge], layer_of: dict[str, str], layers: Sequence[Layer]) -> list[Edge]:
    rank = {layer.name: i for i, layer in enumerate(layers)}
    return [
        e
        for e in edges
        if e.importer in layer_of and e.imported in layer_of and rank[layer_of[e.importer]] < rank[layer_of[e.imported]]
    ]


# --- long functions -----------------------------------------------------------------------------------------


def _functions(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def long_python_functions(root: Path, max_lines: int) -> list[LongFunction]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for name, node in _functions(tree, ""):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > max_lines:
                found.append(LongFunction(str(path.relative_to(root.parent)), node.lineno, name, length))
    return found


_CPP_TOKEN = re.compile(r'//|/\*|R"([^(\s"\\]{0,16})\(|"|\'|^[ \t]*#', re.M)


def blank_cpp(text: str) -> str:
    """Comments, string/char literals and preprocessor lines replaced by spaces; newlines (line numbers) kept."""
    out: list[str] = []
    pos = 0
    while (m := _CPP_TOKEN.search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        tok, start = m.group(0), m.start()
        if tok == "//":
            end = text.find("\n", start)
        elif tok == "/*":
            close = text.find("*/", start + 2)
            end = close + 2 if close >= 0 else -1
        elif tok.startswith("R"):
            close = text.find(f'){m.group(1)}"', m.end())
            end = close + len(m.group(1)) + 2 if close >= 0 else -1
        elif tok.strip() == "#":
            end = start
            while (nl := text.find("\n", end)) >= 0 and text[end:nl].rstrip().endswith("\\"):
                end = nl + 1
            end = text.find("\n", end)
        elif tok == "'" and re.search(r"\b\d[\w']*$", text[max(0, start - 64) : start]):
            out.append("'")  # a digit separator (1'000), not a character literal
            pos = start + 1
            continue
        else:
            end = _literal_end(text, start, tok)
        end = len(text) if end < 0 else end
        out.append(re.sub(r"[^\n]", " ", text[start:end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _literal_end(text: str, start: int, quote: str) -> int:
    i = start + 1
    while i < len(text) and text[i] != quote and text[i] != "\n":
        i += 2 if text[i] == "\\" else 1
    return min(i + 1, len(text))


_QUALIFIERS = r"(?:\s|const\b|noexcept\b(?:\s*\([^()]*\))?|override\b|final\b|volatile\b|&&?)*"
_FUNCTION_END = re.compile(r"\)" + _QUALIFIERS + r"(?:->[^;{}()]*(?:\([^;{}]*\))?[^;{}()]*)?$", re.S)
_INIT_LIST = re.compile(r"\)" + _QUALIFIERS + r":(?!:)", re.S)
_ACCESS = re.compile(r"^\s*(?:(?:public|private|protected)\s*:(?!:)\s*)+")


def _is_function_header(header: str) -> bool:
    return bool(_FUNCTION_END.search(header.rstrip()) or (_INIT_LIST.search(header) and header.rstrip()[-1:] in ")}"))


def _name_and_offset(header: str) -> tuple[str, int]:
    """The function's name and its offset in `header`: the token before the parameter list's `(`."""
    m = _INIT_LIST.search(header)
    cut = m.start() + 1 if m else len(header.rstrip())
    text = re.sub(r"\)" + _QUALIFIERS + r"->[^;{}]*$", ")", header[:cut].rstrip(), flags=re.S)
    depth, i = 0, len(text)
    while i > 0:
        i -= 1
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0 and text[i] == "(":
            break
    before = text[:i].rstrip()
    named = re.search(r"(operator\s*\(\s*\)|operator\s*[^\s\w(]+|[\w~]+(?:\s*::\s*[\w~]+)*)$", before)
    if named is None:
        return "lambda", len(before) - len(before.lstrip())
    return re.sub(r"\s+", "", named.group(1)), named.start()


def long_native_functions(root: Path, max_lines: int) -> list[LongFunction]:
    found = []
    for path in sorted([*root.rglob("*.cpp"), *root.rglob("*.hpp")]):
        rel = str(path.relative_to(root.parent))
        found += [f for f in native_functions(path.read_text(), rel) if f.length > max_lines]
    return sorted(found, key=lambda f: (f.path, f.line))


def native_functions(text: str, rel: str) -> list[LongFunction]:
    """Every function body of one C++ file (see the module docstring for the heuristic), with its length."""
    code = blank_cpp(text)
    stack: list[tuple[str, int, str]] = []  # (kind: function|scope|init|block, start line, name)
    functions = []
    header_start = 0
    for i, ch in enumerate(code):
        if ch not in "{};":
            continue
        in_function = any(kind == "function" for kind, _, _ in stack)
        if ch == "{" and not in_function:
            header = code[header_start:i]
            access = _ACCESS.match(header)
            header = header[access.end() if access else 0 :]
            if _is_function_header(header):
                name, offset = _name_and_offset(header)
                start = header_start + (len(code[header_start:i]) - len(header)) + offset
                stack.append(("function", code.count("\n", 0, start) + 1, name))
            elif _INIT_LIST.search(header):
                stack.append(("init", 0, ""))  # `: member_{` of a constructor: its body's `{` comes next
                continue
            else:
                stack.append(("scope", 0, ""))
        elif ch == "{":
            stack.append(("block", 0, ""))
        elif ch == "}" and stack:
            kind, line, name = stack.pop()
            if kind == "function":
                functions.append(LongFunction(rel, line, name, code.count("\n", 0, i) + 1 - line + 1))
            if kind == "init":
                continue  # the constructor's header goes on to its body's `{`
        header_start = i + 1  # read only outside function bodies, where `{`, `}` and `;` end a declaration
    return functions


# --- the report ---------------------------------------------------------------------------------------------


def analyse(package_dir: Path, layers_file: Path, native_dir: Path | None, max_lines: int = MAX_LINES) -> Report:
    modules = find_modules(package_dir)
    package = package_dir.name
    edges, statements = find_edges(modules, package)
    layers = load_layers(layers_file)
    layer_of, unlayered, ambiguous, unused = assign_layers(list(modules), layers)
    return Report(
        package=package,
        max_lines=max_lines,
        modules=sorted(modules.values(), key=lambda m: m.name),
        layers=layers,
        layer_of=layer_of,
        edges=edges,
        statements=statements,
        cycles=find_cycles(list(modules), edges),
        back_imports=find_back_imports(edges, layer_of, layers),
        unlayered=unlayered,
        ambiguous=ambiguous,
        unused_globs=unused,
        long_python=long_python_functions(package_dir.parent, max_lines),
        long_native=long_native_functions(native_dir, max_lines) if native_dir is not None else [],
    )


def _summary(r: Report) -> list[str]:
    kinds = {k: sum(e.kind == k for e in r.edges) for k in IMPORT_KINDS}
    return [
        "| figure | count |",
        "| --- | --- |",
        f"| modules | {len(r.modules)} ({sum(m.lines for m in r.modules)} lines) |",
        f"| layers | {len(r.layers)} |",
        f"| import edges (distinct importer -> imported) | {len(r.edges)} "
        f"({', '.join(f'{k}: {v}' for k, v in kinds.items())}) |",
        f"| import statements (intra-package) | {r.statements} |",
        f"| cycles (components of more than one module) | {len(r.cycles)} |",
        f"| imports that run back up a layer | {len(r.back_imports)} |",
        f"| modules in no layer / in several | {len(r.unlayered)} / {len(r.ambiguous)} |",
        f"| Python functions over {r.max_lines} lines (src/) | {len(r.long_python)} |",
        f"| native functions over {r.max_lines} lines (native/) | {len(r.long_native)} |",
    ]


def _layer_table(r: Report) -> list[str]:
    lines = ["| layer (lowest first) | modules | lines |", "| --- | --- | --- |"]
    for layer in r.layers:
        members = [m for m in r.modules if r.layer_of.get(m.name) == layer.name]
        names = ", ".join(f"`{m.name}`" for m in members) or "-"
        lines.append(f"| {layer.name} | {names} | {sum(m.lines for m in members)} |")
    return lines


def _problems(r: Report) -> list[str]:
    lines: list[str] = []
    if r.cycles:
        lines += ["", "### Cycles", ""]
        for component in r.cycles:
            inside = [e for e in r.edges if e.importer in component and e.imported in component]
            lines.append(f"- {', '.join(component)}: " + "; ".join(_edge(e) for e in inside))
    if r.back_imports:
        lines += ["", "### Imports that run back up a layer", "", "| importer | imported | layers | kind |"]
        lines.append("| --- | --- | --- | --- |")
        for e in r.back_imports:
            where = f"{r.layer_of[e.importer]} -> {r.layer_of[e.imported]}"
            lines.append(f"| `{e.importer}` (line {e.line}) | `{e.imported}` | {where} | {e.kind} |")
    if r.unlayered or r.ambiguous:
        lines += ["", "### Modules not in exactly one layer (errors)", ""]
        lines += [f"- `{name}`: in no layer" for name in r.unlayered]
        lines += [f"- `{name}`: in {', '.join(hits)}" for name, hits in r.ambiguous.items()]
    for title, functions in (("Python", r.long_python), ("Native", r.long_native)):
        if functions:
            lines += ["", f"### {title} functions over {r.max_lines} lines", "", "| where | function | lines |"]
            lines.append("| --- | --- | --- |")
            lines += [f"| {f.path}:{f.line} | `{f.name}` | {f.length} |" for f in functions]
    return lines


def _edge(e: Edge) -> str:
    return f"{e.importer} -> {e.imported} (line {e.line}, {e.kind})"


def render(r: Report) -> str:
    lines = [f"## Structure of `{r.package}`", "", *_summary(r), "", "### Layers", "", *_layer_table(r)]
    lines += _problems(r)
    if r.unused_globs:
        lines += ["", "Layer globs that match no module (not an error): " + ", ".join(r.unused_globs)]
    lines += ["", "### Import edges", ""]
    lines += [f"- {_edge(e)}" for e in r.edges]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=ROOT / "src" / "mnnrepro", help="the package directory")
    parser.add_argument("--layers", type=Path, default=ROOT / "tools" / "layers.toml")
    parser.add_argument("--native", default=str(ROOT / "native"), help="C++ sources ('' skips them)")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES, help="longest function allowed (lines)")
    parser.add_argument("--check", action="store_true", help="exit 1 on any problem (see the module docstring)")
    args = parser.parse_args(argv)
    native = Path(args.native) if args.native else None
    report = analyse(args.src, args.layers, native, args.max_lines)
    sys.stdout.write(render(report))
    failures = report.failures()
    if args.check and failures:
        print(f"structure check failed: {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
