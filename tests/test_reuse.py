"""docs/saved_model_reuse.md, executed: processes that import only TensorFlow (and Keras)."""

import json
import os
import re
import subprocess
import sys

import tensorflow as tf

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "saved_model_reuse.md")
HISTORY = [["i1", "i2", "i3"], ["i30", "", ""]]


def snippets():
    with open(DOC) as handle:
        return re.findall(r"```python\n(.*?)```", handle.read(), re.S)


def run(codes, legacy_keras: bool):
    """Runs each code in a fresh process (one for all: TensorFlow starts once), each in a
    namespace of its own, as if alone; returns what each printed last, as JSON."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if legacy_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    program = ("import contextlib, io, json, sys\n"
               "last = []\n"
               "for number, code in enumerate(sys.argv[1:]):\n"
               "    printed = io.StringIO()\n"
               "    with contextlib.redirect_stdout(printed):\n"
               "        exec(compile(code, f'<snippet {number}>', 'exec'), {'__name__': '__main__'})\n"
               "    last.append(printed.getvalue().strip().splitlines()[-1])\n"
               "print(json.dumps(last))\n")
    proc = subprocess.run([sys.executable, "-c", program, *codes], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in json.loads(proc.stdout.strip().splitlines()[-1])]


def expected(path):
    out = tf.saved_model.load(path).signatures["serving_default"](history=tf.constant(HISTORY))
    return out["item_ids"].numpy().astype(str).tolist(), out["scores"].numpy().tolist()


def test_documented_recipes_run_in_plain_tensorflow(tiny_export):
    path = tiny_export[1]
    ids, scores = expected(path)
    call, keras3, keras2, cold = snippets()
    check = ("\nimport json, sys\nassert 'tfrec_attn' not in sys.modules and 'tensorflow_recommenders' not in sys.modules\n")

    # Keras 3 (the default tf.keras): the plain call, the Keras 3 layer and the cold-start recipe.
    code = call.replace("runs/main/export/retrieval/1", path).replace(
        'tf.constant([["50", "172", "133"], ["1", "", ""]])', f"tf.constant({HISTORY!r})")
    plain = code + check + "print(json.dumps(out['item_ids'].numpy().astype(str).tolist()))"
    layer = (keras3.replace("runs/main/export/retrieval/1", path) + check
             + f"print(json.dumps(model(tf.constant({HISTORY!r})).numpy().tolist()))")
    # Cold start: embed_items + user_embedding (an id export ignores the text: OOV vector).
    new_item = cold.replace("runs/main/export/retrieval/1", path) + check + "print(json.dumps(score.numpy().tolist()))"
    got_plain, got_layer, got_cold = run([plain, layer, new_item], False)
    assert got_plain == ids
    assert abs(max(max(abs(a - b) for a, b in zip(r1, r2)) for r1, r2 in zip(got_layer, scores))) < 1e-5

    code = keras2.replace("runs/main/export/retrieval/1", path)
    (got,) = run([code + check + "assert tf.keras.Model.__module__.startswith('tf_keras')\n"
                  f"print(json.dumps(model(tf.constant({HISTORY!r}))['item_ids'].numpy().astype(str).tolist()))"], True)
    assert got == ids

    loaded = tf.saved_model.load(path)
    oov = loaded.signatures["embed_items"](item_ids=tf.constant(["new-1"]), item_texts=tf.constant(["x"]))
    user = loaded.signatures["user_embedding"](history=tf.constant([["50", "172", "181"]]))
    assert abs(got_cold[0] - float(tf.reduce_sum(user["embedding"] * oov["embeddings"]))) < 1e-5


def test_saved_model_cli_reads_the_export(tiny_export):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--all", "--dir", tiny_export[1]], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "signature_def['serving_default']" in proc.stdout
    assert "inputs['history'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1, -1)" in proc.stdout
    assert "outputs['item_ids']" in proc.stdout and "signature_def['explain']" in proc.stdout
