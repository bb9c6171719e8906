"""TensorBoard (event files decoded by Google's protobuf runtime with the tensorflow.Event schema, CRCs
checked with an independent bitwise CRC-32C) and SwapEMAWeights."""
import glob
import os
import struct

import numpy as np
import pytest

import lamina
from lamina import callbacks


def _crc32c_bitwise(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(c):
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _event_class():
    pb = pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fdp = descriptor_pb2.FileDescriptorProto(name="lamina_test_event.proto", package="tensorflow")
    F = descriptor_pb2.FieldDescriptorProto
    value = descriptor_pb2.DescriptorProto(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    summary = fdp.message_type.add(name="Summary")
    summary.nested_type.add().CopyFrom(value)
    summary.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=".tensorflow.Summary.Value")
    event = fdp.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    event.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".tensorflow.Summary")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    _ = pb
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Event"))


def read_scalars(logdir):
    Event = _event_class()
    (path,) = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    raw = open(path, "rb").read()
    pos, out, versions = 0, {}, []
    while pos < len(raw):
        header = raw[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", raw[pos + 8:pos + 12])[0] == _masked(_crc32c_bitwise(header))
        payload = raw[pos + 12:pos + 12 + n]
        assert struct.unpack("<I", raw[pos + 12 + n:pos + 16 + n])[0] == _masked(_crc32c_bitwise(payload))
        pos += 16 + n
        ev = Event.FromString(payload)
        if ev.file_version:
            versions.append(ev.file_version)
        for v in ev.summary.value:
            out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    assert versions == ["brain.Event:2"]
    return out


def test_tensorboard_scalars_read_back(tmp_path):
    r = np.random.default_rng(0)
    x = r.normal(size=(64, 3)).astype(np.float32)
    y = (x.sum(1, keepdims=True) > 0).astype(np.float32)
    model = lamina.Sequential([lamina.layers.Input((3,)), lamina.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=lamina.optimizers.SGD(0.1), loss="binary_crossentropy", metrics=["accuracy"])
    tb = callbacks.TensorBoard(log_dir=str(tmp_path / "logs"), update_freq=2)
    h = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, callbacks=[tb], verbose=0)
    train = read_scalars(str(tmp_path / "logs" / "train"))
    val = read_scalars(str(tmp_path / "logs" / "validation"))
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], h.history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in train["epoch_accuracy"]], h.history["accuracy"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in val["epoch_loss"]], h.history["val_loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in train["epoch_learning_rate"]], [0.1] * 3, rtol=1e-6)
    # 48 training samples / 16 = 3 batches per epoch, 9 in all: every 2nd batch logged
    assert [s for s, _ in train["batch_loss"]] == [2, 4, 6, 8]


def test_tensorboard_rejects_bad_update_freq():
    with pytest.raises(ValueError, match="update_freq"):
        callbacks.TensorBoard(update_freq="sometimes")


def test_swap_ema_weights_evaluates_with_the_average(tmp_path):
    r = np.random.default_rng(1)
    x = r.normal(size=(32, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [2.0], [-1.0]], np.float32)

    def make():
        lamina.utils.set_random_seed(3)
        m = lamina.Sequential([lamina.layers.Input((3,)), lamina.layers.Dense(1)])
        m.compile(optimizer=lamina.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.5), loss="mse")
        return m

    m = make()
    m.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callbacks.SwapEMAWeights()])
    raw = [w.copy() for w in m.get_weights()]
    avg = [a.numpy().copy() for a in m.optimizer._slots["average"]]
    assert not np.allclose(raw[0], avg[0])
    swap = callbacks.SwapEMAWeights()
    got = m.evaluate(x, y, verbose=0, callbacks=[swap])
    expect = float(np.mean((x @ avg[0] + avg[1] - y) ** 2))
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    for a, b in zip(m.get_weights(), raw):  # swapped back after the pass
        np.testing.assert_array_equal(a, b)
    pred = m.predict(x, verbose=0, callbacks=[swap])
    np.testing.assert_allclose(pred, x @ avg[0] + avg[1], rtol=1e-5, atol=1e-6)
    no_ema = lamina.Sequential([lamina.layers.Input((3,)), lamina.layers.Dense(1)])
    no_ema.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="use_ema"):
        no_ema.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.SwapEMAWeights()])


@pytest.mark.parametrize("as_json", [False, True])
def test_remote_monitor_posts_epoch_logs(as_json):
    import json
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        cb = callbacks.RemoteMonitor(root=f"http://127.0.0.1:{server.server_port}", send_as_json=as_json)
        x = np.ones((8, 2), np.float32)
        model = lamina.Sequential([lamina.layers.Input((2,)), lamina.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        h = model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[cb])
    finally:
        server.shutdown()
        server.server_close()
    assert [r[0] for r in received] == ["/publish/epoch/end/"] * 2
    for epoch, (_, ctype, body) in enumerate(received):
        data = json.loads(body) if as_json else json.loads(urllib.parse.parse_qs(body)["data"][0])
        assert ctype.startswith("application/json" if as_json else "application/x-www-form-urlencoded")
        assert data["epoch"] == epoch and data["loss"] == pytest.approx(h.history["loss"][epoch])


def test_remote_monitor_warns_when_unreachable():
    cb = callbacks.RemoteMonitor(root="http://127.0.0.1:9")
    with pytest.warns(UserWarning, match="RemoteMonitor"):
        cb.on_epoch_end(0, {"loss": 1.0})
