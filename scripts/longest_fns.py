#!/usr/bin/env python3
"""Lists the longest Rust functions under a source directory: lines from `fn` to its closing
brace, test modules at the end of a file left out. A brace counter, not a parser: braces in
string and char literals are skipped, which is enough for this code base.

    python3 scripts/longest_fns.py src 10
"""
import pathlib
import re
import sys

FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')


def code_of(line):
    """The line without its comment and with string and char literals emptied."""
    code = re.sub(r'"(\\.|[^"\\])*"', '""', line.split('//')[0])
    return re.sub(r"'(\\.|[^'\\])'", "''", code)


def functions(path):
    """(length, line number, name) of each function of a file."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith('#[cfg(test)]'):
            return
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, opened, j = 0, False, i
        while j < len(lines):
            code = code_of(lines[j])
            depth += code.count('{') - code.count('}')
            opened = opened or '{' in code
            if (opened and depth <= 0) or (not opened and code.rstrip().endswith(';')):
                break
            j += 1
        if opened:
            yield j - i + 1, i + 1, m.group(6)
        i = j + 1


def main():
    root = pathlib.Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    rows = []
    for path in sorted(root.rglob('*.rs')):
        for length, line, name in functions(path):
            rows.append((length, f"{path.relative_to(root.parent)}:{line}", name))
    for length, where, name in sorted(rows, reverse=True)[:count]:
        print(f"{length:5d}  {name:32s} {where}")


if __name__ == '__main__':
    main()
