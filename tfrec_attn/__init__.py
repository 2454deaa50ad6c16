"""tfrec_attn: attention-based recommendation on TensorFlow Recommenders.

The package is a stack of layers; a module imports only from its own layer or the ones below
it (lazy imports inside functions included; ``tests/test_layering.py`` checks it). Bottom first:

    errors → features → data → text → layers → tasks → models → export → evaluation
        → baselines → config → training → serving → app

``errors``: the error base class. ``features``: in-graph preprocessing and the item id spaces.
``data``: readers, splits, input pipelines. ``text``: BERT encoders, tokenization, weights.
``layers``: Keras layers and towers. ``tasks``: losses. ``models``: ``tfrs.Model``s.
``export``: SavedModels. ``evaluation``: the protocol and scorers. ``baselines``: non-neural
models. ``config``: typed configs and their registry. ``training``: the engine, recipes and
run directories. ``serving``: the TF-Serving-compatible server and client. ``app``: the
command line and the main job.

TFRS 0.7.7 runs on Keras 2 (the ``tf-keras`` package). TensorFlow picks the Keras
behind ``tf.keras`` from ``TF_USE_LEGACY_KERAS`` the first time ``tf.keras`` is
touched, so this module sets it before anything of ours imports TensorFlow.
"""

import os
import sys

__version__ = "0.1.0"

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ log: warnings off; errors too on a machine with no NVIDIA device, where
# the only one is "failed call to cuInit" at the first op (Python exceptions still say
# what went wrong). Set TF_CPP_MIN_LOG_LEVEL yourself to see more.
_no_gpu = not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if _no_gpu else "2")

if os.environ["TF_USE_LEGACY_KERAS"] not in ("1", "true", "True"):
    raise ImportError(
        "tfrec_attn needs Keras 2 (tf-keras) because tensorflow-recommenders 0.7.7 does not "
        f"support Keras 3, but TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}. "
        "Unset it or set TF_USE_LEGACY_KERAS=1."
    )

if "tensorflow" in sys.modules:  # TensorFlow was imported before us: check what tf.keras is.
    _keras_module = sys.modules["tensorflow"].keras.Model.__module__
    if not _keras_module.startswith("tf_keras"):
        raise ImportError(
            "TensorFlow was imported with Keras 3 behind tf.keras before tfrec_attn "
            f"(tf.keras.Model comes from {_keras_module!r}); tensorflow-recommenders needs "
            "Keras 2. Fix: `import tfrec_attn` before `import tensorflow`, or run with the "
            "environment variable TF_USE_LEGACY_KERAS=1 (and `pip install tf-keras==2.20.*`)."
        )
