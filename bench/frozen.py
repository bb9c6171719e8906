"""Fine-tuning with a frozen base (issue 22): a step with the base frozen at compile should cost about what
a step costs when the base runs under no_grad, and hold about as much memory.

    python -m bench.frozen            # ms/step (median of 15) and peak traced memory per variant

The model: two 32-filter 3x3 convolutions on 32x32x3 images (the base) and a Dense head, batch 32.
"""
import time
import tracemalloc

import numpy as np

import lamina
from lamina import layers, models
from lamina.tensor import no_grad


def _make():
    base = models.Sequential([layers.Input((32, 32, 3)), layers.Conv2D(32, 3, activation="relu"),
                              layers.Conv2D(32, 3, activation="relu")])
    head = models.Sequential([layers.Input((28, 28, 32)), layers.Flatten(), layers.Dense(10)])
    inp = layers.Input((32, 32, 3))
    return base, head, models.Model(inp, head(base(inp)))


def _measure(step, n=15):
    step()
    step()
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)), peak


def main():
    lamina.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((32, 32, 32, 3)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((32, 10)).astype(np.float32)
    results = {}
    base, head, model = _make()
    model.compile("sgd", "mse")
    results["fully trainable"] = _measure(lambda: model.train_on_batch(x, y))
    base, head, model = _make()
    base.trainable = False
    model.compile("sgd", "mse")
    results["frozen base"] = _measure(lambda: model.train_on_batch(x, y))
    base, head, model = _make()
    head.compile("sgd", "mse")

    def no_grad_base():
        with no_grad():
            features = base(x, training=False)
        head.train_on_batch(features.numpy(), y)
    results["base under no_grad"] = _measure(no_grad_base)
    for name, (ms, mb) in results.items():
        print(f"{name:>20}: {ms:7.1f} ms/step, peak traced memory {mb:6.1f} MiB")
    print(f"frozen / no_grad: {results['frozen base'][0] / results['base under no_grad'][0]:.2f} (time), "
          f"{results['frozen base'][1] / results['base under no_grad'][1]:.2f} (memory)")


if __name__ == "__main__":
    main()
