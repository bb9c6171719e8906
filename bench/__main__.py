"""The benchmark runner: python -m bench [--workloads mlp,cnn,...] [--reps 3] [--json FILE] [--smoke]

Each framework x workload runs in its own process with 2 BLAS threads (override with --threads;
``--threads auto`` leaves each framework its default: lamina's thread governor, PyTorch's one thread per
core), lamina and PyTorch alternating within each repetition so that drift on a shared machine hits both. The
machine's own float32 GEMM rate is measured in the same run. Prints median ms/step (min-max over
repetitions' medians), the ratio lamina/PyTorch, peak memory, and lamina's GFLOP/s against the GEMM ceiling.
``--contention N`` keeps N busy processes (pure-Python spin loops) running during every measurement: the
shared-machine case, where a BLAS thread team that counts on every core collapses. A run during which a
virtual machine's host took more than a tenth of a core away (steal time) is measured again, up to twice.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

from . import save_json
from .workloads import WORKLOADS


def _idle_wait(limit_s=60.0, threshold=0.3):
    """Wait until other processes use less than `threshold` cores (or give up after limit_s)."""
    from .worker import _proc_stat
    hz = os.sysconf("SC_CLK_TCK")
    end = time.time() + limit_s
    while time.time() < end:
        b0, _ = _proc_stat()
        time.sleep(1.0)
        b1, _ = _proc_stat()
        if (b1 - b0) / hz < threshold:
            return True
    return False


def _kernels_env(env, coretype):
    """OpenBLAS's kernel variables for a 'lamina+NAME' row. Some machines set OPENBLAS_CORETYPE (with
    OPENBLAS_L2_SIZE) for all processes, to keep old OpenBLAS builds off kernels that fail on their CPU; a
    current NumPy runs slower for it. Both go together: 'native' drops both (OpenBLAS detects the CPU
    itself), any other NAME forces those kernels. Each run records which kernels it got (machine.blas)."""
    env.pop("OPENBLAS_L2_SIZE", None)
    if coretype == "native":
        env.pop("OPENBLAS_CORETYPE", None)
    else:
        env["OPENBLAS_CORETYPE"] = coretype


def _malloc_env(env):
    """A 'torch+malloc' row: PyTorch with glibc's allocator set as lamina sets it for itself at import
    (lamina.backend._tune_malloc, through mallopt; here through glibc's environment variables). On a VM where
    page faults are dear, freshly mapped activation buffers cost either framework much of a step; lamina
    avoids them by default, PyTorch does not, so this row shows how much of a ratio is the allocator."""
    from lamina.backend import MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD
    env["MALLOC_MMAP_THRESHOLD_"] = str(MALLOC_MMAP_THRESHOLD)
    env["MALLOC_TRIM_THRESHOLD_"] = str(MALLOC_TRIM_THRESHOLD)


def _run_worker(framework, workload, threads, extra, root=None):
    """One bench.worker process, its RESULT as a dict (or an 'error' entry). ``root``: the checkout to run
    it in, its own lamina and bench first on the path (bench.ab's other revision); default this one."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LAMINA_NUM_THREADS"):
        env.pop(k, None)
        if threads != "auto" and k != "LAMINA_NUM_THREADS":
            env[k] = str(threads)
    if framework == "torch+malloc":
        _malloc_env(env)
    elif "+" in framework:  # 'lamina+SkylakeX': lamina with OpenBLAS's kernels chosen by hand (machine tuning)
        _kernels_env(env, framework.split("+", 1)[1])
    name, _, size = workload.partition("@")  # 'mlp@large': the large variant
    cmd = [sys.executable, "-m", "bench.worker", framework, name, "--size", size or "base"] + extra
    if root is None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    else:
        env["PYTHONPATH"] = root
    out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]), workload=workload)
    return {"framework": framework, "workload": workload, "error": (out.stderr or out.stdout).strip()[-2000:]}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--frameworks", default="lamina,torch")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=_threads_arg, default=2, help="BLAS threads per process, or 'auto'")
    p.add_argument("--contention", type=int, default=0, metavar="N",
                   help="keep N busy processes running during the measurements (default 0)")
    p.add_argument("--min-steps", type=int, default=30)
    p.add_argument("--min-time", type=float, default=10.0)
    p.add_argument("--json", help=f"where the runs go (default: {DEFAULT_JSON} for a full default run only: every "
                                  "workload, both frameworks, 2 threads, no contention, base size on the CPU; "
                                  "another run is kept only where you say)")
    p.add_argument("--smoke", action="store_true", help="one warm-up step and one timed step per run (a test)")
    p.add_argument("--no-idle-wait", action="store_true")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: both frameworks on the GPU (lamina through CuPy); no GEMM probe, no idle wait")
    p.add_argument("--size", default="base", help="base, large (the GPU issue's bigger batches) or base,large")
    p.add_argument("--openblas-coretype", metavar="NAME",
                   help="also run lamina with OPENBLAS_CORETYPE=NAME ('native': OpenBLAS's own detection, the "
                        "machine's OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset), reported as its own row "
                        "'workload[NAME]'. Default: 'native' where the environment sets OPENBLAS_CORETYPE "
                        "(a machine-wide pin slows a current NumPy: both rows are shown), else none; "
                        "'none': no extra row")
    p.add_argument("--torch-malloc", choices=("auto", "none"), default="auto",
                   help="also run PyTorch with glibc's allocator tuned as lamina tunes its own (rows 'vs "
                        "torch[malloc]'); 'auto': where lamina's tuning applies (Linux, glibc)")
    a = p.parse_args(argv)
    if a.openblas_coretype is None and os.environ.get("OPENBLAS_CORETYPE") and a.device == "cpu":
        a.openblas_coretype = "native"
        print(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set for this machine: lamina also runs "
              "with OpenBLAS's own kernel choice, the rows marked [native]", flush=True)
    if a.openblas_coretype == "none":
        a.openblas_coretype = None
    extra = ["--min-steps", str(a.min_steps), "--min-time", str(a.min_time)]
    if a.smoke:
        extra = ["--min-steps", "1", "--min-time", "0", "--warmup", "1"]
        a.reps = 1
    sizes = [s for s in a.size.split(",") if s]
    workloads = [w if s == "base" else f"{w}@{s}" for s in sizes for w in a.workloads.split(",") if w]
    extra += ["--device", a.device]
    if a.device == "cuda":
        a.no_idle_wait = True
    frameworks = [f for f in a.frameworks.split(",") if f]
    if a.openblas_coretype:
        frameworks.append(f"lamina+{a.openblas_coretype}")
    if a.torch_malloc == "auto" and "torch" in frameworks and a.device == "cpu":
        from lamina.backend import MALLOC_TUNED
        if MALLOC_TUNED:
            frameworks.append("torch+malloc")
    if a.device == "cpu" and not a.smoke and any(f.startswith("lamina") for f in frameworks):
        _build_kernels()
    runs = []
    if a.contention:
        a.no_idle_wait = True
    with _busy(a.contention):
        _measure(a, frameworks, workloads, extra, runs)
    report = summarise(runs, workloads, frameworks)
    machine = _machine()
    print(report)
    archs = ", ".join(str(b.get("architecture")) for b in machine.get("blas", [])) or "?"
    print(f"machine: {describe_cpu(machine)}; BLAS kernels {archs}; element-wise kernels {machine['kernels']}")
    path = _json_path(a)
    if path is None:
        print(f"(not saved to {DEFAULT_JSON}, which holds full default runs: pass --json FILE to keep this one)")
    else:
        save_json(path, {"runs": runs, "machine": machine, "threads": a.threads, "contention": a.contention})
    bad = [r for r in runs if "error" in r or r.get("loss_decreased") is False]
    return 1 if bad else 0


