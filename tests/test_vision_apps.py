"""Vision applications: the synthetic data sets, and the U-Net, autoencoder, VAE and GAN recipes on tiny sizes."""
import json
import os

import numpy as np
import pytest

import lamina
from lamina import backend
from lamina.datasets import synthetic
from lamina.models import load_model
from lamina.testing import check_grad
from lamina.zoo import catalog, vision


# --------------------------------------------------------------------------------------- shapes data
def test_shapes_seeded_types_and_ranges():
    x, m = synthetic.shapes(20, size=24, seed=3)
    assert x.shape == (20, 24, 24, 1) and x.dtype == np.float32
    assert m.shape == (20, 24, 24) and m.dtype == np.int64
    assert x.min() >= 0 and x.max() <= 1 and set(np.unique(m)) <= {0, 1, 2, 3}
    x2, m2 = synthetic.shapes(20, size=24, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(m, m2)
    x3, m3 = synthetic.shapes(20, size=24, seed=4)
    assert not np.array_equal(m, m3)
    (xa, ya), (xb, yb) = synthetic.load_shapes(10, 5, size=16)
    assert xa.shape == (10, 16, 16, 1) and yb.shape == (5, 16, 16)
    assert not np.array_equal(xa[:5], xb)      # train and test come from different seeds


def test_shapes_masks_match_the_painted_pixels():
    # without noise, shapes are painted at brightness >= 0.45 on a background <= 0.15: the mask is exactly
    # where the image is bright, including where a later shape hides an earlier one
    x, m = synthetic.shapes(200, size=32, noise=0.0, seed=0)
    np.testing.assert_array_equal(x[..., 0] > 0.3, m > 0)
    # each labelled region has one brightness (the shape painted last on those pixels)
    assert np.all(np.isin(np.unique(m), [0, 1, 2, 3])) and (m > 0).any(axis=(1, 2)).all()


@pytest.mark.parametrize("kind, fill", [(1, np.pi / 4), (2, 1.0), (3, 0.5)])
def test_shapes_have_their_geometry(kind, fill):
    # one small shape per image, away from the border: the filled share of its bounding box tells the shape
    # (circle pi/4, square 1, triangle 1/2), measured on the mask alone
    _, m = synthetic.shapes(300, size=40, max_shapes=1, min_radius=6, max_radius=8, noise=0.0, seed=1)
    sel = m.reshape(len(m), -1).max(axis=1) == kind
    rows, cols = (m[sel] > 0).any(axis=2), (m[sel] > 0).any(axis=1)
    box = rows.sum(1) * cols.sum(1)
    interior = (~rows[:, 0] & ~rows[:, -1] & ~cols[:, 0] & ~cols[:, -1])   # not cut by the border
    ratio = ((m[sel] > 0).sum(axis=(1, 2)) / box)[interior]
    assert len(ratio) > 20
    assert abs(np.median(ratio) - fill) < 0.08


def test_shapes_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        synthetic.shapes(3, size=4)
    with pytest.raises(ValueError, match="max_radius"):
        synthetic.shapes(3, size=16, min_radius=5, max_radius=9)


def test_2d_distributions():
    p, lab = synthetic.rings(2000, radii=(0.5, 1.0), noise=0.0, seed=0)
    assert p.dtype == np.float32 and p.shape == (2000, 2)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), np.array([0.5, 1.0])[lab], rtol=1e-5)
    g, mode = synthetic.gaussian_ring(4000, modes=8, std=0.01, seed=0)
    diff = np.angle(np.exp(1j * (np.arctan2(g[:, 1], g[:, 0]) - 2 * np.pi * mode / 8)))   # wrapped to (-pi, pi]
    assert np.abs(diff).max() < 0.05
    assert np.bincount(mode, minlength=8).min() > 400
    mx, my = synthetic.moons(500, seed=2)
    assert mx.shape == (500, 2) and set(np.unique(my)) == {0, 1}
    np.testing.assert_array_equal(synthetic.sample_2d("moons", 500, seed=2)[0], mx)
    with pytest.raises(ValueError, match="moons, rings, gaussian_ring"):
        synthetic.sample_2d("spiral", 10)


