"""All-reduce cost on this machine and a scaling model for data-parallel training (lamina.distribution).

    python -m bench.allreduce            # runs everything, writes bench/allreduce_results.json, prints tables

It measures (each part launches its own ranks with mpirun from the Open MPI wheel):
1. MPI_Allreduce (sum, in place, float32) on loopback between 2 ranks: latency and bandwidth over message
   sizes from 4 B to 64 MiB, and at the gradient sizes of the four training workloads of bench/workloads.py;
   a least-squares fit t(n) = alpha + beta * n gives the alpha-beta figures;
2. samples/s of model.fit for the bench MLP and CNN with 1 rank x 2 threads and 2 ranks x 1 thread (equal
   total threads), the same global batch;
3. the compute time of one step of each workload (1 process, 2 threads), for the cost model;
4. (also alone: python -m bench.allreduce --buckets) the gradient all-reduce as one fused buffer against
   buckets of 1, 4 and 25 MB, blocking or overlapped with the backward pass: a data-parallel step of each
   workload on 2 ranks, and the all-reduce alone; writes bench/allreduce_buckets.json.
Then it predicts, per workload, the time of one step on N ranks of a cluster as
    T(N) = C / N + 2 (N - 1) alpha_net + 2 (N - 1) / N * bytes * beta_net    (ring all-reduce)
for N = 8, 64, 512 at 10 and 100 Gbit/s. The machine is shared with other jobs: figures vary run to run.
"""
import inspect
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAIN_WORKLOADS = ("mlp", "cnn", "lstm", "transformer")
# assumed per-message latency of the network (one hop of the ring): TCP over 10 GbE, RDMA over 100 Gbit/s
NETWORKS = {"10 Gbit/s": (10e9, 25e-6), "100 Gbit/s": (100e9, 3e-6)}


def _env(threads):
    from lamina.distribution import launcher
    env = launcher.child_environment()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def gradient_sizes():
    """Trainable parameters of each training workload (the floats one step all-reduces)."""
    sys.path.insert(0, ROOT)
    from bench.workloads import lamina_workload
    sizes = {}
    for name in TRAIN_WORKLOADS:
        step, _ = lamina_workload(name)
        weights = inspect.getclosurevars(step).nonlocals["weights"]
        sizes[name] = int(sum(int(np.prod(w.shape)) for w in weights))
    return sizes


def _time_allreduce(comm, MPI, n, reps):
    buf = np.ones(n, np.float32)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)   # warm-up
    times = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    # every rank's time of a repetition is that of the slowest rank
    t = np.array(times)
    comm.Allreduce(MPI.IN_PLACE, t, op=MPI.MAX)
    # the minimum estimates the cost without the other jobs of this shared machine; the median is kept too
    return [float(np.min(t)), float(np.median(t))]


def rank_allreduce(out):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    sizes = json.loads(os.environ["LAMINA_BENCH_SIZES"])
    sweep = [1, 16, 256, 4096, 65536, 262144, 1 << 20, 4 << 20, 16 << 20]
    results = {"sweep": [], "workloads": {}}
    for n in sweep:
        reps = 200 if n <= 65536 else 20
        results["sweep"].append([n * 4] + _time_allreduce(comm, MPI, n, reps))
    for name, n in sizes.items():
        results["workloads"][name] = [n * 4] + _time_allreduce(comm, MPI, n, 30)
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)


def rank_fit(out):
    """model.fit on the bench MLP / CNN shapes: samples/s (run with 1 or 2 ranks)."""
    import lamina
    from lamina import distribution, layers as L
    distribution.initialize()
    if distribution.process_count() > 1:
        distribution.set_distribution(distribution.DataParallel())
    lamina.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    results = {}
    for name, batch, steps in (("mlp", 128, 40), ("cnn", 64, 8)):
        if name == "mlp":
            x = rng.standard_normal((batch * steps, 784), dtype=np.float32)
            model = lamina.Sequential([lamina.Input((784,)), L.Dense(256, activation="relu"),
                                       L.Dense(128, activation="relu"), L.Dense(10)])
        else:
            x = rng.random((batch * steps, 32, 32, 3), dtype=np.float32)
            model = lamina.Sequential([lamina.Input((32, 32, 3)), L.Conv2D(32, 3, activation="relu"),
                                       L.MaxPooling2D(2), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
                                       L.Conv2D(64, 3, activation="relu"), L.Flatten(),
                                       L.Dense(64, activation="relu"), L.Dense(10)])
        y = rng.integers(0, 10, len(x))
        model.compile(optimizer="adam", loss=lamina.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)  # warm-up
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        results[name] = {"samples_per_s": len(x) / best, "batch": batch, "steps": steps}
    if distribution.is_chief():
        with open(out, "w") as f:
            json.dump(results, f)