DEFAULT_JSON = "bench/results.json"


def kernels_off():
    """Whether the environment switches lamina's compiled kernels off (LAMINA_KERNELS=numpy) for the workers this
    runner starts (read here, not through lamina.ops.kernels.mode(): the workers, not this process, run them, and
    bench.ab's base tree is another lamina)."""
    return os.environ.get("LAMINA_KERNELS", "").strip().lower() == "numpy"


def _json_path(a):
    """Where the parsed arguments' runs are written: --json, else DEFAULT_JSON for a full default run (every
    workload, lamina and torch, 2 threads, no contention, the base size on the CPU, not a smoke run, the compiled
    kernels not switched off by LAMINA_KERNELS=numpy), else nowhere: a partial run written there replaced the full
    table that bench/README.md cites."""
    if a.json:
        return a.json
    full = (set(w for w in a.workloads.split(",") if w) == set(WORKLOADS)
            and {"lamina", "torch"} <= set(a.frameworks.split(",")) and a.threads == 2 and not a.contention
            and a.size == "base" and a.device == "cpu" and not a.smoke
            and not kernels_off())
    return DEFAULT_JSON if full else None


def _threads_arg(value):
    if value == "auto":
        return value
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("threads must be a positive integer or 'auto'")
    return n


@contextlib.contextmanager
def _busy(n):
    """N processes spinning in pure Python (no BLAS, no memory traffic): another user's job on the machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _measure(a, frameworks, workloads, extra, runs):
    if not a.smoke and a.device == "cpu":
        gemms = ["gemm-numpy", "gemm-torch"] + ([f"gemm-numpy+{a.openblas_coretype}"] if a.openblas_coretype else [])
        for fw in gemms:
            if not a.no_idle_wait:
                _idle_wait()
            runs.append(_run_worker(fw, "gemm", a.threads, extra))
    for rep in range(a.reps):
        for w in workloads:
            order = frameworks if rep % 2 == 0 else frameworks[::-1]
            for fw in order:
                for attempt in range(1 + STEAL_RETRIES):
                    if not a.smoke and not a.no_idle_wait:
                        _idle_wait()
                    r = _run_worker(fw, w, a.threads, extra)
                    r["rep"] = rep
                    runs.append(r)
                    status = r.get("error", "").splitlines()[-1:] if "error" in r else f"{r['median_ms']:.1f} ms"
                    stolen = _stolen(r) and attempt < STEAL_RETRIES and not a.smoke
                    if stolen:
                        r["discarded"] = f"steal {r['steal_cpu']:.2f} cores"
                        status += f" (discarded: the hypervisor took {r['steal_cpu']:.2f} cores; measured again)"
                    print(f"  rep {rep} {w:12s} {fw:7s} {status}", file=sys.stderr, flush=True)
                    if not stolen:
                        break


# A virtual machine's host can take its cores away mid-measurement ("steal" time in /proc/stat, which the
# worker records as cores' worth over its timed loop). On the 2-core VM one transformer run in a full bench
# lost 0.38 cores that way and measured 105.9 ms against 58.5-64.3 in the other repetitions. Such a run says
# nothing about either framework: it is measured again (up to STEAL_RETRIES times, whichever framework it
# was), and the discarded run stays in the JSON, marked, out of the table.
STEAL_LIMIT = 0.10
STEAL_RETRIES = 2


def _stolen(r):
    return "error" not in r and r.get("steal_cpu", 0.0) > STEAL_LIMIT


def _build_kernels():
    """lamina's compiled kernels built ahead of time before measuring, where numba can build them and they are
    not built (``lamina kernels``): without them each lamina worker would load numba and LLVM, ~125 MB that are
    not lamina's."""
    import importlib.util
    from lamina.ops import kernels, kernels_aot
    if kernels.mode() == "numpy" or importlib.util.find_spec("numba") is None or kernels_aot.module_paths():
        return
    print("building lamina's compiled kernels for this machine first (lamina kernels, ~20 s)...", flush=True)
    try:
        kernels_aot.build()
    except Exception as e:   # no C compiler: the workers compile in-process, and the report says so
        print(f"  not built ({type(e).__name__}: {e}); lamina's workers compile them in-process", flush=True)


