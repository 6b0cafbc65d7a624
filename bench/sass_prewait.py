#!/usr/bin/env python3
"""Lists kernels that use a global load before their dependency wait (`griddepcontrol.wait`,
ACQBULK in sm_90 SASS).

A kernel may request loads before its wait so that they are in flight while the previous kernel
finishes, but any instruction that reads a loaded register before the wait (a spill store of it,
arithmetic, a shared-memory store) stalls the warp until the load returns, and so delays the
wait by a memory round trip where the block started late. Usage:

    sass_prewait.py KERNELS.cubin...          (needs cuobjdump on PATH)

Prints one line per offending kernel (the instruction and the load it waits for); exit status 1
when there is any.
"""
import re
import subprocess
import sys

STORES = ("ST", "RED", "ATOM")


def functions(cubin):
    sass = subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True, check=True).stdout
    current, bodies = None, {}
    for line in sass.splitlines():
        named = re.match(r"\s*Function : (\S+)", line)
        if named:
            current = named.group(1)
            bodies[current] = []
            continue
        ins = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if ins and current:
            bodies[current].append((ins.group(1), ins.group(2)))
    return bodies


def width(opcode):
    return 4 if ".128" in opcode else 2 if ".64" in opcode else 1


def early_uses(instructions):
    """(pc, instruction, pc of the load) for each read of a pending load's register before the wait."""
    pending, found = {}, []
    for pc, text in instructions:
        body = re.sub(r"^@!?U?P\w+\s+", "", text)
        opcode = body.split()[0]
        if opcode.startswith("ACQBULK"):
            return found
        operands = [o.strip() for o in body[len(opcode):].split(",")]
        sources = operands if opcode.startswith(STORES) else operands[1:]
        read = {int(r) for o in sources for r in re.findall(r"\bR(\d+)\b", o)}
        read |= {int(r) + 1 for o in sources for r in re.findall(r"\bR(\d+)\.64", o)}
        found += [(pc, text, pending[r]) for r in sorted(read) if r in pending]
        written = re.match(r"R(\d+)$", operands[0]) if operands and not opcode.startswith(STORES) else None
        if written:
            first = int(written.group(1))
            for r in range(first, first + (width(opcode) if opcode.startswith("LD") else 1)):
                pending.pop(r, None)
            if opcode.startswith("LDG") or opcode.startswith("LD."):
                for r in range(first, first + width(opcode)):
                    pending[r] = pc
    return []  # no wait: nothing was requested ahead of one


def main(cubins):
    bad = 0
    for cubin in cubins:
        for name, instructions in functions(cubin).items():
            uses = early_uses(instructions)
            if uses:
                bad += 1
                pc, text, load = uses[0]
                print(f"{cubin}: {name}: /*{pc}*/ {text} reads the load at /*{load}*/ before the wait ({len(uses)} such)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
