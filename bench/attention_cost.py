"""Cost of the fused attention op as the sequence grows: python -m bench.attention_cost [--json FILE]

Times forward + backward of ``lamina.ops.scaled_dot_product_attention`` (batch 8, 4 heads, head size
32 by default) for sequence lengths 64, 128, ..., 1024, and measures the peak memory the op
allocates (NumPy reports its buffers to tracemalloc). Both grow with T^2: the (B, heads, T, T)
score/weight array is computed, kept for backward, and differentiated. Prints a table and writes
JSON. With --torch, PyTorch's scaled_dot_product_attention is timed on the same arrays for context.
"""
import argparse
import os
import statistics
import sys
import time

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "2")   # before NumPy loads its BLAS: the WORKLOADS.md setting

import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from . import save_json  # noqa: E402


def _measure(fn, min_reps, min_seconds):
    for _ in range(2):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _load_avg():
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - platform
        return None


def run(lengths, batch, heads, dim, causal, min_reps, min_seconds, with_torch):
    from lamina import Tensor, grad
    from lamina.ops import scaled_dot_product_attention

    rows = []
    for t in lengths:
        rng = np.random.default_rng(0)
        q, k, v = (rng.standard_normal((batch, heads, t, dim), dtype=np.float32) for _ in range(3))
        gy = rng.standard_normal((batch, heads, t, dim), dtype=np.float32)
        tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))
        g_out = Tensor(gy)

        def step():
            out = scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
            return grad(out, [tq, tk, tv], grad_output=g_out.data)

        times = _measure(step, min_reps, min_seconds)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        step()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        scores_bytes = batch * heads * t * t * 4
        flops = 2 * batch * heads * t * t * dim * 6     # QK^T, WV forward; dV, dW, dQ, dK backward: 6 GEMMs
        row = {"seq_len": t, "ms_median": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times),
               "reps": len(times), "peak_mib": peak / 2 ** 20, "scores_mib": scores_bytes / 2 ** 20,
               "gemm_gflop": flops / 1e9, "gflops": flops / 1e9 / statistics.median(times)}
        if with_torch:
            row.update(_torch_time(q, k, v, gy, causal, min_reps, min_seconds))
        rows.append(row)
        print(_fmt(row, rows[-2] if len(rows) > 1 else None, with_torch), flush=True)
    return rows


def _torch_time(q, k, v, gy, causal, min_reps, min_seconds):
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    g = torch.tensor(gy)

    def step():
        out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        return torch.autograd.grad(out, [tq, tk, tv], g)
    times = _measure(step, min_reps, min_seconds)
    return {"torch_ms_median": 1e3 * statistics.median(times)}


def _fmt(row, prev, with_torch):
    grow_t = f"x{row['ms_median'] / prev['ms_median']:.2f}" if prev else ""
    grow_m = f"x{row['peak_mib'] / prev['peak_mib']:.2f}" if prev else ""
    s = (f"{row['seq_len']:>6} {row['ms_median']:>10.2f} {grow_t:>7} {row['peak_mib']:>10.1f} {grow_m:>7} "
         f"{row['scores_mib']:>10.1f} {row['gflops']:>8.1f}")
    if with_torch:
        s += f" {row['torch_ms_median']:>10.2f}"
    return s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="64,128,256,512,1024")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--min-reps", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--torch", action="store_true", help="also time torch's scaled_dot_product_attention")
    p.add_argument("--json", default="attention_cost.json")
    a = p.parse_args(argv)
    lengths = [int(x) for x in a.lengths.split(",")]
    print(f"scaled_dot_product_attention forward+backward: batch {a.batch}, {a.heads} heads, head size {a.dim}, "
          f"causal={a.causal}, threads={os.environ['OMP_NUM_THREADS']}, load avg {_load_avg()}")
    head = f"{'T':>6} {'ms':>10} {'grow':>7} {'peak MiB':>10} {'grow':>7} {'S MiB':>10} {'GFLOP/s':>8}"
    print(head + (f" {'torch ms':>10}" if a.torch else ""))
    rows = run(lengths, a.batch, a.heads, a.dim, a.causal, a.min_reps, a.min_seconds, a.torch)
    result = {"op": "scaled_dot_product_attention", "batch": a.batch, "heads": a.heads, "head_dim": a.dim,
              "causal": a.causal, "threads": int(os.environ["OMP_NUM_THREADS"]), "loadavg_1m_end": _load_avg(),
              "numpy": np.__version__, "python": sys.version.split()[0], "rows": rows}
    save_json(a.json, result, indent=2)
    print(f"wrote {a.json}")
    return result


if __name__ == "__main__":
    main()