# The cores behind the names virtual machines give ("AMD EPYC", "Intel(R) Xeon(R) Processor"): (vendor, family)
# -> (first model, last model, core). Zen 3 and Zen 4 both say "AMD EPYC"; Sapphire and Emerald Rapids both
# say "Xeon"; their GEMM kernels, and so the ratios against PyTorch, differ.
_CORES = {
    ("AuthenticAMD", 0x17): [(0x00, 0x2F, "Zen / Zen+"), (0x30, 0xAF, "Zen 2")],
    ("AuthenticAMD", 0x19): [(0x00, 0x0F, "Zen 3"), (0x10, 0x1F, "Zen 4"), (0x20, 0x5F, "Zen 3"),
                             (0x60, 0x7F, "Zen 4"), (0xA0, 0xAF, "Zen 4c")],
    ("AuthenticAMD", 0x1A): [(0x00, 0xFF, "Zen 5")],
    ("GenuineIntel", 6): [(0x55, 0x55, "Skylake / Cascade Lake (server)"), (0x6A, 0x6C, "Ice Lake (server)"),
                          (0x8F, 0x8F, "Sapphire Rapids"), (0xCF, 0xCF, "Emerald Rapids"),
                          (0xAD, 0xAE, "Granite Rapids")],
}
_ISA = ("avx2", "avx512f", "avx512_bf16", "amx_tile")  # what decides which GEMM kernels a BLAS can run


def cpu_identity(text):
    """The first processor of a /proc/cpuinfo text: its name, vendor, family, model, stepping, the core these
    numbers name (None where not in _CORES) and which of _ISA it has."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    ident = {"cpu": fields.get("model name")}
    try:
        vendor, family, model = fields["vendor_id"], int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return ident
    core = next((name for lo, hi, name in _CORES.get((vendor, family), ()) if lo <= model <= hi), None)
    flags = set(fields.get("flags", "").split())
    ident.update(vendor=vendor, family=family, model=model, stepping=int(step) if (step := fields.get("stepping", "")).isdigit() else None,
                 core=core,
                 isa=[f for f in _ISA if f in flags])
    return ident


def describe_cpu(ident):
    """One line for the table's foot: 'AMD EPYC (Zen 4: family 25, model 17; avx2 avx512f)'."""
    name = ident.get("cpu") or "?"
    if "family" not in ident:
        return name
    core = f"{ident['core']}: " if ident.get("core") else ""
    isa = " ".join(ident.get("isa") or ()) or "no AVX2"
    return f"{name} ({core}family {ident['family']}, model {ident['model']}; {isa})"


