"""The workloads of WORKLOADS.md, built in lamina and in PyTorch with identical shapes, data and Adam settings.

Each builder returns (step, flops): step() runs one training step (or one inference pass for cnn_infer) and
returns the loss as a Python float (the synchronisation point); flops is the work of one step.

size="large" gives the GPU variants of the GPU issue (mlp batch 1024, cnn 256, lstm 256, transformer 64 x 256);
their flops are scaled from the base figures by batch (and sequence) length, so GFLOP/s is approximate there.
On device="cuda" (lamina: LAMINA_DEVICE=cuda, set by the runner before import) the batch is moved to the GPU once.
"""
import numpy as np

WORKLOADS = ("mlp", "cnn", "cnn_infer", "lstm", "transformer")
FLOPS = {"mlp": 3 * 60.1e6, "cnn": 1.75e9, "cnn_infer": 0.582e9, "lstm": 6.0e9, "transformer": 5.2e9}
ADAM = dict(lr=1e-3, beta_1=0.9, beta_2=0.999, eps=1e-8)
SIZES = ("base", "large")
# batch (and transformer sequence length) of each size
SHAPES = {"base": {"mlp": 128, "cnn": 64, "cnn_infer": 64, "lstm": 64, "transformer": (32, 64)},
          "large": {"mlp": 1024, "cnn": 256, "cnn_infer": 256, "lstm": 256, "transformer": (64, 256)}}


def flops(name, size="base"):
    base, big = SHAPES["base"][name], SHAPES[size][name]
    if name == "transformer":
        return FLOPS[name] * (big[0] * big[1]) / (base[0] * base[1])
    return FLOPS[name] * big / base


def make_batch(name, size="base"):
    """One fixed batch: rng = default_rng(0); first x, then y (WORKLOADS.md, common rules)."""
    if name not in WORKLOADS:
        raise ValueError(f"Unknown workload {name!r}. Valid: {', '.join(WORKLOADS)}")
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}. Valid: {', '.join(SIZES)}")
    rng = np.random.default_rng(0)
    shape = SHAPES[size][name]
    if name == "mlp":
        x, b = rng.standard_normal((shape, 784), np.float32), shape
    elif name in ("cnn", "cnn_infer"):
        x, b = rng.random((shape, 32, 32, 3), np.float32), shape
    elif name == "lstm":
        x, b = rng.integers(0, 10000, (shape, 80), np.int64), shape
    else:
        x, b = rng.integers(0, 5000, shape, np.int64), shape[0]
    y = rng.integers(0, 10, (b,), np.int64)
    return x, y


# ---------------------------------------------------------------- lamina
def steady_kernels():
    """The compiled element-wise kernels (numba) from the first step where installed: lamina's 'auto' mode runs
    NumPy's code for a process's first WARMUP_ELEMENTS values (loading numba does not pay in a short program),
    and a benchmark measures the steady state of a long run."""
    from lamina.ops import kernels
    if kernels.mode() == "auto" and kernels.available():
        kernels.set_mode("numba")


def lamina_workload(name, size="base"):
    import lamina
    from lamina import backend, layers as L, ops

    steady_kernels()

    lamina.utils.set_random_seed(0)
    x, y = make_batch(name, size)
    if name == "mlp":
        stack = [L.Dense(256, activation="relu"), L.Dense(128, activation="relu"), L.Dense(10)]
        forward = _sequential(stack)
    elif name in ("cnn", "cnn_infer"):
        stack = [L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2), L.Conv2D(64, 3, activation="relu"),
                 L.MaxPooling2D(2), L.Conv2D(64, 3, activation="relu"), L.Flatten(),
                 L.Dense(64, activation="relu"), L.Dense(10)]
        forward = _sequential(stack)
    elif name == "lstm":
        stack = [L.Embedding(10000, 256), L.LSTM(128), L.Dense(10)]
        forward = _sequential(stack)
    elif name == "transformer":
        forward, stack = _lamina_transformer(L, ops, backend, x.shape[1])
    forward(x[:2])  # build the weights
    weights = [w for layer in stack for w in layer.trainable_weights]
    x, y = backend.to_device(x), backend.to_device(y)  # once: a no-op on the CPU

    if name == "cnn_infer":
        def step():
            with lamina.no_grad():
                out = forward(x)
            return float(ops.mean(ops.sparse_categorical_crossentropy(y, out, from_logits=True)).item())
        return step, flops(name, size)

    opt = lamina.optimizers.Adam(learning_rate=ADAM["lr"], beta_1=ADAM["beta_1"], beta_2=ADAM["beta_2"],
                                 epsilon=ADAM["eps"])

    def step():
        logits = forward(x, training=True)
        loss = ops.mean(ops.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = lamina.grad(loss, weights)
        opt.apply_gradients(zip(grads, weights))
        return float(loss.item())
    return step, flops(name, size)


def _sequential(stack):
    def forward(x, training=False):
        for layer in stack:
            x = layer(x, training=training)
        return x
    return forward


def _lamina_transformer(L, ops, backend, seq):
    tok = L.Embedding(5000, 128)
    pos = L.Embedding(seq, 128)
    blocks = []
    for _ in range(2):
        blocks.append(dict(mha=L.MultiHeadAttention(num_heads=4, key_dim=32), ln1=L.LayerNormalization(epsilon=1e-5),
                           ff1=L.Dense(512, activation="relu"), ff2=L.Dense(128), ln2=L.LayerNormalization(epsilon=1e-5)))
    head = L.Dense(10)
    positions = backend.to_device(np.arange(seq)[None, :])

    def forward(x, training=False):
        h = tok(x) + pos(positions[:, :x.shape[1]])
        for b in blocks:
            h = b["ln1"](h + b["mha"](h, h, training=training))
            h = b["ln2"](h + b["ff2"](b["ff1"](h)))
        return head(ops.mean(h, axis=1))
    stack = [tok, pos] + [layer for b in blocks for layer in b.values()] + [head]
    return forward, stack


# ---------------------------------------------------------------- PyTorch
def torch_workload(name, size="base", device="cpu"):
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = make_batch(name, size)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x).to(device)
    yt = torch.from_numpy(y).to(device)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    elif name in ("cnn", "cnn_infer"):
        model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(1024, 64), nn.ReLU(), nn.Linear(64, 10))
    elif name == "lstm":
        model = _TorchLSTM(nn)
    elif name == "transformer":
        model = _torch_transformer(torch, nn, x.shape[1])
    model = model.to(device)
    loss_fn = nn.CrossEntropyLoss()
    if name == "cnn_infer":
        model.eval()

        def step():
            with torch.no_grad():
                return float(loss_fn(model(xt), yt).item())
        return step, flops(name, size)
    opt = torch.optim.Adam(model.parameters(), lr=ADAM["lr"], betas=(ADAM["beta_1"], ADAM["beta_2"]), eps=ADAM["eps"])

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()
        return float(loss.item())
    return step, flops(name, size)


class _TorchLSTM:
    def __new__(cls, nn):
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(10000, 256)
                self.lstm = nn.LSTM(256, 128, batch_first=True)
                self.fc = nn.Linear(128, 10)

            def forward(self, x):
                _, (h, _) = self.lstm(self.emb(x))
                return self.fc(h[-1])
        return M()


def _torch_transformer(torch, nn, seq):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(5000, 128)
            self.pos = nn.Parameter(torch.randn(seq, 128) * 0.02)
            layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, activation="relu", batch_first=True,
                                               norm_first=False, layer_norm_eps=1e-5)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            h = self.tok(x) + self.pos[: x.shape[1]]
            return self.fc(self.enc(h).mean(dim=1))
    return M()
