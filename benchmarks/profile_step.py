"""Where the time of a training step or of an evaluation loop goes: XLA's own per-operation
profile (``jax.profiler`` trace), printed as JSON.

    python benchmarks/profile_step.py [--variant rhmdiff|reference] [--width 1024] [--optimizer sgd] [--steps 10]
    python benchmarks/profile_step.py --case d3pm_sampler [--path device|loop] [--num 256] [--width 256] [--T 1000]

``--case train`` (default) runs ``--steps`` steps of the trainer's chunk (as ``bench_unet.py``:
batch 32, the ``rhm_L3`` grammar, one ``lax.scan``); the other cases are ``eval_cases.py``'s
(``d3pm_sampler``, ``oracle_sampler``, ``d3pm_bound``, ``oracle_bound``, ``md4_sampler``), run
as the library's loop on the device (``--path device``) or as the host loop of T jitted steps
(``--path loop``), and a "step" is then one diffusion step of all ``--num`` sequences. The run
is timed without the profiler (median of 3 after a compile), then once under
``jax.profiler.trace``, whose perfetto JSON gives the *exclusive* time of every executed XLA
operation (its duration less that of the operations it runs inside, e.g. a ``while`` body's);
XLA's optimized HLO, dumped while the programs compile, says what each operation is. Printed:
``wall_ms_per_step``, ``ops_ms_per_step`` (all operations; several run at once on several
cores), ``top``: the operations with the most time (ms per step, share of ``ops_ms_per_step``,
its program and ``hlo``: shape and opcode and, for a fusion, the opcodes fused into it), and
``by_kind``: the same grouped by the operation's name without its ``.N`` suffix (``fusion``,
``dot``, ``convolution``, ``while``...).
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import eval_cases
import jax
from measure import config, rhm_step, timed

from rhmdiff.models import unet


def op_events(trace_dir: str) -> list[dict]:
    """The executed XLA operations of a trace: ``{"name": (program, operation), "tid", "ts",
    "dur"}`` (microseconds)."""
    (path,) = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "perfetto_trace.json.gz"))
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [{"name": (e["args"].get("hlo_module", ""), e["args"]["hlo_op"]), "tid": e["tid"], "ts": e["ts"],
             "dur": e["dur"]}
            for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]


def exclusive_times(events: list[dict]) -> collections.Counter:
    """Total exclusive duration per operation name: nested operations (same thread, inside
    another's interval) are subtracted from their enclosing one."""
    totals = collections.Counter()
    for tid in {e["tid"] for e in events}:
        stack = []  # enclosing events, innermost last
        for e in sorted((e for e in events if e["tid"] == tid), key=lambda e: (e["ts"], -e["dur"])):
            while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"]:
                stack.pop()
            totals[e["name"]] += e["dur"]
            if stack:
                totals[stack[-1]["name"]] -= e["dur"]
            stack.append(e)
    return totals


SETUP_OPCODES = {"parameter", "bitcast", "get-tuple-element", "tuple", "constant", "broadcast"}  # not listed in fusions


def hlo_lines(hlo_text: str) -> dict[str, str]:
    """Operation name -> what it is: its shape and HLO opcode, and for a fusion the opcodes it
    fuses (``f32[32,1024] fusion [dot, add, multiply]``)."""
    computations, current, defs = collections.defaultdict(list), None, {}
    for line in hlo_text.splitlines():
        head = re.match(r"\s*%?([\w.\-]+) .*\{\s*$", line)
        if head and " = " not in line:
            current = head.group(1)
            continue
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)", line)
        if m:
            name, shape, opcode, rest = m.groups()
            defs.setdefault(name, (shape, opcode, rest))
            if current is not None:
                computations[current].append(opcode)
    out = {}
    for name, (shape, opcode, rest) in defs.items():
        called = re.search(r"calls=%?([\w.\-]+)", rest)
        inner = computations.get(called.group(1), []) if called else []
        kinds = list(dict.fromkeys(k for k in inner if k not in SETUP_OPCODES))
        out[name] = f"{shape} {opcode}" + (f" [{', '.join(kinds)}]" if kinds else "")
    return out


def dumped_hlo(dump_dir: str, ops) -> dict[str, dict[str, str]]:
    """Program name -> :func:`hlo_lines` of its optimized HLO, from XLA's ``--xla_dump_to``;
    ``ops``: the traced ``(program, operation)`` names. Where several programs share a name
    (every ``pmap`` is ``jit__fun``), the one that defines the most of the traced operations."""
    found = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(dump_dir, "module_*after_optimizations.txt"))):
        with open(path) as f:
            text = f.read()
        name = re.match(r"HloModule ([\w.\-]+)", text)
        if name:
            found[name.group(1)].append(hlo_lines(text))
    traced = collections.defaultdict(set)
    for program, op in ops:
        traced[program].add(op)
    return {name: max(modules, key=lambda lines: len(traced[name] & lines.keys())) for name, modules in found.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("train",) + eval_cases.CASES, default="train")
    parser.add_argument("--variant", choices=unet.VARIANTS, default="rhmdiff")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--path", choices=("device", "loop"), default="device")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as dump_dir, tempfile.TemporaryDirectory() as trace_dir:
        # read when JAX starts its backend, on the first computation below
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
        if args.case == "train":
            c = config("rhm_L3")
            c.model.update(variant=args.variant, width=args.width)
            c.train.update(optimizer=args.optimizer, lr=0.1 if args.optimizer == "sgd" else 1e-4,
                           steps_per_call=args.steps)
            trainer, x = rhm_step(c)
            run, steps = lambda: trainer.run(x), args.steps
            row = {"case": "train", "variant": args.variant, "width": args.width, "optimizer": args.optimizer}
        else:
            case = eval_cases.cases(args.num, args.width, args.T)[args.case]
            run, steps = getattr(case, args.path), case.steps
            row = {"case": args.case, "path": args.path, "num": args.num, "width": args.width}
        # without the profiler
        wall = timed(run, 3).median_s
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            jax.block_until_ready(run())
        totals = exclusive_times(op_events(trace_dir))
        hlo = dumped_hlo(dump_dir, totals)
    per_step = {name: us / 1e3 / steps for name, us in totals.items()}
    ops_ms = sum(per_step.values())
    kinds = collections.Counter()
    for (_, op), ms in per_step.items():
        kinds[re.sub(r"\.\d+$", "", op)] += ms
    row.update(steps=steps, wall_ms_per_step=1e3 * wall / steps, ops_ms_per_step=ops_ms,
               top=[{"op": op, "program": program, "ms_per_step": round(ms, 3), "share": round(ms / ops_ms, 3),
                     "hlo": hlo.get(program, {}).get(op, "")[:160]}
                    for (program, op), ms in sorted(per_step.items(), key=lambda kv: -kv[1])[:args.top]],
               by_kind={k: {"ms_per_step": round(ms, 3), "share": round(ms / ops_ms, 3)}
                        for k, ms in kinds.most_common(args.top)})
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
