"""Pictures for learners: filters, feature maps, activation histograms and the loss surface."""
import numpy as np
import pytest

import lamina
from lamina import layers, plotting

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained():
    lamina.utils.set_random_seed(0)
    (x, y), _ = lamina.datasets.digits.load_data()
    x = (x / 16.0).astype("float32")[..., None][:300]
    y = y[:300]
    model = lamina.Sequential([layers.Input((8, 8, 1)), layers.Conv2D(8, 3, padding="same", activation="relu"),
                               layers.MaxPooling2D(2), layers.Conv2D(8, 3, activation="relu"), layers.Flatten(),
                               layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, verbose=0)
    return model, x, y


def test_filters_feature_maps_and_histograms_are_pngs(trained, tmp_path):
    model, x, _ = trained
    for path in (plotting.plot_filters(model.layers[0], str(tmp_path / "f.png")),
                 plotting.plot_feature_maps(model, x[0], str(tmp_path / "m.png")),
                 plotting.plot_activation_histograms(model, x[:50], str(tmp_path / "h.png"))):
        assert open(path, "rb").read(8) == PNG
    with pytest.raises(ValueError, match="kernel"):
        plotting.plot_filters(model.layers[1], str(tmp_path / "bad.png"))


def test_feature_model_gives_the_layer_outputs(trained):
    model, x, _ = trained
    fm = plotting._feature_model(model, [model.layers[0].name])
    first = model.layers[0](x[:2]).numpy()
    np.testing.assert_allclose(fm.predict(x[:2], verbose=0), first, rtol=1e-5, atol=1e-6)


def test_loss_surface_centre_is_the_trained_loss_and_weights_come_back(trained, tmp_path):
    model, x, y = trained
    before = [w.copy() for w in model.get_weights()]
    alphas, betas, losses = plotting.loss_surface(model, x, y, steps=5, span=0.5)
    centre = model.evaluate(x, y, verbose=0)[0]
    assert losses.shape == (5, 5) and alphas[2] == 0 and betas[2] == 0
    assert abs(losses[2, 2] - centre) < 1e-5
    assert losses.min() >= centre - 0.05 and losses.max() > centre      # a trained point sits in a valley
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert open(plotting.plot_loss_surface(model, x, y, str(tmp_path / "s.png"), steps=3), "rb").read(8) == PNG


def test_default_layers_include_the_first_convolution(trained, tmp_path, monkeypatch):
    """Which layers the two pictures take by default (the pictures themselves: the test above, with the same
    defaults): the figures are drawn but not rendered to PNG here."""
    model, x, _ = trained
    seen = []
    real = plotting._feature_model
    monkeypatch.setattr(plotting, "_feature_model", lambda m, names: seen.append(list(names)) or real(m, names))
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, close=False, **kwargs: plotting._pyplot().close(fig))
    plotting.plot_feature_maps(model, x[0], str(tmp_path / "m.png"))
    plotting.plot_activation_histograms(model, x[:20], str(tmp_path / "h.png"))
    assert seen[0] == [model.layers[0].name, model.layers[1].name, model.layers[2].name]
    assert seen[1] == [layer.name for layer in model.layers]


def test_figures_are_written_atomically(trained, tmp_path, monkeypatch):
    """Every picture goes through plotting.save_figure: a savefig that dies midway (here after writing some
    bytes) leaves the previous picture whole and no temporary file behind; the format follows the name."""
    from matplotlib.figure import Figure
    model, x, _ = trained
    path = str(tmp_path / "f.png")
    plotting.plot_filters(model.layers[0], path)
    before = open(path, "rb").read()

    def dies(self, f, **kwargs):
        f.write(b"half a picture")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Figure, "savefig", dies)
    import matplotlib.pyplot as plt
    open_before = plt.get_fignums()
    with pytest.raises(OSError, match="No space left"):
        plotting.plot_filters(model.layers[0], path)
    monkeypatch.undo()
    assert plt.get_fignums() == open_before   # the failed figure was closed all the same
    assert open(path, "rb").read() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    assert open(plotting.save_figure(fig, str(tmp_path / "a.jpg")), "rb").read(2) == b"\xff\xd8"
    assert open(plotting.save_figure(fig, str(tmp_path / "b.svg")), "rb").read(5) in (b"<?xml", b"<svg ")


def test_plot_history_with_no_epoch_says_so(tmp_path):
    for history in ({}, {"loss": [], "val_loss": []}):
        with pytest.raises(ValueError, match="no epoch to draw"):
            plotting.plot_history(history, str(tmp_path / "h.png"))
    assert not (tmp_path / "h.png").exists()
