import os
import subprocess
import sys

ENV = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)


def test_import_sets_legacy_keras_for_tfrs():
    proc = run("import tfrec_attn, tensorflow as tf, tensorflow_recommenders as tfrs;"
               "print(tf.keras.Model.__module__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("tf_keras")


def test_clear_error_when_tensorflow_came_first_with_keras3():
    proc = run("import tensorflow as tf; tf.keras.Model; import tfrec_attn")
    assert proc.returncode != 0
    assert "ImportError: TensorFlow was imported with Keras 3" in proc.stderr
    assert "TF_USE_LEGACY_KERAS=1" in proc.stderr
