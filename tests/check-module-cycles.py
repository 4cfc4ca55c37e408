#!/usr/bin/env python3
"""The crate's modules form no import cycle (docs/architecture.md).

Reads every `crate::` path of every non-test source file below SRC (nested
`use crate::{a, b::{c}}` groups included, comments left out), builds the graph
of top-level modules and fails, naming them, when any modules form a strongly
connected component. Test files (`*tests*.rs`) may reach across layers.

    tests/check-module-cycles.py [SRC]    # default crates/portcullis/src
"""
import os
import re
import sys

src_root = sys.argv[1] if len(sys.argv) > 1 else "crates/portcullis/src"


def uses(text):
    text = re.sub(r"//[^\n]*", "", text)
    found = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
    for m in re.finditer(r"crate::\{", text):
        i, depth, tok, parts = m.end(), 1, "", []
        while depth and i < len(text):
            ch = text[i]
            depth += ch == "{"
            depth -= ch == "}"
            if depth == 1 and ch == ",":
                parts.append(tok)
                tok = ""
            elif depth:
                tok += ch
            i += 1
        parts.append(tok)
        for part in parts:
            name = part.strip().split("::")[0].strip("{} \n")
            if name and name != "self":
                found.add(name)
    return found


edges = {}
for dirpath, _, files in os.walk(src_root):
    for name in files:
        if not name.endswith(".rs") or "tests" in name:
            continue
        rel = os.path.relpath(os.path.join(dirpath, name), src_root)
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        with open(os.path.join(dirpath, name), encoding="utf-8") as f:
            edges.setdefault(top, set()).update(uses(f.read()) - {top})
edges = {m: sorted(t for t in targets if t in edges) for m, targets in edges.items()}

# Tarjan's strongly connected components.
index, low, stack, on_stack, cycles = {}, {}, [], set(), []
sys.setrecursionlimit(10_000)


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            cycles.append(sorted(component))


for module in sorted(edges):
    if module not in index:
        visit(module)

if cycles:
    for component in cycles:
        inner = {m: [t for t in edges[m] if t in component] for m in component}
        print("import cycle among: " + ", ".join(component), file=sys.stderr)
        for m, targets in inner.items():
            print(f"  {m} -> {', '.join(targets)}", file=sys.stderr)
    sys.exit(1)
print(f"modules: {len(edges)} in {src_root}, no import cycle")
