"""Private attributes of other libraries are read only in `app/kernel/` (docs/KERNEL.md).

Outside it, the code under `app/` may use a private name (one underscore) only where the name is
its own:
- on `self`, `cls` or `super()`: a name `app/` defines somewhere (a subclass of our own class in
  another module reads its base's); a subclass of a library's class reading the library's private
  names is kernel code;
- on anything else: a name defined in the same file (its module's private functions and
  constants, its own classes' attributes);
- the documented API of named tuples (`_fields`, `_make`, `_replace`, `_asdict`).
The same holds for a private name given to `getattr`, `setattr`, `hasattr` or `delattr` as a
string, and for `from <library> import _name`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
KERNEL = "kernel"
NAMED_TUPLE_API = frozenset({"_fields", "_field_defaults", "_make", "_replace", "_asdict"})
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


@dataclass(frozen=True)
class Touch:
    path: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: functions, classes, assigned names and attributes, imports."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
    return names


def is_own_instance(receiver: ast.expr) -> bool:
    """`self`, `cls` or `super()`."""
    if isinstance(receiver, ast.Name):
        return receiver.id in ("self", "cls")
    return (
        isinstance(receiver, ast.Call)
        and isinstance(receiver.func, ast.Name)
        and receiver.func.id == "super"
    )


def private_touches(app: Path) -> list[Touch]:
    """Each use, outside `app/kernel/`, of a private name that is not the code's own."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in sorted(app.rglob("*.py"))}
    defined_in_app = set().union(*(defined_names(tree) for tree in trees.values()))
    touches: list[Touch] = []
    for path, tree in trees.items():
        relative = path.relative_to(app.parent)
        if relative.parts[1] == KERNEL:
            continue
        defined_here = defined_names(tree)

        def touch(node: ast.AST, relative: Path = relative) -> None:
            line = getattr(node, "lineno", 0)
            touches.append(Touch(relative.as_posix(), line, ast.unparse(node)))

        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                own = defined_in_app if is_own_instance(node.value) else defined_here
                if node.attr not in own and node.attr not in NAMED_TUPLE_API:
                    touch(node)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ATTRIBUTE_FUNCTIONS
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and is_private(node.args[1].value)
                and node.args[1].value not in defined_in_app
            ):
                touch(node)
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and not (node.module or "").startswith("app")
                and any(is_private(alias.name) for alias in node.names)
            ):
                touch(node)
    return touches


def test_only_the_kernel_reads_private_attributes_of_other_libraries() -> None:
    touches = private_touches(APP)
    assert not touches, "private names of other libraries outside app/kernel/:\n" + "\n".join(
        map(str, touches)
    )


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("def plan(schema):\n    return schema._schema\n", "schema._schema"),
        ("def read(context):\n    return context.schema._schema\n", "context.schema._schema"),
        ("def begun(adapter):\n    return getattr(adapter, '_started', None)\n", "getattr("),
        ("from sqlalchemy.sql.compiler import _CompileLabel\n", "_CompileLabel"),
        ("class P(Base):\n    def f(self):\n        return self._should_upgrade()\n", "self._"),
    ],
)
def test_a_private_attribute_of_another_library_is_found(
    tmp_path: Path, code: str, found: str
) -> None:
    app = tmp_path / "app"
    (app / "graphql").mkdir(parents=True)
    (app / "kernel").mkdir()
    (app / "graphql" / "planner.py").write_text(code)
    (app / "kernel" / "strawberry.py").write_text(code)  # the kernel may
    touches = private_touches(app)
    assert [t.path for t in touches] == ["app/graphql/planner.py"]
    assert found in touches[0].code


def test_the_code_s_own_private_names_are_not_touches(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "base.py").write_text("class Base:\n    def _hook(self):\n        pass\n")
    (app / "rows.py").write_text(
        "from collections import namedtuple\n"
        "from app.base import Base\n"
        "_Row = namedtuple('_Row', 'a b')\n"
        "_CACHE = {}\n"
        "class Sub(Base):\n"
        "    def __init__(self):\n"
        "        self._seen = 0\n"
        "    def run(self, other):\n"
        "        self._hook()\n"
        "        other._seen += 1\n"
        "        return _Row._fields, _Row._make((1, 2))._asdict(), _CACHE\n"
    )
    assert private_touches(app) == []
