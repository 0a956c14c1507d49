#!/usr/bin/env python3
"""make check-layers: the layer rule of docs/architecture.md, checked on every include.

src/LAYER/*.c and include/LAYER/*.h belong to LAYER. A file may include a header of its
own layer or of a layer below it (the closure of BELOW), never one of a higher or a
sibling layer; a header without a folder must sit beside the file (a private header).
MPI, HDF5 and getopt appear only in the layers named in SYSTEM. Prints one line per
breach (FILE:LINE: what and why) and exits 1 if there is any."""
import os
import re
import sys

# each layer and the layers it builds on directly
BELOW = {
    "base": [],
    "cpu": ["base"],
    "model": ["cpu"],
    "text": ["model"],
    "dist": ["model"],
    "files": ["text", "dist"],
    "run": ["files"],
    "interop": ["files"],
    "cli": ["run", "interop"],
}
# system headers that belong to a few layers: the math never sees MPI or HDF5, and only
# the command line parses options
SYSTEM = {
    "mpi.h": {"dist", "files", "run", "cli"},
    "hdf5.h": {"files", "run", "cli"},
    "getopt.h": {"cli"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def reachable(layer):
    seen, todo = {layer}, [layer]
    while todo:
        for lower in BELOW[todo.pop()]:
            if lower not in seen:
                seen.add(lower)
                todo.append(lower)
    return seen


def check(root):
    allowed = {layer: reachable(layer) for layer in BELOW}
    breaches = []
    for top in ("src", "include"):
        for dirpath, _, names in sorted(os.walk(os.path.join(root, top))):
            rel = os.path.relpath(dirpath, os.path.join(root, top))
            layer = rel.split(os.sep)[0]
            if rel == "." or layer not in BELOW:
                for name in names:
                    breaches.append(f"{top}/{rel}/{name}: not in a layer folder ({', '.join(BELOW)})")
                continue
            for name in sorted(n for n in names if n.endswith((".c", ".h"))):
                path = os.path.join(dirpath, name)
                shown = os.path.relpath(path, root)
                with open(path, encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        kind, header = m.groups()
                        where = f"{shown}:{lineno}"
                        if kind == "<":
                            if header in SYSTEM and layer not in SYSTEM[header]:
                                breaches.append(f"{where}: <{header}> belongs to {sorted(SYSTEM[header])}, not {layer}")
                            continue
                        if "/" not in header:
                            if not os.path.exists(os.path.join(dirpath, header)):
                                breaches.append(f'{where}: "{header}" is neither LAYER/NAME.h nor beside the file')
                            continue
                        target = header.split("/")[0]
                        if target not in BELOW:
                            breaches.append(f'{where}: "{header}" names no layer')
                        elif not os.path.exists(os.path.join(root, "include", header)):
                            breaches.append(f'{where}: "{header}" is not in include/')
                        elif target not in allowed[layer]:
                            breaches.append(f'{where}: {layer} includes "{header}" of layer {target}, '
                                            f'which is not below it')
    return breaches


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    breaches = check(root)
    for b in breaches:
        print(b)
    if breaches:
        print(f"check-layers: {len(breaches)} breach(es) of the layer rule (docs/architecture.md)", file=sys.stderr)
        return 1
    print("check-layers: every include follows the layer rule")
    return 0


if __name__ == "__main__":
    sys.exit(main())
