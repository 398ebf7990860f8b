#!/usr/bin/env python3
"""What takes the space in a release binary, from the GNU ld map file of its link.

    EDGEWATCH_CROSS_MAP=/tmp/edgewatch.map cross/build.sh aarch64-unknown-linux-musl
    python3 cross/size-report.py /tmp/edgewatch.map [--top 25]

The release profile strips the binary, so cargo-bloat (which reads symbols) cannot look at it.
The map still lists every input section the linker kept: rustc puts each function and each
constant in a section of its own (.text.SYMBOL, .rodata.SYMBOL), so the sizes can be summed per
crate, as cargo-bloat does, after link-time optimization and --gc-sections. Code from C and
assembly (ring, tract-linalg's kernels, musl) is counted per archive.
Prints: bytes per output section kind, the largest crates, the largest symbols.
"""
import argparse
import collections
import os
import re
import sys

LINE = re.compile(r"^ (\.[^\s]+)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(.*))?$")
CONT = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(.*)$")
HASH = re.compile(r"17h[0-9a-f]{16}E$")


def kind_of(section):
    for k in (".text", ".rodata", ".data.rel.ro", ".data", ".bss", ".tbss", ".tdata",
              ".eh_frame_hdr", ".eh_frame", ".gcc_except_table", ".init_array"):
        if section == k or section.startswith(k + "."):
            return k
    return section


def legacy_components(sym):
    """The path components of a Rust legacy-mangled name (_ZN...E), or None."""
    if not sym.startswith("_ZN"):
        return None
    i, out = 3, []
    while i < len(sym) and sym[i].isdigit():
        j = i
        while sym[j].isdigit():
            j += 1
        n = int(sym[i:j])
        out.append(sym[j:j + n])
        i = j + n
    return out or None


B62 = re.compile(r"[0-9a-zA-Z]*_")


def skip_disambiguator(sym, i):
    """The index after an optional disambiguator s<base62>_ at sym[i]; None when it is cut off."""
    if not sym.startswith("s", i):
        return i
    m = B62.match(sym, i + 1)
    return m.end() if m else None


def v0_crate(sym):
    """The first crate root of a Rust v0-mangled name (_R...): the crate of the item, of an
    impl's module, or of the generic function instantiated; None when it is not found before
    something this short reader does not follow (a back-reference, a type)."""
    i = 2
    if i < len(sym) and sym[i].isdigit():  # encoding version
        i += 1
    while i < len(sym):
        c = sym[i]
        if c == "N":  # nested path: a namespace character follows
            i += 2
        elif c in "MX":  # inherent or trait impl: an optional disambiguator, then its module
            i = skip_disambiguator(sym, i + 1)
            if i is None:
                return None
        elif c in "IYRQPSA":  # generic arguments, <T as Trait>, references, pointers, slices
            i += 1
        elif c == "C":  # the crate root: optional disambiguator s<base62>_, then its name
            i = skip_disambiguator(sym, i + 1)
            if i is None:
                return None
            m = re.match(r"(\d+)_?", sym[i:])
            if not m:
                return None
            n = int(m.group(1))
            start = i + m.end()
            return sym[start:start + n] or None
        else:
            return None
    return None


def crate_of(sym, obj):
    """The crate a section belongs to: the first path component, or for
    `<Type as Trait>::f` the crate of Type; C and assembly objects by their archive."""
    base = os.path.basename(obj)
    m = re.match(r"(lib[^()]+\.a)\(", base)
    rust_obj = ".rcgu.o" in base or base.endswith(".rlib") or ".rlib(" in base
    comps = legacy_components(sym) if sym else None
    if comps:
        first = comps[0]
        if first.startswith("_$LT$"):
            inner = first[5:]
            inner = re.sub(r"^(\$RF\$|\$BP\$|mut\$u20\$|\$u5b\$|dyn\$u20\$)+", "", inner)
            first = re.split(r"\.\.|\$u20\$|\$LT\$|\$GT\$|\$C\$|\$u5d\$|\$u3b\$", inner)[0] or "?"
        return first
    if m and not rust_obj:
        return "[C/asm] " + m.group(1)
    if sym and sym.startswith("_R"):
        return v0_crate(sym) or "[v0-mangled]"
    if not rust_obj:
        return "[C/asm] " + base
    return "[other rust] " + (sym or "?")[:40]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("map")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()

    lines = open(a.map, errors="replace").read().splitlines()
    try:
        start = lines.index("Linker script and memory map")
    except ValueError:
        sys.exit("not a GNU ld map file (no 'Linker script and memory map')")

    by_kind = collections.Counter()
    by_crate = collections.Counter()
    by_crate_text = collections.Counter()
    by_sym = collections.Counter()
    pending = None
    for line in lines[start:]:
        m = LINE.match(line)
        if m:
            sec = m.group(1)
            if m.group(2) is None:
                pending = sec
                continue
            addr, size, obj = m.group(2), int(m.group(3), 16), m.group(4)
        else:
            c = CONT.match(line)
            if not (c and pending):
                pending = None
                continue
            sec, addr, size, obj = pending, c.group(1), int(c.group(2), 16), c.group(3)
            pending = None
        if size == 0 or int(addr, 16) == 0:
            continue
        kind = kind_of(sec)
        if kind in (".bss", ".tbss"):
            continue  # takes no file space
        sym = sec[len(kind) + 1:] if sec.startswith(kind + ".") else ""
        for prefix in ("unlikely.", "hot.", "startup.", "exit.", "split."):
            if sym.startswith(prefix):  # function sections that GCC and LLVM group by use
                sym = sym[len(prefix):]
        crate = crate_of(sym, obj)
        by_kind[kind] += size
        by_crate[crate] += size
        if kind == ".text":
            by_crate_text[crate] += size
        name = HASH.sub("", sym) if sym else f"{sec} ({os.path.basename(obj)})"
        by_sym[name] += size

    total = sum(by_kind.values())
    print(f"input sections kept: {total:,} bytes (file size also has headers, symbol-less"
          " .eh_frame_hdr, alignment)")
    print("\nby section kind:")
    for k, v in by_kind.most_common():
        print(f"  {v:>12,}  {100 * v / total:5.1f}%  {k}")
    print(f"\ntop {a.top} crates (all sections; .text in brackets):")
    for k, v in by_crate.most_common(a.top):
        print(f"  {v:>12,}  {100 * v / total:5.1f}%  [{by_crate_text[k]:>10,}]  {k}")
    print(f"\ntop {a.top} symbols:")
    for k, v in by_sym.most_common(a.top):
        print(f"  {v:>12,}  {k[:110]}")


if __name__ == "__main__":
    main()
