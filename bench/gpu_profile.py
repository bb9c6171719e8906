"""Where a bench workload's GPU step goes: each op's forward and backward, and the optimizer, timed with the
device synchronised around every call.

    python -m bench.gpu_profile [--workloads mlp,cnn,...] [--size base|large|base,large] [--steps 10]

Synchronising around each call turns the asynchronous step into a sum of parts: a part's figure is its kernels'
device time plus whatever host time its launches cost beyond that (the launch-bound case, where the device
waits for Python), so the sum is larger than the unsynchronised step; the unsynchronised step time is printed
first for comparison. Needs CuPy and a GPU (lamina's 'cuda' device).
"""
import argparse
import collections
import functools
import time


def instrument(sync, table):
    """Wrap every Op subclass's own forward and backward, and Optimizer.apply_gradients, so each call is timed
    between two device synchronisations into table[name] = [calls, seconds]. Returns an undo function."""
    from lamina.optimizers.base import Optimizer
    from lamina.registry import subclasses
    from lamina.tensor import Op

    undo = []

    def wrap(owner, attr, name):
        fn = owner.__dict__[attr]

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            sync()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
                row = table[name]
                row[0] += 1
                row[1] += time.perf_counter() - t
        setattr(owner, attr, timed)
        undo.append((owner, attr, fn))

    for cls in set(subclasses(Op)):
        for attr, tag in (("forward", "fwd"), ("backward", "bwd")):
            if attr in cls.__dict__:
                wrap(cls, attr, f"{cls.__name__}.{tag}")
    wrap(Optimizer, "apply_gradients", "optimizer.apply_gradients")

    def restore():
        for owner, attr, fn in reversed(undo):
            setattr(owner, attr, fn)
    return restore


def profile(workload, size="base", steps=10, warmup=3):
    import cupy

    import lamina
    from bench.workloads import lamina_workload

    lamina.set_device("cuda")
    step, _ = lamina_workload(workload, size)
    sync = cupy.cuda.Device().synchronize
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    plain_ms = (time.perf_counter() - t) / steps * 1000
    table = collections.defaultdict(lambda: [0, 0.0])
    restore = instrument(sync, table)
    try:
        step()  # the wrapped calls' own first-call costs
        table.clear()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        synced_ms = (time.perf_counter() - t) / steps * 1000
    finally:
        restore()
    rows = sorted(((v[1] / steps * 1000, v[0] / steps, k) for k, v in table.items()), reverse=True)
    return plain_ms, synced_ms, rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_profile")
    p.add_argument("--workloads", default="mlp,cnn,cnn_infer,lstm,transformer")
    p.add_argument("--size", default="large", help="base, large or base,large")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args(argv)
    for w, size in ((w, s) for s in a.size.split(",") for w in a.workloads.split(",")):
        plain, synced, rows = profile(w, size, a.steps)
        parts = sum(r[0] for r in rows)
        print(f"== {w}@{size}: step {plain:.2f} ms (synchronised per call: {synced:.2f} ms; "
              f"ops + optimizer {parts:.2f} ms, {sum(r[1] for r in rows):.0f} calls)")
        for ms, calls, name in rows[:a.top]:
            print(f"   {ms:8.3f} ms {calls:6.1f} x  {name}")


if __name__ == "__main__":
    main()
