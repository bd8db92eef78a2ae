"""Rewrites every `cpuid` instruction of a shared library into `int3; nop` (see cpuidmask.c).

usage: patch_cpuid.py LIBRARY.so...   (in place; prints how many sites each had; fails when
none of them had one)

The sites come from `objdump -d` (real instructions, not byte patterns that happen to be 0F A2
inside other instructions); each address is mapped to its file offset through the section
table, and the two bytes there must read 0F A2 before they are replaced.
"""
import os
import re
import shutil
import subprocess
import sys


def sections(path):
    """(vma, size, file offset) of every section, from `objdump -h`."""
    out = subprocess.run(["objdump", "-h", path], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        p = line.split()
        if len(p) >= 7 and p[0].isdigit():
            rows.append((int(p[3], 16), int(p[2], 16), int(p[5], 16)))
    return rows


def cpuid_sites(path):
    out = subprocess.run(["objdump", "-d", path], capture_output=True, text=True, check=True).stdout
    return [int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+0f a2\s+cpuid", out, re.M)]


def patch(path):
    data = bytearray(open(path, "rb").read())
    secs = sections(path)
    sites = cpuid_sites(path)
    if not sites:
        return 0
    for va in sites:
        off = next((va - vma + fo for vma, size, fo in secs if vma <= va < vma + size), None)
        if off is None or data[off : off + 2] != b"\x0f\xa2":
            sys.exit(f"{path}: cpuid at {va:#x} not found at its file offset; nothing written")
        data[off : off + 2] = b"\xcc\x90"
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    shutil.copymode(path, tmp)
    os.replace(tmp, path)
    print(f"{path}: {len(sites)} cpuid sites patched")
    return len(sites)


if __name__ == "__main__":
    if sum(patch(path) for path in sys.argv[1:]) == 0:
        sys.exit("no cpuid instruction in " + " ".join(sys.argv[1:]))