# the gradient all-reduce settings compared by --rank-buckets: (label, bucket_mb, overlap)
BUCKET_MODES = (("fused", None, False), ("1 MB", 1.0, False), ("1 MB overlap", 1.0, True),
                ("4 MB overlap", 4.0, True), ("25 MB overlap", 25.0, True))


def rank_buckets(out):
    """Per workload (bench/workloads.py, base size), on 2 ranks x 1 thread: the time of a data-parallel
    training step (each rank its half of the batch: forward, backward, gradient all-reduce, Adam) for each
    setting of BUCKET_MODES, plus the step without any all-reduce (the compute alone), and the all-reduce
    alone of the workload's gradients (no compute) per setting. Settings alternate, in a new random order,
    within each repetition so that the machine's load drifts evenly over them; min and median over the
    repetitions."""
    import lamina
    from lamina import distribution, ops
    from lamina.distribution import _runtime
    sys.path.insert(0, ROOT)
    from bench.workloads import lamina_workload
    distribution.initialize()
    comm = _runtime._COMM
    reps = int(os.environ.get("LAMINA_BENCH_REPS", "7"))
    results = {}
    for name in os.environ.get("LAMINA_BENCH_WORKLOADS", ",".join(TRAIN_WORKLOADS)).split(","):
        step, _ = lamina_workload(name)
        env = inspect.getclosurevars(step).nonlocals
        forward, weights, x, y, opt = env["forward"], env["weights"], env["x"], env["y"], env["opt"]

        def one_step(reduce):
            xs, ys = _runtime.shard((x, y))
            logits = forward(xs, training=True)
            loss = ops.mean(ops.sparse_categorical_crossentropy(ys, logits, from_logits=True))
            grads = _runtime.gradients(loss, weights) if reduce else lamina.grad(loss, weights)
            opt.apply_gradients(zip(grads, weights))
            _runtime._end_step()

        modes = [("no all-reduce", None, False)] + list(BUCKET_MODES)
        times = {label: [] for label, _, _ in modes}
        comm_only = {label: [] for label, _, _ in BUCKET_MODES}
        grads = [np.ones(w.shape, np.float32) for w in weights]
        order = np.random.default_rng(0)   # the same on every rank
        for rep in range(reps + 1):   # the first repetition warms up
            for j in order.permutation(len(modes)):
                label, mb, overlap = modes[j]
                distribution.set_distribution(distribution.DataParallel(bucket_mb=mb, overlap=overlap))
                comm.Barrier()
                t0 = time.perf_counter()
                one_step(label != "no all-reduce")
                dt = np.array([time.perf_counter() - t0])
                comm.Allreduce(_runtime._MPI.IN_PLACE, dt, op=_runtime._MPI.MAX)
                if rep:
                    times[label].append(float(dt[0]))
            for label, mb, overlap in BUCKET_MODES:
                distribution.set_distribution(distribution.DataParallel(bucket_mb=mb, overlap=overlap))
                ts = []
                for _ in range(5):
                    comm.Barrier()
                    t0 = time.perf_counter()
                    _runtime.reduce_gradients(grads)
                    ts.append(time.perf_counter() - t0)
                dt = np.array([min(ts)])
                comm.Allreduce(_runtime._MPI.IN_PLACE, dt, op=_runtime._MPI.MAX)
                if rep:
                    comm_only[label].append(float(dt[0]))
        distribution.set_distribution(None)
        plan = {label: len(_runtime._Buckets([w.shape for w in weights], [w.dtype for w in weights],
                                             None if mb is None else int(mb * (1 << 20))).members)
                for label, mb, _ in BUCKET_MODES}
        results[name] = {"bytes": int(sum(w.size for w in weights) * 4), "buckets": plan,
                         "step_s": {k: [float(np.min(v)), float(np.median(v))] for k, v in times.items()},
                         "allreduce_only_s": {k: [float(np.min(v)), float(np.median(v))] for k, v in comm_only.items()}}
    if comm.rank == 0:
        from bench import save_json   # (ranks run this file as a script, with the repository on PYTHONPATH)
        results["loadavg"] = os.getloadavg()
        save_json(out, results)


def buckets_main(out=None):
    """python -m bench.allreduce --buckets [OUT]: the bucketing comparison alone (default OUT:
    bench/allreduce_buckets.json; LAMINA_BENCH_REPS and LAMINA_BENCH_WORKLOADS=lstm,transformer narrow it)."""
    from lamina.distribution import launcher
    out = out or os.path.join(HERE, "allreduce_buckets.json")
    subprocess.run(launcher.mpirun_command(2) + [sys.executable, os.path.abspath(__file__), "--rank-buckets", out],
                   env=_env(1), check=True)
    res = json.load(open(out))
    print(f"2 ranks x 1 thread, load average {res['loadavg']}")
    for name in [k for k in res if k != "loadavg"]:
        r = res[name]
        print(f"{name:12s} {r['bytes'] / 1e6:6.2f} MB  buckets {r['buckets']}")
        for label, (lo, med) in r["step_s"].items():
            comm = r["allreduce_only_s"].get(label)
            extra = f"   all-reduce alone min {comm[0] * 1e3:7.3f} ms" if comm else ""
            print(f"    {label:15s} step min {lo * 1e3:8.1f} ms  median {med * 1e3:8.1f} ms{extra}")
    return res


