#!/usr/bin/env python3
"""Module-level import cycles among one crate's own modules.

Usage: scripts/modcycles.py <crate>/src [--edges] [--why]

`make test` runs it on the Azure emulator (make cycles), whose cycles issue 23 broke; exits 1
when it finds a cycle.

Definition used:
  * A module is a file module (src/a.rs or src/a/mod.rs -> crate::a, src/a/b.rs -> crate::a::b,
    src/lib.rs -> crate) or an inline `mod x { ... }` is not modelled (none in product code).
  * Test modules are left out: files named tests.rs and inline `#[cfg(test)] mod tests { ... }`
    blocks. src/main.rs is a separate (binary) crate and is left out too.
  * Module A depends on module B (edge A -> B) when A names an item *defined* in B: in a `use`
    (crate::, super::, self::, or a child-module-relative path) or in an inline path in code
    (`crate::x::Y`, `super::f`, `child::f`, or `alias::f` where `alias` was imported as a module).
    Paths are resolved to the module that defines the last module-or-item segment; a name reached
    through a `pub use` re-export is followed to the module that defines it.
  * `mod child;` is not an edge. So a parent whose child imports from it is a cycle only if the
    parent also names something of that child (or of something that reaches back).
  * Naming a module itself (`use crate::tags;`) is an edge to that module.
  * Comments (//, ///, //!, /* */) and string literals are ignored.
A cycle is a strongly connected component of more than one module; elementary cycles are listed.
"""
import os
import re
import sys
from collections import defaultdict

root = sys.argv[1].rstrip('/')
show_edges = '--edges' in sys.argv
show_why = '--why' in sys.argv


def modpath(rel):
    rel = rel[:-3]
    parts = rel.split('/')
    if parts[-1] == 'mod':
        parts = parts[:-1]
    if parts == ['lib']:
        return ('crate',)
    return ('crate',) + tuple(parts)


def strip_comments_strings(src):
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i)
            i = n if j < 0 else j
        elif src.startswith('/*', i):
            j = src.find('*/', i)
            i = n if j < 0 else j + 2
        elif c == 'r' and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == '_')):
            m = re.match(r'r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0)))
            out.append('""')
            i = n if j < 0 else j + len(end)
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == '\\' else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:i + 4]) or (c == "'" and re.match(r"'\\u\{[0-9a-fA-F]+\}'", src[i:i + 12])):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def strip_cfg_test_mods(src):
    # Drop `#[cfg(test)] mod name { ... }` blocks (matching braces).
    while True:
        m = re.search(r'#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{', src)
        if not m:
            return src
        depth, j = 0, m.end() - 1
        while j < len(src):
            if src[j] == '{':
                depth += 1
            elif src[j] == '}':
                depth -= 1
                if depth == 0:
                    break
            j += 1
        src = src[:m.start()] + src[j + 1:]


def split_top(s, sep=','):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch == '{':
            depth += 1
        elif ch == '}':
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def expand_use(tree, prefix=()):
    """Yields (path tuple, local name) for a use tree."""
    tree = tree.strip()
    m = re.match(r'^(.*?)::\s*\{(.*)\}$', tree, re.S)
    if m or (tree.startswith('{') and tree.endswith('}')):
        head, body = (m.group(1), m.group(2)) if m else ('', tree[1:-1])
        p = prefix + tuple(x.strip() for x in head.split('::') if x.strip())
        for sub in split_top(body):
            yield from expand_use(sub, p)
        return
    alias = None
    am = re.match(r'^(.*)\s+as\s+(\w+)$', tree, re.S)
    if am:
        tree, alias = am.group(1).strip(), am.group(2)
    segs = tuple(x.strip() for x in tree.split('::') if x.strip())
    path = prefix + segs
    if path and path[-1] == 'self':
        path = path[:-1]
    if path and path[-1] == '*':
        yield path, '*'
        return
    yield path, alias or (path[-1] if path else None)


files = {}
for dp, _, fns in os.walk(root):
    for fn in fns:
        if not fn.endswith('.rs'):
            continue
        rel = os.path.relpath(os.path.join(dp, fn), root)
        if rel == 'main.rs' or fn == 'tests.rs' or rel.startswith('bin/'):
            continue
        files[modpath(rel)] = os.path.join(dp, fn)

