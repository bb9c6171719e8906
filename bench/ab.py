"""A/B timing of two revisions of lamina: python -m bench.ab [--base REV] [--workloads cnn,lstm] [--pairs 6]

How the changes of issue 19's second round were measured (bench/README.md): the machine drifts by tens of
percent for minutes at a time, so one run per revision says little. Instead the base revision is checked out
into a temporary git worktree, and for each pair one process of the base and one of the working tree (the
order alternating) run the same workload with the same BLAS threads (bench.worker, each tree's own copy);
the table gives both medians, their ratio and every pair's ratio (new / base: below 1 is faster).
Nothing else should run meanwhile.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from .__main__ import _build_kernels, _run_worker, kernels_off
from .workloads import WORKLOADS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(tree, workload, threads, steps, warmup):
    r = _run_worker("lamina", workload, threads,
                    ["--min-steps", str(steps), "--min-time", "0", "--warmup", str(warmup)], root=tree)
    if "error" in r:
        raise RuntimeError(f"{workload} in {tree} failed:\n{r['error']}")
    return r["median_ms"]


def _build_tree_kernels(tree, report):
    """The base tree's compiled kernels built before measuring, as ``python -m bench`` builds this tree's: else its
    workers would compile them in-process (numba's JIT, ~1 s a process) or, where they still warm up, run NumPy's
    code for a while. A revision without the ahead-of-time build, or a machine without numba, is left as it is."""
    if kernels_off():   # (the workers would not run them)
        return
    code = ("import importlib.util, sys\n"
            "try:\n    from lamina.ops import kernels_aot\nexcept ImportError:\n    sys.exit(0)\n"
            "if importlib.util.find_spec('numba') and kernels_aot.module_paths() is None:\n    kernels_aot.build()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=dict(os.environ, PYTHONPATH=tree),
                         capture_output=True, text=True)
    if out.returncode:
        report(f"the base revision's kernels were not built ({out.stderr.strip()[-300:]}); its workers compile them")


def compare(base, workloads, pairs, threads=2, steps=30, warmup=5, report=print):
    """{workload: (base medians, new medians)} over ``pairs`` alternating process pairs."""
    with tempfile.TemporaryDirectory(prefix="lamina-ab-") as tmp:
        tree = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", tree, base], cwd=ROOT, check=True)
        try:
            _build_kernels()
            _build_tree_kernels(tree, report)
            results = {}
            for w in workloads:
                a, b = [], []
                for i in range(pairs):
                    order = [(tree, a), (ROOT, b)] if i % 2 == 0 else [(ROOT, b), (tree, a)]
                    for where, into in order:
                        into.append(_time(where, w, threads, steps, warmup))
                report(f"{w:12s} " + "  ".join(f"{x:.2f}/{y:.2f}" for x, y in zip(a, b)))
                results[w] = (a, b)
            return results
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, check=False)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[1])
    p.add_argument("--base", default="HEAD", help="git revision to compare the working tree with (default HEAD)")
    p.add_argument("--workloads", default="cnn,lstm,transformer")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="timed steps per process (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args(argv)
    workloads = [w for w in a.workloads.split(",") if w]
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or a.pairs < 1:
        p.error(f"unknown workloads {bad}; valid: {', '.join(WORKLOADS)}" if bad else "--pairs must be >= 1")
    print(f"base {a.base} vs the working tree, {a.pairs} pairs, {a.threads} threads (base/new ms per pair)")
    results = compare(a.base, workloads, a.pairs, a.threads, a.steps, a.warmup)
    print(f"{'workload':12s} {'base ms':>8s} {'new ms':>8s} {'ratio':>6s}  pair ratios")
    for w, (x, y) in results.items():
        mx, my = statistics.median(x), statistics.median(y)
        print(f"{w:12s} {mx:8.2f} {my:8.2f} {my / mx:6.3f}  " + " ".join(f"{b / a_:.3f}" for a_, b in zip(x, y)))


if __name__ == "__main__":
    main()
