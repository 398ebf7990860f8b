#!/usr/bin/env python3
"""Self and inclusive ("children") shares by function from a `perf record --call-graph dwarf`
profile of edgewatch, for when `perf report` cannot read the binary's symbols (perf 6.1 of Debian
bookworm says "cannot get elf header" for the Rust binary and prints bare addresses).

    bench/perf_report.py PERF_DATA BINARY [TOP] [LEAF]

Addresses in BINARY are resolved with binutils' addr2line (the binary needs symbols and line
tables: `cargo build --profile profiling`). Prints the share of samples per thread, the top self
entries by function (the symbol, and the innermost inlined function), and the top inclusive
entries: a sample counts once for every function on its stack, inlined ones included. With
LEAF (a regular expression), it also prints where the samples whose innermost frame matches LEAF
come from: their first callers in edgewatch's code.
"""
import collections
import re
import subprocess
import sys


def main():
    data, binary = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    leaf = re.compile(sys.argv[4]) if len(sys.argv) > 4 else None
    name = binary.rsplit("/", 1)[-1]
    # perf prints an unresolved address as a file offset; addr2line wants a virtual address.
    segments = []
    for line in subprocess.run(["readelf", "-l", "-W", binary], capture_output=True,
                               text=True, check=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            segments.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))

    def vaddr(offset):
        for start, virt, size in segments:
            if start <= offset < start + size:
                return offset - start + virt
        return offset

    script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,sym,dso"],
                            capture_output=True, text=True, check=True).stdout
    samples, current = [], None
    for line in script.splitlines():
        if not line.strip():
            if current:
                samples.append(current)
            current = None
        elif not line[0].isspace():
            current = (line.strip(), [])
        else:
            m = re.match(r"\s*([0-9a-f]+) (.*) \((.*)\)$", line)
            if m and current is not None:
                current[1].append((int(m.group(1), 16), m.group(2), m.group(3)))
    if current:
        samples.append(current)

    addresses = sorted({vaddr(ip) for _, frames in samples for ip, _, dso in frames
                        if dso.endswith(name)})
    chains = {}
    if addresses:
        out = subprocess.run(["addr2line", "-f", "-i", "-C", "-a", "-e", binary],
                             input="\n".join(hex(a) for a in addresses), capture_output=True,
                             text=True, check=True).stdout.splitlines()
        i, address = 0, None
        while i < len(out):
            if out[i].startswith("0x"):
                address = int(out[i], 16)
                chains[address] = []
                i += 1
            else:
                chains[address].append(out[i])  # function name, then its file:line
                i += 2

    def short(function):
        for _ in range(4):
            function = re.sub(r"<[^<>]*>", "", function)
        return function[:100]

    def frames(stack):
        """Per frame, innermost first: (symbol, innermost known function, all functions)."""
        result = []
        for ip, sym, dso in stack:
            if dso.endswith(name):
                chain = [short(c) for c in chains.get(vaddr(ip), ["??"])]
                # addr2line -i names the symbol first, then the inlined callers' functions.
                inner = chain[1] if len(chain) > 1 else chain[0]
                result.append((chain[0], inner, chain))
            else:
                label = f"{re.sub(r' [(]inlined[)]$', '', sym)} [{dso.rsplit('/', 1)[-1]}]"
                result.append((label, label, [label]))
        return result

    n = len(samples)
    threads = collections.Counter(comm for comm, _ in samples)
    self_symbol, self_inner, inclusive, callers = (collections.Counter() for _ in range(4))
    for comm, stack in samples:
        fs = frames(stack)
        if not fs:
            continue
        if leaf and leaf.search(fs[0][0]):
            ours = [inner for _, inner, chain in fs[1:] if "edgewatch" in " ".join(chain)]
            callers[(comm, " <- ".join(ours[:3]) or "?")] += 1
        self_symbol[(comm, fs[0][0])] += 1
        self_inner[(comm, fs[0][1])] += 1
        inclusive.update({f for _, _, chain in fs for f in chain})

    def pct(k):
        return f"{100.0 * k / n:6.2f}%"

    print(f"{n} samples")
    print("== threads")
    for comm, k in threads.most_common():
        print(pct(k), comm)
    print("== self, by symbol")
    for (comm, f), k in self_symbol.most_common(top):
        print(pct(k), comm, f)
    print("== self, by innermost inlined function")
    for (comm, f), k in self_inner.most_common(top):
        print(pct(k), comm, f)
    if leaf:
        print(f"== where the samples of {leaf.pattern} come from")
        for (comm, f), k in callers.most_common(top):
            print(pct(k), comm, f)
    print("== inclusive (children), all threads")
    for f, k in inclusive.most_common(top * 4):
        print(pct(k), f)


if __name__ == "__main__":
    main()
