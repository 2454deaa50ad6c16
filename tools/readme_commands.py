"""Prints one of the README's two fresh-machine commands (``main`` or ``tests``).

The README marks them with ``<!-- command:NAME -->`` comments before a fenced block;
CI and the end-to-end test run what this prints, so the README cannot drift.
"""

import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def command(name: str, path: str = README) -> str:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    match = re.search(rf"<!-- command:{re.escape(name)} -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    if not match:
        raise SystemExit(f"{path}: no <!-- command:{name} --> block")
    lines = [ln.rstrip() for ln in match.group(1).strip().splitlines()]
    return " ".join(ln[:-1].rstrip() if ln.endswith("\\") else ln for ln in lines)


if __name__ == "__main__":
    print(command(sys.argv[1] if len(sys.argv) > 1 else "tests"))