# --------------------------------------------------------------------------------------------- U-Net
def test_segmentation_scores_agree_with_mean_iou(rng):
    t = rng.integers(0, 4, size=(6, 8, 8))
    p = np.where(rng.random((6, 8, 8)) < 0.7, t, rng.integers(0, 4, size=(6, 8, 8)))
    s = vision.segmentation_scores(t, p, 4)
    m = lamina.metrics.MeanIoU(num_classes=4)
    m.update_state(t, p)
    assert s["mean_iou"] == pytest.approx(float(m.result()), rel=1e-6)
    assert s["pixel_accuracy"] == pytest.approx((t == p).mean())
    # by hand: class 0 has 2 hits, 1 miss and 1 false alarm -> IoU 2 / 4; class 1 no hit -> 0
    hand = vision.segmentation_scores(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0]), 2)
    assert hand["iou_per_class"] == [pytest.approx(2 / 4), 0.0] and hand["mean_iou"] == pytest.approx(0.25)


def test_unet_shapes_and_skips():
    model = vision.unet((16, 16, 1), 4, filters=4, depth=2)
    assert model.output_shape == (None, 16, 16, 4)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Concatenate") == 2 and kinds.count("Conv2DTranspose") == 2
    y = model.predict(np.zeros((2, 16, 16, 1), np.float32), verbose=0)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_unet_learns_tiny_shapes(tmp_path):
    run = vision.train_unet(epochs=14, batch_size=16, out=str(tmp_path), verbose=0, num_train=240, num_test=60,
                            size=16, filters=8, depth=2, plot=False)
    base = run["baseline_all_background"]
    # the all-background predictor has a high pixel accuracy but a mean IoU of about a quarter of it
    assert run["test_mean_iou"] > base["mean_iou"] + 0.2, run
    assert run["test_pixel_accuracy"] > base["pixel_accuracy"]
    model = load_model(str(tmp_path / "model.lamina"))
    assert model.output_shape == (None, 16, 16, 4)
    assert json.loads((tmp_path / "run.json").read_text())["test_mean_iou"] == run["test_mean_iou"]
    assert not (tmp_path / "history.png").exists() and not (tmp_path / "segmentation.png").exists()   # plot=False


