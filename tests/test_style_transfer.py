"""Neural style transfer: the Gram matrix, and an optimisation that takes on the style and keeps the content."""
import numpy as np

from lamina import Tensor
from lamina.testing import check_grad
from lamina.zoo import style


def test_gram_matrix_matches_numpy_and_has_a_gradient():
    f = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    got = style.gram_matrix(Tensor(f)).numpy()
    flat = f.reshape(2, 12, 5)
    np.testing.assert_allclose(got, np.einsum("npc,npd->ncd", flat, flat) / 12, rtol=1e-10)
    check_grad(style.gram_matrix, f)


def test_transfer_takes_the_style_and_keeps_the_content():
    content, texture = style.content_image(size=32), style.style_image(size=32)
    result, history = style.transfer(content, texture, steps=40, learning_rate=0.03)
    assert history["style"][-1] < 0.2 * history["style"][0]       # the texture statistics moved to the style
    assert history["content"][0] == 0.0                          # it starts at the content image
    # the result stays much closer to the content (in pixels) than the style image is
    assert np.mean((result - content) ** 2) < 0.5 * np.mean((texture - content) ** 2)
    assert result.min() >= 0.0 and result.max() <= 1.0