def step_times():
    """Seconds per training step of each workload in one process (2 threads), the fastest of 5 steps."""
    code = ("import sys, json, time, numpy as np; sys.path.insert(0, %r)\n"
            "from bench.workloads import lamina_workload\n"
            "out = {}\n"
            "for name in %r:\n"
            "    step, _ = lamina_workload(name); step()\n"
            "    ts = []\n"
            "    for _ in range(5):\n"
            "        t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)\n"
            "    out[name] = float(np.min(ts))\n"
            "print(json.dumps(out))\n") % (ROOT, TRAIN_WORKLOADS)
    r = subprocess.run([sys.executable, "-c", code], env=_env(2), capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def fit_alpha_beta(sweep):
    n = np.array([row[0] for row in sweep], np.float64)
    t = np.array([row[1] for row in sweep], np.float64)  # the minima
    A = np.stack([np.ones_like(n), n], 1)
    (alpha, beta), *_ = np.linalg.lstsq(A, t, rcond=None)
    return float(max(alpha, t.min())), float(beta)


def model_step(compute_s, nbytes, n, bandwidth_bits, alpha):
    beta = 8.0 / bandwidth_bits
    comm = 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes * beta
    return compute_s / n, comm


def main():
    from lamina.distribution import launcher
    me = os.path.abspath(__file__)
    sizes = gradient_sizes()
    tmp = os.path.join(HERE, ".allreduce_tmp.json")
    env = _env(1)
    env["LAMINA_BENCH_SIZES"] = json.dumps(sizes)
    subprocess.run(launcher.mpirun_command(2) + [sys.executable, me, "--rank-allreduce", tmp], env=env, check=True)
    ar = json.load(open(tmp))
    fits = {}
    subprocess.run([sys.executable, me, "--rank-fit", tmp], env=_env(2), check=True)
    fits["1 rank x 2 threads"] = json.load(open(tmp))
    subprocess.run(launcher.mpirun_command(2) + [sys.executable, me, "--rank-fit", tmp], env=_env(1), check=True)
    fits["2 ranks x 1 thread"] = json.load(open(tmp))
    os.remove(tmp)
    compute = step_times()
    alpha, beta = fit_alpha_beta(ar["sweep"])
    model = {}
    for name in TRAIN_WORKLOADS:
        nbytes = ar["workloads"][name][0]
        rows = {}
        for net, (bw, lat) in NETWORKS.items():
            for n in (8, 64, 512):
                c, m = model_step(compute[name], nbytes, n, bw, lat)
                rows[f"{net} N={n}"] = {"compute_s": c, "allreduce_s": m,
                                        "speedup": compute[name] / (c + m), "efficiency": compute[name] / (c + m) / n}
        model[name] = rows
    result = {"gradient_floats": sizes, "allreduce": ar, "alpha_s": alpha, "beta_s_per_byte": beta,
              "loopback_GBps": 1e-9 / beta if beta > 0 else None, "fit": fits, "step_s_1proc_2threads": compute,
              "model": model, "networks": {k: {"bits_per_s": v[0], "latency_s": v[1]} for k, v in NETWORKS.items()},
              "loadavg": os.getloadavg(), "cpus": os.cpu_count()}
    from bench import save_json
    save_json(os.path.join(HERE, "allreduce_results.json"), result)
    print(f"alpha = {alpha * 1e6:.1f} us, beta = {beta * 1e9:.3f} ns/B ({1e-9 / beta:.2f} GB/s) on loopback")
    for name in TRAIN_WORKLOADS:
        nbytes, t, med = ar["workloads"][name]
        print(f"{name:12s} {nbytes / 1e6:8.2f} MB  all-reduce min {t * 1e3:8.3f} ms (median {med * 1e3:8.3f})  "
              f"{nbytes / t / 1e9:6.2f} GB/s  "
              f"step {compute[name] * 1e3:8.1f} ms")
    for setup, r in fits.items():
        print(setup, {k: round(v["samples_per_s"], 1) for k, v in r.items()})
    for name, rows in model.items():
        print(name, {k: f"x{v['speedup']:.1f} ({v['efficiency']:.0%})" for k, v in rows.items()})
    buckets_main()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--rank-allreduce":
        rank_allreduce(sys.argv[2])
    elif len(sys.argv) > 2 and sys.argv[1] == "--rank-fit":
        rank_fit(sys.argv[2])
    elif len(sys.argv) > 2 and sys.argv[1] == "--rank-buckets":
        rank_buckets(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "--buckets":
        buckets_main(sys.argv[2] if len(sys.argv) > 2 else None)
    else:
        main()
