"""Patterns met running held-out keras.io example programs on lamina (docs/keras_programs.md), each written
here as our own small code and checked against real Keras (KERAS_BACKEND=torch) where Keras runs here."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina
from lamina import initializers, layers, ops

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

INITS = [("RandomNormal", {}), ("RandomUniform", {}), ("TruncatedNormal", {}), ("GlorotNormal", {}),
         ("GlorotUniform", {}), ("HeNormal", {}), ("LecunUniform", {}), ("VarianceScaling", {}),
         ("Orthogonal", {})]


@pytest.mark.parametrize("name,kw", INITS)
def test_seeded_initializer_call_is_a_tensor_like_keras(name, kw):
    """keras.io reproducibility recipe: float(Init(seed=42)(shape=(1, 1))) twice gives the same number."""
    ours = getattr(initializers, name)(seed=42, **kw)(shape=(1, 1))
    theirs = getattr(keras.initializers, name)(seed=42, **kw)(shape=(1, 1))
    assert isinstance(ours, lamina.Tensor)                       # Keras: a backend tensor
    assert float(ours) == float(getattr(initializers, name)(seed=42, **kw)(shape=(1, 1)))
    assert isinstance(float(theirs), float) and isinstance(float(ours), float)
    assert ours.shape == tuple(theirs.shape) and str(ours.dtype) == "float32" == str(theirs.dtype).split(".")[-1]
    # a (2,) result has no single float, in Keras as here
    with pytest.raises(ValueError):
        float(keras.initializers.get(name.lower() if name != "VarianceScaling" else "variance_scaling")(shape=(2,)))
    with pytest.raises(ValueError):
        float(getattr(initializers, name)(seed=42, **kw)(shape=(2,)))


def test_initializer_result_works_with_ops_and_numpy():
    w = initializers.GlorotNormal(seed=42)(shape=(3, 5))
    np.testing.assert_array_equal(np.asarray(ops.add(w, 1.0)), np.asarray(w) + 1.0)
    assert np.allclose(w, initializers.GlorotNormal(seed=42)(shape=(3, 5)))          # np.allclose takes tensors
    np.testing.assert_array_equal(np.asarray(initializers.Constant(2.5)((2, 3))), np.full((2, 3), 2.5, np.float32))
    assert initializers.Zeros()((2, 2), dtype="float64").dtype == np.float64


def test_custom_initializers_and_add_weight_take_the_tensor_values():
    class NumpyInit(initializers.Initializer):                   # returns a NumPy array: handed back as a Tensor
        def __call__(self, shape, dtype=None):
            return np.arange(np.prod(shape), dtype=dtype or "float32").reshape(shape)

    class OpsInit(initializers.Initializer):                     # returns a tensor already: left as it is
        def __call__(self, shape, dtype=None):
            return ops.ones(shape, dtype=dtype) * 3.0

    assert isinstance(NumpyInit()((2, 3)), lamina.Tensor) and isinstance(OpsInit()((2,)), lamina.Tensor)
    layer = layers.Dense(3, kernel_initializer=NumpyInit(), bias_initializer=OpsInit())
    layer.build((None, 2))
    np.testing.assert_array_equal(layer.kernel.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(layer.bias.numpy(), np.full(3, 3.0, np.float32))
    # a seeded built-in initializer gives the layer the very values a direct call gives
    dense = layers.Dense(4, kernel_initializer=initializers.HeNormal(seed=7))
    dense.build((None, 3))
    np.testing.assert_array_equal(dense.kernel.numpy(), np.asarray(initializers.HeNormal(seed=7)((3, 4))))
    # an LSTM with unit_forget_bias builds its bias from the tensor the bias initializer returns
    lstm = layers.LSTM(2)
    lstm.build((None, 4, 3))
    np.testing.assert_array_equal(lstm.cell.bias.numpy() if hasattr(lstm, "cell") else lstm.bias.numpy(),
                                  np.array([0, 0, 1, 1, 0, 0, 0, 0], np.float32))


def test_dataset_cardinality_is_the_number_of_batches(tmp_path):
    """keras.io text classification prints raw_train_ds.cardinality(): the number of batches."""
    for label in ("neg", "pos"):
        (tmp_path / label).mkdir()
        for i in range(5):
            (tmp_path / label / f"{i}.txt").write_text(f"review {label} {i}")
    ds = lamina.utils.text_dataset_from_directory(str(tmp_path), batch_size=4, shuffle=False)
    assert ds.cardinality() == 3 == len(ds) == len(list(ds))       # ceil(10 / 4)
    assert ds.take(2).cardinality() == 2
    assert ds.map(lambda x, y: (x, y)).prefetch(8).cache().cardinality() == 3
    series = lamina.utils.timeseries_dataset_from_array(np.arange(20.0), None, sequence_length=5, batch_size=4)
    assert series.cardinality() == 4                                  # 16 windows in batches of 4


def _spy_model(lib, seen):
    class Spy(lib.Model):
        def __init__(self):
            super().__init__()
            self.d = lib.layers.Dense(2)

        def call(self, x):
            return self.d(x)

        def train_step(self, data):
            seen.append("bare" if not isinstance(data, (tuple, list)) else f"{type(data).__name__}{len(data)}")
            return {}

    return Spy()


def test_a_dataset_of_x_alone_gives_train_step_x_alone(tmp_path):
    """keras.io's DCGAN: image_dataset_from_directory(label_mode=None).map(lambda x: x / 255.0) is fitted and
    train_step(real_images) concatenates real_images with generated images, so it must get the batch itself."""
    from PIL import Image
    (tmp_path / "img").mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    ds = lamina.utils.image_dataset_from_directory(str(tmp_path), label_mode=None, image_size=(8, 8),
                                                   batch_size=4).map(lambda x: x / 255.0)
    ours = []
    m = _spy_model(lamina, ours)
    m.compile()
    m.fit(ds, epochs=1, verbose=0)

    class Xs(lamina.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return np.zeros((4, 3), "float32")

    m.fit(Xs(), epochs=1, verbose=0)
    m.fit(np.zeros((4, 3), "float32"), epochs=1, verbose=0, batch_size=4)
    assert ours == ["bare", "bare", "bare", "bare"]
    # Keras gives train_step the lone array as it is for array input (the TensorFlow backend does the same
    # for a dataset's lone tensor; this torch build of Keras only runs the array case)
    theirs = []
    k = _spy_model(keras, theirs)
    k.compile()
    k.fit(np.zeros((4, 3), "float32"), epochs=1, verbose=0, batch_size=4)
    assert theirs == ["bare"]
    # a tuple (x,) or (x, y) from a PyDataset still arrives as a tuple
    class Pairs(lamina.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32")

    ours.clear()
    m.fit(Pairs(), epochs=1, verbose=0)
    assert ours == ["tuple2"]
    # the default train_step trains on a lone-x PyDataset when the loss needs no y (add_loss)
    class Recon(lamina.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(3)

        def call(self, x):
            out = self.d(x)
            self.add_loss(ops.mean(ops.square(out - x)))
            return out

    r = Recon()
    r.compile(optimizer="sgd")
    hist = r.fit(Xs(), epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2


def _endpoint(lib):
    class Endpoint(lib.layers.Layer):
        def call(self, logits, targets=None, sample_weight=None):
            if targets is not None:
                self.add_loss(lib.ops.mean(lib.ops.square(logits - targets)))
            return logits * 2.0

    return Endpoint()


def test_a_layer_takes_its_first_argument_by_keyword_like_keras():
    """keras.io's endpoint layer pattern calls self.logistic_endpoint(logits=..., targets=..., sample_weight=...)."""
    x, t = np.arange(6, dtype="float32").reshape(3, 2), np.ones((3, 2), "float32")
    ours, theirs = _endpoint(lamina), _endpoint(keras)
    np.testing.assert_allclose(np.asarray(ours(logits=x, targets=t)),
                               keras.ops.convert_to_numpy(theirs(logits=x, targets=t)))
    assert [float(v) for v in ours.losses] == pytest.approx([float(keras.ops.convert_to_numpy(v)) for v in theirs.losses])
    assert ours(logits=lamina.Input((2,))).shape == tuple(theirs(logits=keras.Input((2,))).shape) == (None, 2)
    with pytest.raises(TypeError):
        ours(targets=t)
    with pytest.raises(TypeError):
        theirs(targets=t)

    # in a subclassed model fitted on a dict, as the example does
    class LogReg(lamina.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)
            self.endpoint = _endpoint(lamina)

        def call(self, inputs):
            return self.endpoint(logits=self.dense(inputs["x"]), targets=inputs["t"])

    m = LogReg()
    m.compile(optimizer="adam")
    hist = m.fit({"x": x, "t": t}, epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2 and np.isfinite(hist.history["loss"]).all()


def _distill(lib, seed=0):
    """keras.io's Keras 3 knowledge distillation pattern: compute_loss overridden, teacher held as an attribute."""
    ops = lib.ops

    class Distiller(lib.Model):
        def __init__(self, student, teacher):
            super().__init__()
            self.teacher, self.student = teacher, student

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, allow_empty=False):
            teacher_pred = self.teacher(x, training=False)
            student = lib.losses.SparseCategoricalCrossentropy(from_logits=True)(y, y_pred)
            distill = lib.losses.KLDivergence()(ops.softmax(teacher_pred / 3.0, axis=1),
                                                ops.softmax(y_pred / 3.0, axis=1)) * 9.0
            return 0.1 * student + 0.9 * distill

        def call(self, x):
            return self.student(x)

    rng = np.random.default_rng(seed)
    nets = []
    for _ in range(2):
        net = lib.Sequential([lib.Input((4,)), lib.layers.Dense(3)])
        net.set_weights([rng.normal(size=(4, 3)).astype("float32"), np.zeros(3, "float32")])
        nets.append(net)
    d = Distiller(*nets)
    d.compile(optimizer=lib.optimizers.SGD(0.1), metrics=[lib.metrics.SparseCategoricalAccuracy()])
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 3, 8)
    hist = d.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return hist.history["loss"], d.evaluate(x, y, verbose=0), [n.get_weights()[0] for n in nets]


def test_compute_loss_override_with_a_teacher_matches_keras():
    ours, theirs = _distill(lamina), _distill(keras)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5)
    for a, b in zip(ours[2], theirs[2]):   # the teacher is trained too, in Keras as here (it is a sub-model)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
