import numpy as np
import pytest

import lamina


@pytest.fixture(autouse=True)
def _seed():
    lamina.backend.set_random_seed(0)
    lamina.layers.clear_session()
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
