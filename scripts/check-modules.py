#!/usr/bin/env python3
"""Fails when a crate's top-level modules import each other in a circle.

A module is a file `src/NAME.rs` or a folder `src/NAME/`; it depends on another when its code
names `crate::OTHER` (or, from a top-level file, `super::OTHER`). Circles make a crate harder
to read in order and to split; this keeps them from coming back (issue 14).
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
GROUP = re.compile(r"crate::\{([^}]*)\}")
SINGLE = re.compile(r"crate::([a-z_][a-z0-9_]*)")
SUPER = re.compile(r"(?<!::)super::([a-z_][a-z0-9_]*)")


def modules(src):
    mods = {}
    for p in src.iterdir():
        if p.is_file() and p.suffix == ".rs" and p.stem not in ("lib", "main"):
            mods[p.stem] = [p]
        elif p.is_dir() and p.name != "bin":
            mods[p.name] = sorted(p.rglob("*.rs"))
            if (src / f"{p.name}.rs").exists():
                mods[p.name].append(src / f"{p.name}.rs")
    return mods


def edges(mods, src):
    out = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            text = re.sub(r"//[^\n]*", "", f.read_text())
            names = set(SINGLE.findall(text))
            for g in GROUP.findall(text):
                names.update(n.strip().split("::")[0] for n in g.split(","))
            if f.parent == src:
                names.update(SUPER.findall(text))
            out[m].update(n for n in names if n in mods and n != m)
    return out


def cycles(graph):
    index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


failed = False
for src in sorted(root.glob("*/src")):
    mods = modules(src)
    graph = edges(mods, src)
    for scc in cycles(graph):
        failed = True
        links = [f"{a} -> {b}" for a in scc for b in sorted(graph[a]) if b in scc]
        print(f"{src.parent.name}: modules import each other in a circle: {', '.join(links)}")
if failed:
    sys.exit(1)
print("no import circles among crate modules")
