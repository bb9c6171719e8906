"""Layer by layer against PyTorch: one layer's forward and backward (input and weight gradients), same shapes.

    python -m bench.layers                          # every case: table, and bench/layers.json
    python -m bench.layers --cases bn,dwconv --reps 5

`python -m bench` says where a whole training step stands; this says which layer to look at. Each case times
y = layer(x) and the back-propagation of a fixed upstream gradient dy (the same array every step) to x and
to the layer's weights, lamina and PyTorch alternating
in one process (2 BLAS / torch threads each, unless --threads), the median of --steps steps, the best of
--reps rounds. lamina gets channels-last inputs (its layout), PyTorch the same values channels-first (its
own), so neither pays for a transpose. The machine drifts between fast and slow phases for minutes at a
time (bench/README.md), so compare ratios from one run, not times across runs.
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def _cases():
    """name -> (lamina layer factory, torch module factory, lamina input shape, input kind)."""
    from lamina import layers as L
    from torch import nn

    class LastStep(nn.Module):
        """A recurrent module's output at the last step (what a Keras RNN layer returns by default)."""

        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x)[0][:, -1]

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(128, 4, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    img32, img16 = (64, 32, 32, 32), (64, 16, 16, 64)
    seq = (64, 80, 128)
    return {
        "conv3x3_same": (lambda: L.Conv2D(32, 3, padding="same"), lambda: nn.Conv2d(32, 32, 3, padding=1), img32, "x"),
        "conv3x3_valid": (lambda: L.Conv2D(64, 3), lambda: nn.Conv2d(64, 64, 3), img16, "x"),
        "conv3x3_rgb": (lambda: L.Conv2D(32, 3, padding="same"), lambda: nn.Conv2d(3, 32, 3, padding=1),
                        (64, 32, 32, 3), "x"),
        "conv1x1": (lambda: L.Conv2D(64, 1), lambda: nn.Conv2d(32, 64, 1), img32, "x"),
        "conv3x3_s2": (lambda: L.Conv2D(64, 3, strides=2, padding="same"),
                       lambda: nn.Conv2d(32, 64, 3, stride=2, padding=1), img32, "x"),
        "dwconv3x3": (lambda: L.DepthwiseConv2D(3, padding="same"),
                      lambda: nn.Conv2d(32, 32, 3, padding=1, groups=32), img32, "x"),
        "deconv_s2": (lambda: L.Conv2DTranspose(32, 3, strides=2, padding="same"),
                      lambda: nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), img16, "x"),
        "conv1d_k5": (lambda: L.Conv1D(128, 5), lambda: nn.Conv1d(128, 128, 5), seq, "x"),
        "batchnorm": (lambda: L.BatchNormalization(), lambda: nn.BatchNorm2d(32), img32, "x"),
        "layernorm": (lambda: L.LayerNormalization(epsilon=1e-5), lambda: nn.LayerNorm(128), seq, "x"),
        "maxpool2": (lambda: L.MaxPooling2D(2), lambda: nn.MaxPool2d(2), img32, "x"),
        "avgpool2": (lambda: L.AveragePooling2D(2), lambda: nn.AvgPool2d(2), img32, "x"),
        "relu": (lambda: L.ReLU(), lambda: nn.ReLU(), img32, "x"),
        "dense": (lambda: L.Dense(256), lambda: nn.Linear(256, 256), (4096, 256), "x"),
        "embedding": (lambda: L.Embedding(10000, 128), lambda: nn.Embedding(10000, 128), (64, 80), "ids"),
        "lstm": (lambda: L.LSTM(128), lambda: LastStep(nn.LSTM(128, 128, batch_first=True)), seq, "x"),
        "gru": (lambda: L.GRU(128, reset_after=True), lambda: LastStep(nn.GRU(128, 128, batch_first=True)), seq, "x"),
        "bilstm": (lambda: L.Bidirectional(L.LSTM(64)),
                   lambda: LastStep(nn.LSTM(128, 64, batch_first=True, bidirectional=True)), seq, "x"),
        "attention": (lambda: L.MultiHeadAttention(num_heads=4, key_dim=32), SelfAttention, (32, 64, 128), "x"),
    }


def _channels_first(x):
    """torch's layout of a channels-last batch: images (N, C, H, W); Conv1d's sequences (N, C, L)."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def _lamina_step(factory, x, kind, attention):
    import lamina
    layer = factory()
    y = layer(x, x) if attention else layer(x)
    gy = lamina.Tensor(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
    weights = list(layer.trainable_weights)

    def step():
        xv = lamina.Tensor(x, requires_grad=kind == "x")
        y = layer(xv, xv, training=True) if attention else layer(xv, training=True)
        return lamina.grad(y, ([xv] if kind == "x" else []) + weights, grad_output=gy)
    return step


def _torch_step(factory, x, kind, name):
    import torch
    module = factory()
    module.train()
    conv_like = name.startswith(("conv", "dwconv", "deconv", "batchnorm", "maxpool", "avgpool", "relu"))
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


def run(names, reps=3, steps=15, threads=2):
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(threads)
    cases = _cases()
    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(threads):
        for name in names:
            lam_f, torch_f, shape, kind = cases[name]
            x = rng.integers(0, 10000, shape) if kind == "ids" else rng.standard_normal(shape).astype(np.float32)
            ts = _torch_step(torch_f, x, kind, name)
            ls = _lamina_step(lam_f, x, kind, name == "attention")
            for _ in range(3):
                ls(), ts()
            la, to = [], []
            for _ in range(reps):
                la.append(_median_ms(ls, steps))
                to.append(_median_ms(ts, steps))
            rows.append({"case": name, "shape": list(shape), "lamina_ms": min(la), "torch_ms": min(to),
                         "ratio": min(la) / min(to)})
            print(f"{name:14s} {str(shape):18s} lamina {min(la):8.2f} ms  torch {min(to):8.2f} ms  "
                  f"ratio {min(la) / min(to):5.2f}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__.split("\n")[0])
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "layers.json"))
    a = p.parse_args(argv)
    names = list(_cases()) if not a.cases else a.cases.split(",")
    unknown = [n for n in names if n not in _cases()]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(_cases())}")
    from .__main__ import _machine
    rows = run(names, a.reps, a.steps, a.threads)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": _machine(), "threads": a.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
