"""Object detection: box utilities against hand-computed and reference values, the scenes data set, and a
tiny training run that beats the untrained network by a wide margin."""
import numpy as np
import pytest

import lamina

from lamina.datasets import scenes
from lamina.zoo import detection as det


def test_iou_pairs():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 5]])
    got = det.iou(a, b)
    np.testing.assert_allclose(got, [[1, 0, 0.25], [25 / 175, 25 / 175, 0]])
    assert det.iou([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0      # empty boxes: no NaN


def test_iou_matches_torchvision_formula_on_random_boxes():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (2, 30, 2))
    wh = rng.uniform(1, 20, (2, 30, 2))
    a, b = (np.concatenate([xy[i], xy[i] + wh[i]], axis=1) for i in range(2))
    ta, tb = torch.tensor(a), torch.tensor(b)
    lt = torch.max(ta[:, None, :2], tb[None, :, :2])
    rb = torch.min(ta[:, None, 2:], tb[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    want = inter / (area(ta)[:, None] + area(tb)[None] - inter)
    np.testing.assert_allclose(det.iou(a, b), want.numpy(), rtol=1e-12)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = np.array([0.8, 0.9, 0.7, 0.1])
    assert det.nms(boxes, scores, iou_threshold=0.5).tolist() == [1, 2]
    assert det.nms(boxes, scores, iou_threshold=0.99).tolist() == [1, 0, 2, 3]
    assert det.nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_encode_then_decode_returns_the_boxes():
    (_, boxes), _ = scenes.load_data(num_train=20, num_test=1)
    target = det.encode_boxes(boxes)
    raw = np.zeros_like(target, dtype=np.float64)
    obj = target[..., 0] > 0
    raw[..., 0] = np.where(obj, 20.0, -20.0)                       # sure objectness
    t = np.clip(target[..., 1:3], 1e-6, 1 - 1e-6)
    raw[..., 1:3] = np.log(t / (1 - t))                            # inverse sigmoid
    raw[..., 3:5] = target[..., 3:5]
    raw[..., 5:] = np.where(target[..., 5:] > 0, 20.0, -20.0)
    found = det.decode_predictions(raw, score_threshold=0.5)
    for dets, truth in zip(found, boxes):
        truth = truth[truth[:, 0] >= 0]
        assert len(dets) == len(truth)
        got = sorted((d[0], *np.round(d[2:], 6)) for d in dets)
        want = sorted((c, x1, y1, x2, y2) for c, x1, y1, x2, y2 in truth)
        np.testing.assert_allclose(np.array(got, float), np.array(want, float), atol=1e-5)


def test_average_precision_all_point_interpolation():
    # 3 ground truths; detections by score: TP, FP, TP, FP, TP -> precision 1, .5, .67, .5, .6
    recall = np.array([1, 1, 2, 2, 3]) / 3
    precision = np.array([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    want = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5)
    assert det.average_precision(recall, precision) == pytest.approx(want)


def test_mean_average_precision_perfect_and_wrong():
    boxes = np.array([[[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]], [[2, 5, 5, 15, 15], [-1, -1, -1, -1, -1]]], float)
    perfect = [[(0, 0.9, 0, 0, 10, 10), (1, 0.8, 20, 20, 30, 30)], [(2, 0.7, 5, 5, 15, 15)]]
    m, per_class = det.mean_average_precision(perfect, boxes)
    assert m == 1.0 and set(per_class) == {"circle", "square", "triangle"}
    shifted = [[(0, 0.9, 4, 4, 14, 14), (1, 0.8, 20, 20, 30, 30)], [(0, 0.7, 5, 5, 15, 15)]]
    m, per_class = det.mean_average_precision(shifted, boxes)   # circle IoU 0.22 < 0.5; triangle wrong class
    assert per_class == {"circle": 0.0, "square": 1.0, "triangle": 0.0} and m == pytest.approx(1 / 3)


def test_scenes_boxes_are_exact_pixel_extents():
    (x, boxes), _ = scenes.load_data(num_train=30, num_test=1)
    assert x.shape == (30, 64, 64, 1) and boxes.shape == (30, 4, 5)
    for img, rows in zip(x[..., 0], boxes):
        valid = rows[rows[:, 0] >= 0]
        assert 1 <= len(valid) <= 4
        inside = np.zeros_like(img, bool)
        for _, x1, y1, x2, y2 in valid.astype(int):
            inside[y1:y2, x1:x2] = True
            assert img[y1:y2, x1:x2].max() > 0.4                   # the shape is there
        assert img[~inside].max() < 0.45                           # and nothing bright outside the boxes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("detection") / "run"
    run = det.train_detection(epochs=6, num_train=600, num_test=100, out=str(out), verbose=0, plot=False)
    return run, out


def test_tiny_training_run_detects(trained):
    run, out = trained
    assert run["untrained_map50"] < 0.05
    assert run["test_map50"] > 0.5
    assert (out / "model.lamina").exists()


def test_cli_predict_prints_and_draws_boxes(trained, tmp_path, capsys):
    from lamina import cli
    from lamina.datasets import scenes
    _, out = trained
    (x, boxes), _ = scenes.load_data(8, 1, seed=123)
    np.save(tmp_path / "scenes.npy", x)
    assert cli.main(["predict", str(out / "model.lamina"), str(tmp_path / "scenes.npy"), "--show", "8"]) == 0
    printed = capsys.readouterr().out
    model = lamina.models.load_model(str(out / "model.lamina"))
    expected = det.decode_predictions(model.predict(x, verbose=0), 0.3)
    for i, dets in enumerate(expected):       # the printed boxes are the decoded grid's, image by image
        line = next(l for l in printed.splitlines() if l.startswith(f"{i}: "))
        assert line.startswith(f"{i}: {len(dets)} object(s)")
        for c, s, x1, y1, x2, y2 in dets:
            assert f"{det.class_name(c)} {s:.2f} at [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]" in line
    found = sum(len(d) for d in expected)
    truth = int((boxes[:, :, 0] >= 0).sum())
    assert found >= truth // 2                 # a trained detector finds most objects
    picture = tmp_path / "scenes.boxes.png"
    assert picture.exists() and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"into {picture}" in printed


def test_cli_predict_reads_an_image_file(trained, tmp_path, capsys):
    from PIL import Image
    from lamina import cli
    from lamina.datasets import scenes
    _, out = trained
    (x, _), _ = scenes.load_data(1, 1, seed=7)
    Image.fromarray((x[0, :, :, 0] * 255).round().astype(np.uint8)).save(tmp_path / "scene.png")
    draw = tmp_path / "drawn.png"
    assert cli.main(["predict", str(out / "model.lamina"), str(tmp_path / "scene.png"), "--draw", str(draw)]) == 0
    model = lamina.models.load_model(str(out / "model.lamina"))
    again = np.asarray(Image.open(tmp_path / "scene.png"), np.float32)[None, :, :, None] / 255
    expected = det.decode_predictions(model.predict(again, verbose=0), 0.3)[0]
    assert capsys.readouterr().out.startswith(f"0: {len(expected)} object(s)")
    assert draw.exists()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert cli.main(["predict", str(out / "model.lamina"), str(tmp_path / "broken.png")]) == 1
    assert "not a readable image" in capsys.readouterr().err


def test_cli_boxes_refuses_a_classifier(tmp_path, capsys):
    from lamina import cli
    model = lamina.Sequential([lamina.Input((4,)), lamina.layers.Dense(3)])
    model.save(str(tmp_path / "m.lamina"))
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    assert cli.main(["predict", str(tmp_path / "m.lamina"), str(tmp_path / "x.npy"), "--boxes"]) == 1
    assert "not a detection grid" in capsys.readouterr().err
    for bad in ("1.5", "-0.1", "nan", "high"):
        with pytest.raises(SystemExit):
            cli.main(["predict", str(tmp_path / "m.lamina"), str(tmp_path / "x.npy"), "--boxes",
                      "--score-threshold", bad])
        assert "expected a score from 0 to 1" in capsys.readouterr().err
