"""The error trees drawn in the ``errors.py`` docstrings equal the real subclasses of ``NodeError``.

node/errors.py draws the whole tree; each package's errors.py draws its branch. Every module of ``node`` and
``anchor`` is imported so that no subclass is missed.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import anchor
import node
import node.errors
from node.errors import NodeError

ROOT = Path(__file__).resolve().parent.parent
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


def all_modules() -> list[str]:
    names = []
    for pkg in (node, anchor):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(info.name)
            names.append(info.name)
    return names


def real_classes() -> dict[str, type[NodeError]]:
    all_modules()
    found: dict[str, list[type[NodeError]]] = {}
    todo: list[type[NodeError]] = [NodeError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, [])
        if cls not in found[cls.__name__]:
            found[cls.__name__].append(cls)
        todo.extend(c for c in cls.__subclasses__() if c.__module__.split(".")[0] in ("node", "anchor"))
    dupes = {name: [c.__module__ for c in classes] for name, classes in found.items() if len(classes) > 1}
    assert not dupes, f"error class names must be unique in the tree: {dupes}"
    return {name: classes[0] for name, classes in found.items()}


def project_subclasses(cls: type[NodeError]) -> set[str]:
    return {c.__name__ for c in cls.__subclasses__() if c.__module__.split(".")[0] in ("node", "anchor")}


def check(drawn: Drawn, classes: dict[str, type[NodeError]], where: str, *, exact: bool) -> set[str]:
    """Check ``drawn`` against the real class; returns every name drawn under it (itself included)."""
    assert drawn.name in classes, f"{where}: {drawn.name} is drawn but no such subclass of NodeError exists"
    cls = classes[drawn.name]
    if drawn.module is not None:
        assert drawn.module == cls.__module__, (
            f"{where}: {drawn.name} is drawn in {drawn.module}, is in {cls.__module__}"
        )
    children = [c.name for c in drawn.children]
    assert len(children) == len(set(children)), f"{where}: a child of {drawn.name} is drawn twice"
    real = project_subclasses(cls)
    if exact:
        assert set(children) == real, (
            f"{where}: {drawn.name}'s drawn subclasses differ: missing {sorted(real - set(children))}, "
            f"not real {sorted(set(children) - real)}"
        )
    else:
        assert set(children) <= real, f"{where}: not subclasses of {drawn.name}: {sorted(set(children) - real)}"
    seen = {drawn.name}
    for child in drawn.children:
        seen |= check(child, classes, where, exact=True)
    return seen


def errors_modules() -> list[Path]:
    return sorted(p for pkg in ("node", "anchor") for p in (ROOT / pkg).rglob("errors.py"))


def test_the_root_drawing_is_the_whole_tree() -> None:
    classes = real_classes()
    roots = parse_tree(node.errors.__doc__ or "")
    assert [r.name for r in roots] == ["NodeError"]
    drawn = check(roots[0], classes, "node/errors.py", exact=True)
    assert drawn == set(classes)


@pytest.mark.parametrize("path", errors_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_package_drawing_matches_its_branch(path: Path) -> None:
    """The first root drawn is the branch's parent (e.g. ``NodeError``): only the branches drawn under it must
    exist; every class drawn below lists exactly its real subclasses."""
    classes = real_classes()
    module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    for root in parse_tree(module.__doc__ or ""):
        check(root, classes, str(path.relative_to(ROOT)), exact=root.name != "NodeError")
    defined = {
        name
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, NodeError) and obj.__module__ == module.__name__
    }
    drawn_here: set[str] = set()
    for root in parse_tree(module.__doc__ or ""):
        todo = [root]
        while todo:
            d = todo.pop()
            drawn_here.add(d.name)
            todo.extend(d.children)
    assert defined <= drawn_here, f"{path}: classes defined but not drawn: {sorted(defined - drawn_here)}"


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
