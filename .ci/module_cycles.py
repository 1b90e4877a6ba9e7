#!/usr/bin/env python3
"""Report import cycles between sibling modules of the crate (exit 1 if any).

Reads every `crate::`, `super::` and `self::` path under src/ (in `use` lines and in
code), resolves it to the module that holds the item, and projects each edge A -> B onto
the children of their lowest common ancestor: `ingest::flush::x` using
`ingest::worker::y` is the edge flush -> worker inside `ingest`. Edges between a module
and its own ancestors (a child using its parent's error type, a parent re-exporting a
child) are how Rust facades work and are not counted. Test modules are skipped.

    python3 .ci/module_cycles.py          # cycles, or "no cycles"
    python3 .ci/module_cycles.py --edges  # every projected edge, for reading
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("lib", "main"):
        parts = parts[:-1]
    elif parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//[^\n]*", "", text)


def drop_test_modules(text: str) -> str:
    # `#[cfg(test)] mod tests { ... }` blocks: cut to the matching brace.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use_tree(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    depth, brace = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                brace = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if brace is None:
        return [re.sub(r"\bas\w+$", "", tree)]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rindex("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            if inner[start:i]:
                items.append(inner[start:i])
            start = i + 1
    paths = []
    for item in items:
        for sub in expand_use_tree(item):
            paths.append(prefix + sub if sub != "self" else prefix.rstrip(":"))
    return paths


def absolute(module: tuple, path: str):
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(module)
        while segs and segs[0] in ("super", "self"):
            if segs.pop(0) == "super":
                base = base[:-1]
        base, rest = tuple(base), segs
    else:
        return None
    return base + tuple(rest)


def resolve(target: tuple, modules: set) -> tuple:
    for n in range(len(target), -1, -1):
        if target[:n] in modules:
            return target[:n]
    return ()


def main() -> int:
    files = [p for p in SRC.rglob("*.rs") if p.name != "tests.rs" and "tests" not in p.parts]
    modules = {module_of(p) for p in files}
    edges = set()
    for path in files:
        me = module_of(path)
        text = drop_test_modules(strip_comments(path.read_text()))
        paths = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            paths += expand_use_tree(m.group(1))
        paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text)
        for p in paths:
            target = absolute(me, p)
            if target is None:
                continue
            dest = resolve(target, modules)
            n = 0
            while n < min(len(me), len(dest)) and me[n] == dest[n]:
                n += 1
            if n == len(me) or n == len(dest):
                continue  # ancestor or self
            edges.add((me[:n], me[n], dest[n]))

    if "--edges" in sys.argv:
        for parent, a, b in sorted(edges):
            print(f"{'::'.join(('crate',) + parent)}: {a} -> {b}")

    cycles = []
    for parent in sorted({e[0] for e in edges}):
        graph = {}
        for p, a, b in edges:
            if p == parent:
                graph.setdefault(a, set()).add(b)
        cycles += [(parent, c) for c in strongly_connected(graph) if len(c) > 1]
    for parent, comp in cycles:
        print(f"cycle in {'::'.join(('crate',) + parent)}: {{{', '.join(sorted(comp))}}}")
    if not cycles:
        print(f"no cycles among {len(modules)} modules ({len(edges)} sibling edges)")
    return 1 if cycles else 0


def strongly_connected(graph: dict) -> list:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
