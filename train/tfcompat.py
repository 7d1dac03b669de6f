"""Import TensorFlow with Keras 2 (tf_keras): tensorflow-model-optimization needs it.

TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported, so every module of the project
that needs TensorFlow gets it from here.
"""

import os


def tf_keras():
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.filterwarnings("ignore", message=r".*tf.lite.Interpreter is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*Statistics for quantized inputs were expected.*")
    import tensorflow as tf
    import tf_keras as keras

    tf.get_logger().setLevel("ERROR")
    return tf, keras


def tfmot():
    tf_keras()
    import tensorflow_model_optimization as mot

    return mot


def load_keras_model(path):
    """A float or QAT model saved by `edge-xray train` (HDF5)."""
    _, keras = tf_keras()
    mot = tfmot()
    with mot.quantization.keras.quantize_scope():
        return keras.models.load_model(str(path), compile=False)
