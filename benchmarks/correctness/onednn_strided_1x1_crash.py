"""Reproduces a TensorFlow 2.21 oneDNN crash: the weight gradient of a 1x1, stride-2 convolution.

On this project's VM (Intel Xeon, AVX-512 and AMX, 2026-12-03) the process dies with
SIGSEGV or "double free or corruption" when the convolution has 8 or 12 input
channels and an input of about 36 px or more; 4, 16, 24, 32, 40 and 64 channels
pass, and so does `TF_ENABLE_ONEDNN_OPTS=0`. A ResNet's downsampling shortcut is
such a convolution, so `model.width=8` ResNets trained at 144 px or more crash.

Each case runs in its own process; the exit code and the gradient's difference
from a hand-written one are printed:

    python benchmarks/correctness/onednn_strided_1x1_crash.py
"""

import os
import subprocess
import sys

CASE = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
batch, side, channels_in, channels_out = (int(v) for v in sys.argv[1:5])
x = tf.random.normal([batch, side, side, channels_in])
w = tf.Variable(tf.random.normal([1, 1, channels_in, channels_out]))
with tf.GradientTape() as tape:
    y = tf.nn.conv2d(x, w, strides=2, padding="SAME")
    loss = tf.reduce_sum(y * y)
gradient = tape.gradient(loss, w)
# The same gradient without the backprop-filter kernel: sum over positions of x * dL/dy.
reference = tf.einsum("bhwi,bhwo->io", x[:, ::2, ::2, :], 2 * y)
print(float(tf.reduce_max(tf.abs(gradient[0, 0] - reference))))
"""


def run(channels_in: int, onednn: bool) -> str:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
    result = subprocess.run(
        [sys.executable, "-c", CASE, "1", "64", str(channels_in), "16"],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode:
        return f"crashed (exit {result.returncode})"
    return f"ok, max |gradient - reference| = {float(result.stdout.split()[-1]):.3g}"


if __name__ == "__main__":
    for channels in (4, 8, 12, 16):
        for onednn in (True, False):
            print(
                f"64x64 input, {channels:2d} channels in, oneDNN {'on ' if onednn else 'off'}: "
                f"{run(channels, onednn)}",
                flush=True,
            )
