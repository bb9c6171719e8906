"""Layer by layer against PyTorch: one layer's forward and backward (input and weight gradients), same shapes.

    python -m bench.layers                          # every case: table, and bench/layers.json
    python -m bench.layers --cases batchnorm,dwconv3x3 --reps 5
    python -m bench.layers --smoke --reps 1 --steps 1   # every case at a tiny size: runs, times nothing real
                                                        # (and leaves out the t[malloc] column)

`python -m bench` says where a whole training step stands; this says which layer to look at. Each case times
y = layer(x) and the back-propagation of a fixed upstream gradient dy (the same array every step) to x and
to the layer's weights. Each framework runs every case in its own process (never both in one: PyTorch's
OpenMP threads keep spinning after its kernels, and NumPy's BLAS products in the same process ran up to 2x
slower in about half the processes), the two alternating, 2 threads each (--threads); a case's time is the
median of --steps steps, the best of --reps rounds. lamina gets channels-last inputs (its layout), PyTorch the
same values channels-first (its own), so neither pays for a transpose. PyTorch runs twice: as it comes, and
with glibc's allocator set as lamina sets its own at import (t[malloc]; see bench/__main__.py's _malloc_env).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _torch_helpers(torch, nn):
    class LastStep(nn.Module):
        """A recurrent module's final state (what a Keras RNN layer returns by default); bidirectional: both
        directions' final states side by side, as Keras's Bidirectional (the reverse direction's final state
        is its output at position 0, not at the last position)."""

        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            h = self.rnn(x)[1]
            h = h[0] if isinstance(h, tuple) else h          # LSTM: (h_n, c_n)
            return torch.cat([h[-2], h[-1]], dim=-1) if self.rnn.bidirectional else h[-1]

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(128, 4, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]
    return LastStep, SelfAttention


_IMG32, _IMG16, _SEQ, _VOL = (64, 32, 32, 32), (64, 16, 16, 64), (64, 80, 128), (8, 16, 16, 16, 16)

# name -> (lamina layer from lamina.layers L, torch module from (torch.nn, helpers H), lamina input shape, kind)
CASES = {
    "conv3x3_same": (lambda L: L.Conv2D(32, 3, padding="same"), lambda nn, H: nn.Conv2d(32, 32, 3, padding=1),
                     _IMG32, "x"),
    "conv3x3_valid": (lambda L: L.Conv2D(64, 3), lambda nn, H: nn.Conv2d(64, 64, 3), _IMG16, "x"),
    "conv3x3_rgb": (lambda L: L.Conv2D(32, 3, padding="same"), lambda nn, H: nn.Conv2d(3, 32, 3, padding=1),
                    (64, 32, 32, 3), "x"),
    "conv1x1": (lambda L: L.Conv2D(64, 1), lambda nn, H: nn.Conv2d(32, 64, 1), _IMG32, "x"),
    "conv3x3_s2": (lambda L: L.Conv2D(64, 3, strides=2, padding="same"),
                   lambda nn, H: nn.Conv2d(32, 64, 3, stride=2, padding=1), _IMG32, "x"),
    "dwconv3x3": (lambda L: L.DepthwiseConv2D(3, padding="same"),
                  lambda nn, H: nn.Conv2d(32, 32, 3, padding=1, groups=32), _IMG32, "x"),
    "deconv_s2": (lambda L: L.Conv2DTranspose(32, 3, strides=2, padding="same"),
                  lambda nn, H: nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), _IMG16, "x"),
    "conv1d_k5": (lambda L: L.Conv1D(128, 5), lambda nn, H: nn.Conv1d(128, 128, 5), _SEQ, "x"),
    "batchnorm": (lambda L: L.BatchNormalization(), lambda nn, H: nn.BatchNorm2d(32), _IMG32, "x"),
    "layernorm": (lambda L: L.LayerNormalization(epsilon=1e-5), lambda nn, H: nn.LayerNorm(128), _SEQ, "x"),
    "maxpool2": (lambda L: L.MaxPooling2D(2), lambda nn, H: nn.MaxPool2d(2), _IMG32, "x"),
    "avgpool2": (lambda L: L.AveragePooling2D(2), lambda nn, H: nn.AvgPool2d(2), _IMG32, "x"),
    "relu": (lambda L: L.ReLU(), lambda nn, H: nn.ReLU(), _IMG32, "x"),
    "dense": (lambda L: L.Dense(256), lambda nn, H: nn.Linear(256, 256), (4096, 256), "x"),
    "embedding": (lambda L: L.Embedding(10000, 128), lambda nn, H: nn.Embedding(10000, 128), (64, 80), "ids"),
    "lstm": (lambda L: L.LSTM(128), lambda nn, H: H[0](nn.LSTM(128, 128, batch_first=True)), _SEQ, "x"),
    "gru": (lambda L: L.GRU(128, reset_after=True), lambda nn, H: H[0](nn.GRU(128, 128, batch_first=True)), _SEQ, "x"),
    "bilstm": (lambda L: L.Bidirectional(L.LSTM(64)),
               lambda nn, H: H[0](nn.LSTM(128, 64, batch_first=True, bidirectional=True)), _SEQ, "x"),
    "attention": (lambda L: L.MultiHeadAttention(num_heads=4, key_dim=32), lambda nn, H: H[1](), (32, 64, 128), "x"),
    # (added last: every earlier case keeps its input, seeded by its position)
    "conv3x3_g4": (lambda L: L.Conv2D(32, 3, padding="same", groups=4),
                   lambda nn, H: nn.Conv2d(32, 32, 3, padding=1, groups=4), _IMG32, "x"),
    "groupnorm": (lambda L: L.GroupNormalization(8, epsilon=1e-5), lambda nn, H: nn.GroupNorm(8, 32), _IMG32, "x"),
    "conv3x3_c8": (lambda L: L.Conv2D(8, 3, padding="same"), lambda nn, H: nn.Conv2d(8, 8, 3, padding=1),
                   (32, 32, 32, 8), "x"),   # (a U-Net's first level: the planes convolution)
    "elu": (lambda L: L.ELU(), lambda nn, H: nn.ELU(), _IMG32, "x"),
    "sigmoid": (lambda L: L.Activation("sigmoid"), lambda nn, H: nn.Sigmoid(), _IMG32, "x"),
    "gmp2d": (lambda L: L.GlobalMaxPooling2D(), lambda nn, H: nn.AdaptiveMaxPool2d(1), _IMG32, "x"),
    "maxpool3d": (lambda L: L.MaxPooling3D(2), lambda nn, H: nn.MaxPool3d(2), _VOL, "x"),
    "conv3d_g4": (lambda L: L.Conv3D(16, 3, padding="same", groups=4),
                  lambda nn, H: nn.Conv3d(16, 16, 3, padding=1, groups=4), _VOL, "x"),
    "conv3d": (lambda L: L.Conv3D(16, 3, padding="same"), lambda nn, H: nn.Conv3d(16, 16, 3, padding=1), _VOL, "x"),
    "deconv3d_s2": (lambda L: L.Conv3DTranspose(8, 3, strides=2, padding="same"),
                    lambda nn, H: nn.ConvTranspose3d(16, 8, 3, 2, 1, output_padding=1), _VOL, "x"),
    "prelu": (lambda L: L.PReLU(shared_axes=[1, 2]), lambda nn, H: nn.PReLU(32), _IMG32, "x"),   # (a slope a channel)
    "batchnorm_cf": (lambda L: L.BatchNormalization(axis=1), lambda nn, H: nn.BatchNorm2d(32), _IMG32, "x"),
}


# the cases whose lamina layer takes its channels on axis 1, as PyTorch's (their input goes to torch as it is)
_CHANNELS_FIRST = ("batchnorm_cf",)


def _shape(name, smoke=False):
    """The case's lamina input shape. A smoke run (the test that each case still runs in both frameworks) keeps
    the channels or features the layers were built for and shrinks the rest: 2 samples, at most 8 positions
    along each spatial or time axis (the full sizes took ~10 s of CPU for one step of every case)."""
    shape, kind = CASES[name][2:]
    if not smoke:
        return shape
    if name in _CHANNELS_FIRST:
        return (2, shape[1]) + tuple(min(d, 8) for d in shape[2:])
    inner = shape[1:] if kind == "ids" else shape[1:-1]
    return (2,) + tuple(min(d, 8) for d in inner) + (() if kind == "ids" else shape[-1:])


def _batch(name, smoke=False):
    """The case's input, the same in both frameworks' processes (seeded by the case's position)."""
    shape, kind = _shape(name, smoke), CASES[name][3]
    rng = np.random.default_rng(list(CASES).index(name))
    return rng.integers(0, 10000, shape) if kind == "ids" else rng.standard_normal(shape).astype(np.float32)


def _channels_first(x):
    """torch's layout of a channels-last batch: images (N, C, H, W); Conv1d's sequences (N, C, L)."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def _lamina_step(name, x):
    import lamina
    from lamina import layers as L
    factory, _, _, kind = CASES[name]
    attention = name == "attention"
    layer = factory(L)
    y = layer(x, x) if attention else layer(x)
    gy = lamina.Tensor(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
    weights = list(layer.trainable_weights)

    def step():
        xv = lamina.Tensor(x, requires_grad=kind == "x")
        y = layer(xv, xv, training=True) if attention else layer(xv, training=True)
        return lamina.grad(y, ([xv] if kind == "x" else []) + weights, grad_output=gy)
    return step


def _torch_step(name, x):
    import torch
    from torch import nn
    _, factory, _, kind = CASES[name]
    module = factory(nn, _torch_helpers(torch, nn))
    module.train()
    conv_like = name.startswith(("conv", "dwconv", "deconv", "batchnorm", "maxpool", "avgpool", "relu", "groupnorm",
                                 "gmp", "prelu")) and name not in _CHANNELS_FIRST
    xt = torch.from_numpy(_channels_first(x) if conv_like else x).requires_grad_(kind == "x")
    with torch.no_grad():
        gy = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(module(xt).shape)).astype(np.float32))

    def step():
        module.zero_grad(set_to_none=True)
        xt.grad = None
        module(xt).backward(gy)
    return step


def _median_ms(step, steps):
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1e3 * times[len(times) // 2]


def _worker(framework, names, steps, threads, smoke=False):
    """Time every case in this process, one framework only: returns {case: median ms}."""
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        from .workloads import steady_kernels
        steady_kernels()
    from threadpoolctl import threadpool_limits
    out = {}
    with threadpool_limits(threads):
        for name in names:
            x = _batch(name, smoke)
            step = _lamina_step(name, x) if framework == "lamina" else _torch_step(name, x)
            for _ in range(min(3, steps)):   # warm-up (one step for a smoke run of --steps 1)
                step()
            out[name] = _median_ms(step, steps)
    return out


def run(names, reps=3, steps=15, threads=2, smoke=False):
    """Each framework in its own processes (lamina never shares one with PyTorch: PyTorch's OpenMP threads keep
    spinning after its kernels and slowed lamina's products up to 2x in a shared process), alternating, reps
    rounds; the best median of each case and framework."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    from .__main__ import _malloc_env
    best = {"lamina": {}, "torch": {}, "torch+malloc": {}}
    # a smoke run checks that every case runs in both frameworks: PyTorch again under other allocator thresholds
    # (the same code, a second process importing torch: ~2.5 s of CPU) would time nothing real either
    frameworks = ("lamina", "torch") if smoke else ("lamina", "torch", "torch+malloc")
    for rep in range(reps):
        for fw in (frameworks if rep % 2 == 0 else frameworks[::-1]):
            cmd = [sys.executable, "-m", "bench.layers", "--worker", fw.split("+")[0], "--cases", ",".join(names),
                   "--steps", str(steps), "--threads", str(threads)] + (["--smoke"] if smoke else [])
            wenv = dict(env)
            if fw == "torch+malloc":   # PyTorch with glibc's allocator set as lamina sets its own
                _malloc_env(wenv)
            res = subprocess.run(cmd, cwd=root, env=wenv, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"bench.layers {fw} worker failed:\n{res.stderr[-2000:]}")
            for name, ms in json.loads(res.stdout.strip().splitlines()[-1]).items():
                best[fw][name] = min(ms, best[fw].get(name, float("inf")))
    rows = []
    print(f"{'case':14s} {'shape':18s} {'lamina ms':>9s} {'torch ms':>9s} {'ratio':>6s} {'t[malloc]':>9s} {'ratio':>6s}")
    for name in names:
        la, to, tm = best["lamina"][name], best["torch"][name], best["torch+malloc"].get(name)
        rows.append({"case": name, "shape": list(_shape(name, smoke)), "lamina_ms": la, "torch_ms": to,
                     "ratio": la / to,
                     "torch_malloc_ms": tm, "ratio_malloc": None if tm is None else la / tm})
        malloc = f"{'-':>9s} {'-':>6s}" if tm is None else f"{tm:9.2f} {la / tm:6.2f}"
        print(f"{name:14s} {str(_shape(name, smoke)):18s} {la:9.2f} {to:9.2f} {la / to:6.2f} {malloc}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__.split("\n")[0])
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="every case at a tiny size (a test that each runs)")
    p.add_argument("--json", help="where to write the rows (default: bench/layers.json, none for --smoke)")
    p.add_argument("--worker", choices=("lamina", "torch"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    names = list(CASES) if not a.cases else a.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(CASES)}")
    if a.worker:
        print(json.dumps(_worker(a.worker, names, a.steps, a.threads, a.smoke)))
        return 0
    from . import save_json
    from .__main__ import _machine
    rows = run(names, a.reps, a.steps, a.threads, a.smoke)
    path = a.json
    if path is None and not a.smoke:  # a smoke run's times never replace the table of real ones unasked
        path = os.path.join(os.path.dirname(__file__), "layers.json")
    if path:
        save_json(path, {"machine": _machine(), "threads": a.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