# --------------------------------------------------------------------------------------- autoencoder
def test_autoencoder_reconstruction_error_falls(tmp_path):
    run = vision.train_autoencoder(epochs=6, batch_size=32, out=str(tmp_path), verbose=0, plot=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["val_loss"][-1] < 0.8 * history["val_loss"][0]
    assert run["test_mse"] < run["mean_image_test_mse"]          # it has learned more than the average digit
    np.testing.assert_allclose(run["test_mse"], history["val_loss"][-1], rtol=1e-4)
    model = load_model(str(tmp_path / "model.lamina"))
    assert model.output_shape == (None, 8, 8, 1)


def test_pca_reconstruction_is_exact_with_all_components(rng):
    a, b = rng.random((40, 3, 3, 1)).astype(np.float32), rng.random((5, 3, 3, 1)).astype(np.float32)
    np.testing.assert_allclose(vision.pca_reconstruction(a, b, 9), b, atol=1e-5)
    one = vision.pca_reconstruction(a, b, 1)
    assert np.mean((one - b) ** 2) > 1e-3


# ------------------------------------------------------------------------------------------------ VAE
def test_reparameterize_and_kl_gradients(rng):
    mean = rng.standard_normal((4, 3))
    log_var = rng.uniform(-1, 1, (4, 3))
    eps = rng.standard_normal((4, 3))
    check_grad(lambda m, lv: vision.reparameterize(m, lv, lamina.Tensor(eps)), mean, log_var)
    check_grad(vision.kl_divergence, mean, log_var)
    # the closed form at a point: KL(N(1, e^0.5) || N(0, 1)) per dimension = -(1 + 0.5 - 1 - e^0.5) / 2
    kl = vision.kl_divergence(lamina.Tensor(np.ones((2, 3))), lamina.Tensor(np.full((2, 3), 0.5)))
    assert float(kl.numpy()) == pytest.approx(3 * -0.5 * (1 + 0.5 - 1 - np.exp(0.5)))


def test_sampling_layer_gradient_statistics_and_kl_loss(rng):
    layer = vision.Sampling(kl_weight=0.5, name="z")
    mean = rng.standard_normal((5, 2))
    log_var = rng.uniform(-1, 1, (5, 2))

    def fn(m, lv):                       # the same noise at every evaluation of the check
        backend.set_random_seed(7)
        return layer([m, lv])
    check_grad(fn, mean, log_var, name="Sampling")
    # z ~ N(mean, exp(log_var)): a big batch has that mean and standard deviation
    z = layer([np.full((20000, 2), 1.0, np.float32), np.full((20000, 2), np.log(4.0), np.float32)])
    assert z.dtype == np.float32
    assert np.abs(z.numpy().mean(0) - 1.0).max() < 0.05 and np.abs(z.numpy().std(0) - 2.0).max() < 0.05
    # the KL term arrives through add_loss, scaled by kl_weight
    m, lv = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)
    layer([m + 1.0, lv])
    assert len(layer.losses) == 1 and float(layer.losses[0].numpy()) == pytest.approx(0.5 * 0.5 * 2)
    assert vision.Sampling(kl_weight=0.0)([m, lv]) is not None
    with pytest.raises(ValueError, match="kl_weight"):
        vision.Sampling(kl_weight=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        layer([m, np.zeros((3, 4), np.float32)])
    assert vision.Sampling.from_config(layer.get_config()).kl_weight == 0.5


def test_vae_loss_falls_and_files_load(tmp_path):
    run = vision.train_vae(epochs=5, batch_size=32, out=str(tmp_path), verbose=0, plot=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["loss"][-1] < 0.9 * history["loss"][0]
    assert run["test_kl"] > 0 and np.isfinite(run["test_negative_elbo_per_image"])
    # the model's loss includes the KL term added by the Sampling layer
    model = load_model(str(tmp_path / "model.lamina"))
    assert any(isinstance(layer, vision.Sampling) for layer in model.get_layer("encoder").layers)
    decoder = load_model(str(tmp_path / "decoder.lamina"))
    out = decoder.predict(np.zeros((3, 2), np.float32), verbose=0)
    assert out.shape == (3, 8, 8, 1) and out.min() >= 0 and out.max() <= 1


def test_vae_total_loss_is_reconstruction_plus_weighted_kl():
    model, encoder, decoder = vision.vae((8, 8, 1), latent_dim=2, kl_weight=0.25)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    backend.set_random_seed(3)
    total = model.test_on_batch(x, x)
    backend.set_random_seed(3)
    with lamina.no_grad():
        z_mean, z_log_var, z = encoder(x)
        p = np.clip(decoder(z).numpy(), 1e-7, 1 - 1e-7)
        kl = float(vision.kl_divergence(z_mean, z_log_var).numpy())
    bce = -np.mean(x * np.log(p) + (1 - x) * np.log(1 - p))
    assert total == pytest.approx(bce + 0.25 * kl, rel=1e-4)


# ------------------------------------------------------------------------------------------------ GAN
def test_gan_steps_run_and_model_files_load(tmp_path):
    run = vision.train_gan(epochs=2, batch_size=32, out=str(tmp_path), verbose=0, num_samples=64, judge_epochs=2,
                           plot=False)
    assert run["steps"] == 2 * (1437 // 32)
    history = json.loads((tmp_path / "history.json").read_text())
    assert set(history) == {"d_loss", "g_loss", "d_accuracy_real", "d_accuracy_fake"}
    assert all(len(v) == 2 and np.isfinite(v).all() for v in history.values())
    generator = load_model(str(tmp_path / "generator.lamina"))
    discriminator = load_model(str(tmp_path / "discriminator.lamina"))
    noise = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    images = generator.predict(noise, verbose=0)
    assert images.shape == (4, 8, 8, 1) and np.abs(images).max() <= 1
    p = discriminator.predict(images, verbose=0)
    assert p.shape == (4, 1) and ((p >= 0) & (p <= 1)).all()
    fd = run["frechet_distance_to_test_digits"]
    assert fd["real_training_digits"] < fd["uniform_noise"]


def test_frechet_distance(rng):
    a = rng.standard_normal((4000, 3))
    assert vision.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # Gaussians N(0, I) and N(m, 4 I): |m|^2 + 3 (1 + 4 - 2 * 2)
    b = rng.standard_normal((4000, 3)) * 2.0 + np.array([1.0, 0.0, 2.0])
    assert vision.frechet_distance(a, b) == pytest.approx(5.0 + 3.0, rel=0.1)


def test_recipes_are_in_the_catalog():
    for name in ("unet", "autoencoder", "vae", "gan"):
        recipe = catalog.get(name)
        assert callable(recipe.train) and recipe.name == name
    assert "shapes" in catalog.DATASETS
    assert isinstance(catalog.get("unet").build(), lamina.Model)


def test_main_trains_a_recipe(tmp_path, capsys):
    assert vision.main(["autoencoder", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--no-plot"]) == 0
    assert "reconstruction MSE" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "model.lamina") and os.path.exists(tmp_path / "run.json")
    assert not list(tmp_path.glob("*.png"))