modules = set(files)
code = {}
uses = {}  # module -> list of (is_pub, path tuple, local name)
for mod, fp in files.items():
    src = strip_cfg_test_mods(strip_comments_strings(open(fp).read()))
    code[mod] = src
    lst = []
    for m in re.finditer(r'(?:^|[;}\s])(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);', src):
        for path, name in expand_use(m.group(2)):
            lst.append((bool(m.group(1)), path, name))
    uses[mod] = lst


def absolute(mod, path):
    """Turns a use/inline path into an absolute tuple, or None if external."""
    if not path:
        return None
    first = path[0]
    if first == 'crate':
        return ('crate',) + path[1:]
    if first in ('self', 'super'):
        cur = list(mod)
        rest = list(path)
        while rest and rest[0] in ('self', 'super'):
            if rest.pop(0) == 'super':
                cur.pop()
        return tuple(cur) + tuple(rest)
    if mod + (first,) in modules:
        return mod + path
    return None


def reexports(mod):
    out = {}
    for is_pub, path, name in uses[mod]:
        if is_pub and name and name != '*':
            out[name] = path
    return out


def resolve(path, seen=None):
    """Absolute path -> the module defining its item (following pub use re-exports)."""
    seen = seen or set()
    cur = ('crate',)
    for i, seg in enumerate(path[1:], 1):
        if cur + (seg,) in modules:
            cur = cur + (seg,)
            continue
        re_ = reexports(cur).get(seg)
        if re_ is not None and (cur, seg) not in seen:
            seen.add((cur, seg))
            target = absolute(cur, re_)
            if target:
                return resolve(target + path[i + 1:], seen)
        return cur
    return cur


edges = defaultdict(set)
why = defaultdict(set)  # (A, B) -> names A uses from B


def edge(mod, a, text):
    """Records that `mod` uses the item at absolute path `a` (spelled `text`); the module it
    resolves to, unless `a` is None or inside `mod` itself."""
    if a is None:
        return None
    t = resolve(a)
    if t != mod:
        edges[mod].add(t)
        why[mod, t].add(text)
    return t


for mod in modules:
    aliases = {}
    for _, path, name in uses[mod]:
        a = absolute(mod, path)
        t = edge(mod, a, '::'.join(path))
        if t is not None and name and name != '*' and t == a:  # imported a module: track `name::...` in code
            aliases[name] = a
    for child in (m for m in modules if len(m) == len(mod) + 1 and m[:-1] == mod):
        aliases.setdefault(child[-1], child)
    body = re.sub(r'(?:^|[;}\s])(pub(?:\([^)]*\))?\s+)?use\s+[^;]+;', ' ', code[mod])
    for m in re.finditer(r'(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)+)', body):
        segs = tuple(m.group(1).split('::'))
        if segs[0] in aliases and segs[0] not in ('crate', 'super', 'self'):
            a = aliases[segs[0]] + segs[1:]
        else:
            a = absolute(mod, segs)
        edge(mod, a, m.group(1))


def name(m):
    return '::'.join(m)


# Tarjan's SCC.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(modules):
    if v not in index:
        strong(v)

if show_edges:
    for m in sorted(modules):
        print(f'{name(m)} -> {", ".join(name(t) for t in sorted(edges[m])) or "-"}')
    print()

cyc = [c for c in sccs if len(c) > 1]
print(f'{len(modules)} modules, {sum(len(e) for e in edges.values())} edges, '
      f'{len(cyc)} cyclic component(s)')
for c in sorted(cyc):
    members = set(c)
    print(f'component: {", ".join(name(m) for m in c)}')
    # Elementary cycles inside the component, each printed once from its smallest module.
    found = []

    def walk(start, v, path):
        for w in sorted(edges[v] & members):
            if w == start:
                found.append(path + [start])
            elif w > start and w not in path:
                walk(start, w, path + [w])

    for s in c:
        walk(s, s, [s])
    if show_why:
        for a in c:
            for b in sorted(edges[a] & members):
                print(f'  {name(a)} -> {name(b)}: {", ".join(sorted(why[a, b]))}')
    found.sort(key=lambda p: (len(p), p))
    limit = 1000 if '--all' in sys.argv else 25
    print(f'  {len(found)} elementary cycle(s), shortest first:')
    for p in found[:limit]:
        print('  cycle: ' + ' -> '.join(name(m) for m in p))
    if len(found) > limit:
        print(f'  ... {len(found) - limit} more (--all lists them)')
sys.exit(1 if cyc else 0)
