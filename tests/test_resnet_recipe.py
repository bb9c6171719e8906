"""The small ResNet of the catalog: residual structure, and it learns the bundled digits."""
import numpy as np

import lamina
from lamina.zoo import catalog


def test_small_resnet_structure():
    model = catalog.small_resnet((8, 8, 1), 10)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds.count("Add") == 6 and kinds.count("BatchNormalization") == 15   # 6 blocks, 2 projections
    assert model.output_shape == (None, 10)


def test_small_resnet_learns_digits():
    lamina.utils.set_random_seed(0)
    (x, y), (xt, yt) = catalog.load_dataset("digits")
    model = catalog.RECIPES["resnet"].compile(catalog.small_resnet(x.shape[1:], 10))
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)   # long enough for the moving statistics to settle
    assert model.evaluate(xt, yt, verbose=0)[1] > 0.85
