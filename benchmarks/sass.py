"""Read ptxas's resource report and cuobjdump's SASS: registers, spills, shared memory, and the
instruction mix of each kernel's hottest loop.  Pure text parsing (no tools run here), so the
parsers are tested on canned output.

    parse_ptxas(text)  -> {mangled: {"registers", "stack", "spill_stores", "spill_loads", "smem"}}
    parse_sass(text)   -> {mangled: [Instr(addr, pred, op, operands), ...]}
    hot_loop(instrs)   -> LoopMix or None
"""
from __future__ import annotations

import re
import shutil
import subprocess
from typing import NamedTuple

_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_FUNC = re.compile(r"^\s*Function\s*:\s*(\S+)")
_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_HEX = re.compile(r"0x([0-9a-f]+)")


class Instr(NamedTuple):
    addr: int
    pred: str          # "" or "@P0", "@!P1", ...
    op: str            # "FFMA", "LDS.128", "BRA", ...
    operands: str


class LoopMix(NamedTuple):
    start: int         # address of the loop's first instruction (the back-edge's target)
    end: int           # address of the backward branch
    instructions: int  # in [start, end], NOPs not counted
    ffma: int
    dfma: int
    lds: int           # shared-memory loads (LDS, LDS.64, LDS.128, LDSM)
    ldg: int           # global loads
    loops: int         # backward branches in the function (loops found)


def parse_ptxas(text):
    """`ptxas -v` (or nvcc -Xptxas -v) output -> per entry function: registers, stack bytes,
    spill store/load bytes (a called function's are charged to the entry compiled before it),
    static shared memory bytes (0 when ptxas prints no smem)."""
    out, current = {}, None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = m.group(1)
            out[current] = {"registers": None, "stack": 0, "spill_stores": 0, "spill_loads": 0,
                            "smem": 0}
            continue
        if current is None:
            continue
        rec = out[current]
        m = _FRAME.search(line)
        if m:
            rec["stack"] = max(rec["stack"], int(m.group(1)))
            rec["spill_stores"] += int(m.group(2))
            rec["spill_loads"] += int(m.group(3))
        m = _USED.search(line)
        if m:
            rec["registers"] = int(m.group(1))
            s = _SMEM.search(line)
            rec["smem"] = int(s.group(1)) if s else 0
    return out


def parse_sass(text):
    """`cuobjdump -sass` output -> {mangled function name: [Instr, ...]} in address order."""
    out, current = {}, None
    for line in text.splitlines():
        m = _FUNC.match(line)
        if m:
            current = m.group(1)
            out[current] = []
            continue
        if current is None:
            continue
        m = _INSTR.search(line)
        if m:
            out[current].append(Instr(int(m.group(1), 16), (m.group(2) or "").strip(),
                                      m.group(3), m.group(4).strip()))
    return out


def _target(ins):
    if not ins.op.startswith("BRA"):
        return None
    hexes = _HEX.findall(ins.operands)
    return int(hexes[-1], 16) if hexes else None


def hot_loop(instrs):
    """The hottest innermost loop: among backward branches (BRA to an address below its own;
    the `BRA self` after EXIT is padding, not a loop) whose [target, branch] range holds no other
    loop, the one with the most FFMA + DFMA (ties: the longest).  None when there is no loop."""
    loops = {(t, ins.addr) for ins in instrs
             if (t := _target(ins)) is not None and t < ins.addr}
    if not loops:
        return None
    inner = [(s, e) for s, e in loops
             if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in loops)]

    def mix(s, e):
        body = [i for i in instrs if s <= i.addr <= e and i.op != "NOP"]
        count = lambda *prefixes: sum(1 for i in body if i.op.split(".")[0] in prefixes)  # noqa: E731
        return LoopMix(s, e, len(body), count("FFMA"), count("DFMA"), count("LDS", "LDSM"),
                       count("LDG"), len(loops))

    return max((mix(s, e) for s, e in inner), key=lambda x: (x.ffma + x.dfma, x.instructions))


def demangle(names):
    """{mangled: readable} through c++filt / cu++filt when present (else the names unchanged)."""
    names = list(names)
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    lines = res.stdout.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {n: n for n in names}


def short(readable):
    """'void gl_xpass<float>(const float*, ...)' -> 'gl_xpass<float>'."""
    return readable.split("(")[0].replace("void ", "").strip()
