"""The compact CNN: depthwise-separable blocks designed for int8 on ARM CPUs.

Every block is Conv (linear, no bias) -> BatchNorm -> ReLU, so that BatchNorm folds into the
convolution at conversion. Global average pooling and a linear classifier follow, so that a class
activation map is exact: the last feature map (layer `features`) and the classifier weights give it
on the device. The outputs are 3 logits (normal, bacterial, viral); P(pneumonia) is the sum of the
last two softmax probabilities.
"""

from __future__ import annotations

from .tfcompat import tf_keras

DEFAULT_SIZE = 128
# (stride, output channels) of each depthwise-separable block, after a 3x3 stride-2 stem.
ARCHITECTURES = {
    "xs": dict(stem=8, blocks=((1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128), (1, 128))),
    "xsw": dict(stem=8, blocks=((1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 192), (1, 192))),  # wider end
    "s": dict(stem=16, blocks=((1, 32), (2, 64), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256))),
    "m": dict(stem=16, blocks=((1, 32), (2, 64), (1, 64), (2, 128), (1, 128), (2, 192), (1, 192), (2, 256), (1, 256))),
}
DEFAULT_ARCH = "s"
NAME_PREFIX = "edge_xray_"  # models are named edge_xray_{arch}_{image size}
DROPOUT = 0.2


def build_model(image_size: int = DEFAULT_SIZE, arch: str = DEFAULT_ARCH, dropout: float = DROPOUT):
    _, keras = tf_keras()
    L = keras.layers
    spec = ARCHITECTURES[arch]
    reg = keras.regularizers.l2(1e-5)

    def cbr(x, name, filters=None, stride=1, depthwise=False, kernel=3):
        if depthwise:
            x = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                  depthwise_regularizer=reg, name=name + "_dw")(x)
        else:
            x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         kernel_regularizer=reg, name=name + "_conv")(x)
        x = L.BatchNormalization(name=name + "_bn")(x)
        return x

    inp = keras.Input((image_size, image_size, 1), name="image")
    x = cbr(inp, "stem", spec["stem"], stride=2)
    x = L.ReLU(name="stem_relu")(x)
    n = len(spec["blocks"])
    for i, (stride, width) in enumerate(spec["blocks"]):
        x = cbr(x, f"b{i}", stride=stride, depthwise=True)
        x = L.ReLU(name=f"b{i}_dw_relu")(x)
        x = cbr(x, f"b{i}_pw", width, kernel=1)
        x = L.ReLU(name="features" if i == n - 1 else f"b{i}_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    out = L.Dense(3, name="logits", kernel_regularizer=reg)(x)
    return keras.Model(inp, out, name=f"{NAME_PREFIX}{arch}_{image_size}")


def arch_of(model) -> str | None:
    """The architecture a model was built with (recorded in its name by build_model), or None."""
    name = model.name
    if not name.startswith(NAME_PREFIX):
        return None
    arch = name[len(NAME_PREFIX):].rsplit("_", 1)[0]
    return arch if arch in ARCHITECTURES else None


def multiply_adds(model) -> int:
    """Multiply-adds of one forward pass (convolutions and dense layers)."""
    _, keras = tf_keras()
    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # through QAT wrappers
        if isinstance(inner, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output_shape
            kh, kw = inner.kernel_size
            total += h * w * kh * kw * c
        elif isinstance(inner, keras.layers.Conv2D):
            _, h, w, c = layer.output_shape
            kh, kw = inner.kernel_size
            total += h * w * kh * kw * layer.input_shape[-1] * c
        elif isinstance(inner, keras.layers.Dense):
            total += layer.input_shape[-1] * inner.units
    return int(total)
