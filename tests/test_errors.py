"""The error trees drawn in the ``errors.py`` docstrings equal the real subclasses of ``NodeError``.

node/errors.py draws the whole tree; each package's errors.py draws its branch. Every module of ``node`` and
``anchor`` is imported (in a fresh interpreter) so that no subclass is missed.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WALK_TIMEOUT_S = 120  # importing every module (libp2p, onnxruntime, ...) takes a few seconds
BRANCH = re.compile(r"^((?:│   |    )*)(?:├── |└── )([A-Za-z_]\w*)(?:\s+\(([\w.]+)\))?")
TOP = re.compile(r"^([A-Z]\w*)(?:\s+\(([\w.]+)\))?")


@dataclass
class Drawn:
    name: str
    module: str | None  # the module drawn in parentheses after the name, if any
    children: list[Drawn] = field(default_factory=list)


def parse_tree(doc: str) -> list[Drawn]:
    """The trees drawn in the literal block after the first ``::`` (up to its first blank line)."""
    after = doc.split("::", 1)[1].lstrip("\n")
    lines = textwrap.dedent(after.split("\n\n", 1)[0]).splitlines()
    roots: list[Drawn] = []
    stack: list[Drawn] = []  # stack[d] is the last node drawn at depth d
    for line in lines:
        if m := BRANCH.match(line):
            depth = len(m.group(1)) // 4 + 1
            assert 0 < depth <= len(stack), f"a branch without a parent: {line!r}"
            drawn = Drawn(m.group(2), m.group(3))
            stack[depth - 1].children.append(drawn)
            del stack[depth:]
            stack.append(drawn)
        elif not line.startswith((" ", "│")) and (m := TOP.match(line)):
            drawn = Drawn(m.group(1), m.group(2))
            roots.append(drawn)
            stack = [drawn]
        # otherwise a continuation of the previous line's description
    assert roots, "no tree drawn"
    return roots


# Run in a fresh interpreter: importing every module of node/ and anchor/ must not depend on what other tests put
# on sys.path (tests that add bench/ make ``import mcp`` find bench/mcp.py), nor leave those modules behind.
WALK = """
import importlib, json, pkgutil
import anchor, node
from node.errors import NodeError
for pkg in (node, anchor):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
ours = lambda c: c.__module__.split(".")[0] in ("node", "anchor")
seen, todo = [], [NodeError]
while todo:
    cls = todo.pop()
    if cls not in seen:
        seen.append(cls)
        todo.extend(c for c in cls.__subclasses__() if ours(c))
print(json.dumps([
    {"name": c.__name__, "module": c.__module__, "children": sorted(s.__name__ for s in c.__subclasses__() if ours(s))}
    for c in seen
]))
"""


@dataclass(frozen=True)
class Real:
    module: str
    children: frozenset[str]


@functools.cache
def real_classes() -> dict[str, Real]:
    """Every subclass of NodeError defined in node/ or anchor/, by name (names are unique)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", WALK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=WALK_TIMEOUT_S
    )
    assert out.returncode == 0, out.stderr
    found: dict[str, list[str]] = {}
    classes: dict[str, Real] = {}
    for c in json.loads(out.stdout):
        found.setdefault(c["name"], []).append(c["module"])
        classes[c["name"]] = Real(c["module"], frozenset(c["children"]))
    dupes = {name: modules for name, modules in found.items() if len(modules) > 1}
    assert not dupes, f"error class names must be unique in the tree: {dupes}"
    return classes


def check(drawn: Drawn, classes: dict[str, Real], where: str, *, exact: bool) -> set[str]:
    """Check ``drawn`` against the real class; returns every name drawn under it (itself included)."""
    assert drawn.name in classes, f"{where}: {drawn.name} is drawn but no such subclass of NodeError exists"
    real = classes[drawn.name]
    if drawn.module is not None:
        assert drawn.module == real.module, f"{where}: {drawn.name} is drawn in {drawn.module}, is in {real.module}"
    children = [c.name for c in drawn.children]
    assert len(children) == len(set(children)), f"{where}: a child of {drawn.name} is drawn twice"
    if exact:
        assert set(children) == real.children, (
            f"{where}: {drawn.name}'s drawn subclasses differ: missing {sorted(real.children - set(children))}, "
            f"not real {sorted(set(children) - real.children)}"
        )
    else:
        assert set(children) <= real.children, (
            f"{where}: not subclasses of {drawn.name}: {sorted(set(children) - real.children)}"
        )
    seen = {drawn.name}
    for child in drawn.children:
        seen |= check(child, classes, where, exact=True)
    return seen


def errors_modules() -> list[Path]:
    return sorted(p for pkg in ("node", "anchor") for p in (ROOT / pkg).rglob("errors.py"))


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(), str(path)), clean=False) or ""


def test_the_root_drawing_is_the_whole_tree() -> None:
    classes = real_classes()
    roots = parse_tree(docstring(ROOT / "node" / "errors.py"))
    assert [r.name for r in roots] == ["NodeError"]
    drawn = check(roots[0], classes, "node/errors.py", exact=True)
    assert drawn == set(classes)


@pytest.mark.parametrize("path", errors_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_package_drawing_matches_its_branch(path: Path) -> None:
    """The first root drawn is the branch's parent (e.g. ``NodeError``): only the branches drawn under it must
    exist; every class drawn below lists exactly its real subclasses, and every error class the file defines is
    drawn."""
    classes = real_classes()
    where = str(path.relative_to(ROOT))
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    roots = parse_tree(docstring(path))
    drawn_here: set[str] = set()
    for root in roots:
        drawn_here |= check(root, classes, where, exact=root.name != "NodeError")
    defined = {name for name, real in classes.items() if real.module == module}
    assert defined <= drawn_here, f"{where}: classes defined but not drawn: {sorted(defined - drawn_here)}"


def test_the_parser_sees_a_missing_or_invented_class() -> None:
    """The check is not vacuous: a drawing that omits a subclass, or invents one, fails."""
    classes = real_classes()
    omits = '"""x::\n\nNodeError\n└── ConfigError\n"""'
    with pytest.raises(AssertionError, match="missing"):
        check(parse_tree(omits)[0], classes, "test", exact=True)
    invents = "x::\n\n    CryptoError\n    └── NoSuchError   (node.crypto.errors)\n"
    with pytest.raises(AssertionError, match=r"not subclasses of CryptoError: \['NoSuchError'\]"):
        check(parse_tree(invents)[0], classes, "test", exact=False)
    with pytest.raises(AssertionError, match="NoSuchError is drawn but no such subclass"):
        check(parse_tree("x::\n\nNoSuchError\n")[0], classes, "test", exact=False)
    wrong_module = "x::\n\nProtocolError\n├── MalformedFrame   (node.wire.nowhere)\n└── EncodeError\n"
    with pytest.raises(AssertionError, match=r"node\.wire\.nowhere"):
        check(parse_tree(wrong_module)[0], classes, "test", exact=True)