def _machine():
    info = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        with open("/proc/cpuinfo") as f:
            ident = cpu_identity(f.read())
        info.update({k: v for k, v in ident.items() if v is not None})
    except OSError:
        pass
    try:  # which BLAS and which of its kernels (OpenBLAS's core type) NumPy runs on this CPU
        from lamina.threads import blas_info
        info["blas"] = blas_info()
    except ImportError:  # pragma: no cover
        pass
    import importlib.util
    from importlib.metadata import version
    from lamina.ops import kernels, kernels_aot   # compiled element-wise kernels, or NumPy's passes
    if kernels.mode() == "numpy":
        info["kernels"] = "numpy"
    elif kernels_aot.module_paths() is not None:
        info["kernels"] = "built ahead of time ('lamina kernels')"
    elif importlib.util.find_spec("numba") is not None:
        info["kernels"] = f"numba {version('numba')}, compiled in-process"
    else:
        info["kernels"] = "numpy (numba not installed)"
    return info


def _row(label, la, to, ceiling):
    """One table row: lamina cell la against torch cell to (median, min, max, MB, GFLOP/s, loss ok)."""
    fmt = lambda c: f"{c[0]:8.2f} ({c[1]:.1f}-{c[2]:.1f})" if c else "error"
    ratio = f"{la[0] / to[0]:6.2f}" if la and to else "   n/a"
    mem = f"{la[3] / to[3]:6.2f}" if la and to else "   n/a"
    gf = f"{la[4]:8.1f}" if la else "     n/a"
    pct = f"{100 * la[4] / ceiling:5.0f}%" if la and ceiling else "   n/a"
    ok = ("yes" if la and la[5] else "NO") + "/" + ("yes" if to and to[5] else "NO")
    return (f"{label:32s} {fmt(la):>22s} {fmt(to):>22s} {ratio} {la[3] if la else 0:9.0f} "
            f"{to[3] if to else 0:9.0f} {mem} {gf} {pct} {ok:>8s}")


def summarise(runs, workloads, frameworks):
    gemm = {r["framework"]: r for r in runs if r.get("workload") == "gemm" and "error" not in r}
    ceiling = gemm.get("gemm-numpy", {}).get("gflops_median")
    lines = []
    if gemm:
        lines.append("GEMM 1024^3 float32: " + ", ".join(f"{k[5:]} {v['gflops_median']:.1f} GFLOP/s" for k, v in gemm.items()))
    lines.append(f"{'workload':32s} {'lamina ms (min-max)':>22s} {'torch ms (min-max)':>22s} {'ratio':>6s} "
                 f"{'lamina MB':>9s} {'torch MB':>9s} {'mem x':>6s} {'GFLOP/s':>8s} {'%gemm':>6s} {'loss ok':>8s}")
    for w in workloads:
        cells = {}
        for fw in frameworks:
            rs = [r for r in runs if r.get("workload") == w and r.get("framework") == fw and "error" not in r
                  and not r.get("discarded")]
            if rs:
                meds = [r["median_ms"] for r in rs]
                # memory: host peak RSS on the CPU, device memory held on the GPU
                cells[fw] = (statistics.median(meds), min(meds), max(meds),
                             max(r.get("gpu_mem_mb", r["peak_rss_mb"]) for r in rs),
                             statistics.median(r["gflops"] for r in rs),
                             all(r.get("loss_decreased") in (True, None) for r in rs))
        lines.append(_row(w, cells.get("lamina"), cells.get("torch"), ceiling))
        variants = [f for f in frameworks if f.startswith("lamina+")]
        for variant in variants:
            lines.append(_row(f"{w}[{variant[7:]}]", cells.get(variant), cells.get("torch"), ceiling))
        if "torch+malloc" in frameworks:   # the same lamina cells against PyTorch with lamina's allocator settings
            for variant in ["lamina"] + variants:
                label = w if variant == "lamina" else f"{w}[{variant[7:]}]"
                lines.append(_row(f"{label} vs t[malloc]", cells.get(variant), cells.get("torch+malloc"), ceiling))
    errors = [r for r in runs if "error" in r]
    for r in errors:
        lines.append(f"ERROR {r['framework']} {r['workload']}: {r['error'].splitlines()[-1] if r['error'] else '?'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
