"""The package's layers: every import (lazy ones inside functions included) points to the
importer's own layer or one below it, in the order the package docstring writes down."""

import ast
import os
import re

import tfrec_attn

PACKAGE = os.path.dirname(tfrec_attn.__file__)


def layer_order() -> list[str]:
    diagram = re.search(r"Bottom first:\n\n(.*?)\n\n", tfrec_attn.__doc__, re.S).group(1)
    return [name.strip() for name in diagram.replace("\n", " ").split("→")]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tfrec_attn" and len(parts) > 1 else None


def test_the_order_names_every_subpackage_once():
    order = layer_order()
    subpackages = {os.path.splitext(name)[0] for name in os.listdir(PACKAGE)
                   if not name.startswith(("_", ".")) and (name.endswith(".py") or os.path.isdir(os.path.join(
                       PACKAGE, name, "")) and os.path.isfile(os.path.join(PACKAGE, name, "__init__.py")))}
    assert sorted(order) == sorted(subpackages) and len(set(order)) == len(order)


def test_no_module_imports_a_higher_layer():
    rank = {name: i for i, name in enumerate(layer_order())}
    upward = []
    for root, _, files in os.walk(PACKAGE):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(root, file)
            module = "tfrec_attn." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
            own = layer_of(module.removesuffix(".__init__"))
            if own is None:
                continue
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
                for name in names:
                    target = layer_of(name)
                    if target is not None and rank[target] > rank[own]:
                        upward.append(f"{os.path.relpath(path, PACKAGE)}:{node.lineno}: {own} imports {name}")
    assert not upward, "\n".join(upward)
