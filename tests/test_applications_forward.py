"""Every keras.applications architecture lamina has runs a forward pass at its smallest input (issue 18: each
builds, and predicts a batch of two); parameter counts and layer names against Keras are in the family test
modules, which leave the forward pass at the smallest input to this one (building a model a second time there
only drew its random weights again)."""
import numpy as np
import pytest

import lamina
from lamina import applications

SMALLEST = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}


@pytest.mark.parametrize("name", [n for n in applications.__all__ if n[:1].isupper()])
def test_forward_pass_at_the_smallest_input(name):
    size = SMALLEST.get(name, 32)
    model = getattr(applications, name)(weights=None, input_shape=(size, size, 3), classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 3) and np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
