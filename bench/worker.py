"""One framework x one workload in its own process: the timing protocol of WORKLOADS.md, as JSON on stdout.

Usage: python -m bench.worker FRAMEWORK WORKLOAD [--min-steps 30] [--min-time 10] [--warmup 5]
                              [--size base|large] [--device cpu|cuda]
The thread variables must be set before NumPy or torch is imported: the runner sets them in the environment.
"""
import argparse
import json
import os
import resource
import sys
import time


def _proc_stat():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(v) for v in parts]
    user, nice, system, idle, iowait, irq, softirq, steal = (vals + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _percentile(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _gpu_memory_mb(framework):
    """Device memory held at the end: PyTorch's peak reserved, CuPy's memory pool (both include cached blocks)."""
    if framework.startswith("torch"):
        import torch
        return torch.cuda.max_memory_reserved() / 2 ** 20
    import cupy
    return cupy.get_default_memory_pool().total_bytes() / 2 ** 20


def run(framework, workload, min_steps=30, min_time=10.0, warmup=5, size="base", device="cpu"):
    threads = os.environ.get("OMP_NUM_THREADS", "auto")  # unset: each framework's default ('--threads auto')
    threads = threads if threads == "auto" else int(threads)
    if framework.startswith("torch"):   # 'torch', or 'torch+malloc' (bench.__main__._malloc_env)
        import torch
        if threads != "auto":
            torch.set_num_threads(threads)
        from .workloads import torch_workload

        def build(name):
            return torch_workload(name, size, device)
    elif framework == "lamina" or framework.startswith("lamina+"):
        import lamina
        from .workloads import lamina_workload
        lamina.set_device(device)

        def build(name):
            return lamina_workload(name, size)
    elif framework.startswith("gemm-"):
        return _gemm(framework, min_steps, min_time, warmup, threads)
    else:
        raise SystemExit(f"unknown framework {framework!r}")
    step, flops = build(workload)
    if framework.startswith("lamina") and threads == "auto":
        step = _governed(step)
    rss_setup = _rss_mb()
    t0 = time.perf_counter()
    losses = [step() for _ in range(warmup)]
    warmup_s = time.perf_counter() - t0
    times = []
    hz = os.sysconf("SC_CLK_TCK")
    busy0, steal0 = _proc_stat()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    while len(times) < min_steps or sum(times) < min_time:
        s = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - s)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    busy1, steal1 = _proc_stat()
    foreign = max(0.0, ((busy1 - busy0) / hz - cpu) / wall)
    ms = [t * 1000 for t in times]
    med = _percentile(ms, 0.5)
    extra = {"gpu_mem_mb": _gpu_memory_mb(framework)} if device == "cuda" else {}
    if framework.startswith("lamina"):
        from lamina.ops import kernels
        from lamina.threads import blas_info, get_num_threads, governor
        extra.update(blas=blas_info(), threads_end=get_num_threads(), kernels=kernels.in_use())
        if threads == "auto":   # the governor's choices, (step, thread count) each time it changed
            gov = governor()
            extra.update(governor_history=gov.history if gov is not None else None)
    elif framework.startswith("torch"):
        import torch
        extra.update(threads_end=torch.get_num_threads())
    return {
        **extra, "size": size, "device": device,
        "framework": framework, "workload": workload, "steps": len(ms), "threads": threads,
        "median_ms": med, "min_ms": min(ms), "max_ms": max(ms), "mean_ms": sum(ms) / len(ms),
        "p10_ms": _percentile(ms, 0.1), "p90_ms": _percentile(ms, 0.9), "warmup_s": warmup_s,
        "gflops": flops / (med / 1000) / 1e9, "peak_rss_mb": _rss_mb(), "rss_setup_mb": rss_setup,
        "cpu_util": cpu / wall, "foreign_cpu": foreign, "steal_cpu": (steal1 - steal0) / hz / wall,
        "loadavg_1m": os.getloadavg()[0], "loss_first": losses[0], "loss_last": losses[-1],
        "loss_decreased": (losses[-1] < losses[0]) if workload != "cnn_infer" else None,
    }


def _governed(step):
    """The step under lamina's thread governor, as fit() runs it (lamina/threads.py)."""
    from lamina import threads
    gov = threads.governor()
    return step if gov is None else (lambda: gov.timed(step))


def _gemm(framework, min_steps, min_time, warmup, threads):
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.random((1024, 1024), np.float32)
    b = rng.random((1024, 1024), np.float32)
    if framework == "gemm-torch":
        import torch
        if threads != "auto":
            torch.set_num_threads(threads)
        ta, tb, out = torch.from_numpy(a), torch.from_numpy(b), torch.empty(1024, 1024)

        def prod():
            torch.mm(ta, tb, out=out)
    else:
        out = np.empty((1024, 1024), np.float32)

        def prod():
            np.matmul(a, b, out=out)
    for _ in range(warmup):
        prod()
    times = []
    while len(times) < min_steps or sum(times) < min_time:
        s = time.perf_counter()
        prod()
        times.append(time.perf_counter() - s)
    med = _percentile(times, 0.5)
    return {"framework": framework, "workload": "gemm", "threads": threads, "median_ms": med * 1000,
            "min_ms": min(times) * 1000, "max_ms": max(times) * 1000,
            "gflops_median": 2 * 1024 ** 3 / med / 1e9, "gflops_best": 2 * 1024 ** 3 / min(times) / 1e9,
            "peak_rss_mb": _rss_mb()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.worker")
    p.add_argument("framework")
    p.add_argument("workload")
    p.add_argument("--min-steps", type=int, default=30)
    p.add_argument("--min-time", type=float, default=10.0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--size", choices=("base", "large"), default="base")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a = p.parse_args(argv)
    res = run(a.framework, a.workload, a.min_steps, a.min_time, a.warmup, a.size, a.device)
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
