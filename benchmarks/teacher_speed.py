"""Size and speed of the EfficientNet-Lite0 teacher (train/efficientnet_lite.py) on this machine.

    python benchmarks/teacher_speed.py [--sizes 224 192] [--batch 32] [--repeats 10]

For each input size: parameters, multiply-adds of one image, and the median seconds per batch of
(a) a forward pass in inference mode, (b) forward + backward (gradients of the cross-entropy with
respect to every trainable weight, training mode: batch statistics, dropout), (c) a full training step
(b plus an Adam update), each a compiled tf.function after one warm-up call. Random inputs shaped like
edge_xray.train.data.prepare_all's (n, size, size, 1) in [0, 1], 3 classes, ImageNet weights.
TensorFlow's default thread pools. Prints figures, asserts nothing; the load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from edge_xray.train.efficientnet_lite import build_teacher
from edge_xray.train.model import multiply_adds
from edge_xray.train.tfcompat import tf_keras


def timed(fn, repeats: int) -> float:
    fn()  # trace and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 192])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    tf, keras = tf_keras()
    print(f"load average before: {os.getloadavg()}")
    print("| input | params (trainable) | multiply-adds / image | forward s/batch | forward+backward s/batch | train step s/batch |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        model = build_teacher(size)
        rng = np.random.default_rng(0)
        x = tf.constant(rng.uniform(0, 1, (args.batch, size, size, 1)).astype(np.float32))
        y = tf.constant(rng.integers(0, 3, args.batch))
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        opt = keras.optimizers.Adam(1e-4)

        @tf.function
        def forward():
            return model(x, training=False)

        @tf.function
        def grads():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        f, fb, st = (timed(lambda g=g: [t.numpy() for t in tf.nest.flatten(g())], args.repeats)
                     for g in (forward, grads, step))
        print(f"| {size} px, batch {args.batch} | {model.count_params() / 1e6:.2f} M "
              f"({sum(int(np.prod(w.shape)) for w in model.trainable_weights) / 1e6:.2f} M) | "
              f"{multiply_adds(model) / 1e6:.0f} M | {f:.2f} | {fb:.2f} | {st:.2f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
