"""The library without its optional dependencies: a machine may lack tensorflow-datasets (and
array_record), ml_collections, optuna and tensorboardX. ``import fluxnet`` must not import them, and
building, training, evaluating and predicting on in-memory arrays must work with them uninstallable.
Each check runs in a fresh interpreter, since this one has imported them already."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("tensorflow_datasets", "array_record", "ml_collections", "optuna", "tensorboardX")

# Installed first in the child: every import of an optional module (or a submodule) fails as if it
# were not installed.
BLOCKER = f"""
import sys

BLOCKED = {OPTIONAL!r}


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (made unimportable by the test)", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""

WORKLOAD = """
import importlib.util
import json

import jax
import numpy as np

import fluxnet as fx
from fluxnet import data, layers, losses, metrics, models, train  # noqa: F401 (the library's packages)

result = {"loaded": sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))}
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
y = rng.integers(0, 10, size=96).astype(np.int32)


def small_model():
    return fx.Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"),
                          layers.BatchNormalization(), layers.Flatten(), layers.Dropout(0.1), layers.Dense(10)])


trainer = fx.Trainer(small_model(), loss=losses.get("sparse_categorical_crossentropy", from_logits=True),
                     optimizer="adam", metrics=["accuracy"])
state = trainer.init(jax.random.key(0))
state, history = trainer.fit(state, (x, y), epochs=1, batch_size=32, validation_split=0.25, verbose=0)
result["fit"] = {k: v[-1] for k, v in history.history.items()}
result["evaluate"] = trainer.evaluate(state, (x, y), batch_size=64)
result["predict"] = list(trainer.predict(state, x, batch_size=64).shape)
result["step"] = int(state.step)

model = small_model()  # the Keras-style shell over the same Trainer
model.compile(optimizer="adam", loss=losses.get("sparse_categorical_crossentropy", from_logits=True),
              metrics=["accuracy"])
model.fit(x, y, batch_size=32, epochs=1, verbose=0)
result["keras_evaluate"] = model.evaluate(x, y, verbose=0, return_dict=True)
result["keras_predict"] = list(model.predict(x, verbose=0).shape)

# fluxnet.data on arrays, and scikit-learn's digits without tfds
images, labels = data.digits.digits_images_and_labels()
splits = data.DatasetSplits(train=data.Split(images, labels), validation=None, test=None,
                            metadata=data.DatasetMetadata("digits", 10, tuple("0123456789"), (8, 8, 1)))
splits, _ = data.preprocess_splits(splits, {"rescale": 1 / 255})
batch = next(iter(data.BatchIterator(*splits.train, batch_size=64, seed=0)))
result["digits"] = [list(images.shape), float(splits.train.images.max()), list(batch["image"].shape)]

# what needs tensorflow-datasets says so when it is used
needs = {}
for what, use in {"load_dataset": lambda: data.load_dataset("digits"), "Digits": lambda: data.Digits,
                  "ImageFolder": lambda: data.ImageFolder}.items():
    try:
        use()
        needs[what] = "no error"
    except ModuleNotFoundError as err:
        needs[what] = str(err)
result["needs_tfds"] = needs
namespace = {}
exec("from fluxnet.data import *", namespace)
result["star_import"] = sorted(k for k in ("BatchIterator", "Digits", "ImageFolder", "load_dataset") if k in namespace)

# the accelerator benchmark imports none of them either
spec = importlib.util.spec_from_file_location("accelerator", ROOT + "/benchmarks/accelerator.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
result["loaded_at_end"] = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
print("RESULT " + json.dumps(result))
"""


def run_child(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_import_fluxnet_loads_no_optional_dependency():
    """Where they are installed (here), ``import fluxnet`` still imports none of them."""
    loaded = f"sorted({{m.split('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r})"
    result = run_child(f"import json\nimport sys\nimport fluxnet\nprint('RESULT ' + json.dumps({loaded}))")
    assert result == []


def test_the_library_trains_evaluates_and_predicts_without_the_optional_dependencies():
    result = run_child(BLOCKER + f"ROOT = {str(ROOT)!r}\n" + WORKLOAD)
    assert result["loaded"] == [] and result["loaded_at_end"] == []
    assert result["step"] == 3                                      # 72 training rows, batch 32: 3 steps
    assert set(result["fit"]) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert set(result["evaluate"]) == {"loss", "accuracy"} and result["evaluate"]["loss"] > 0
    assert result["predict"] == [96, 10] and result["keras_predict"] == [96, 10]
    assert set(result["keras_evaluate"]) >= {"loss", "accuracy"}
    assert result["digits"] == [[1797, 8, 8, 1], 1.0, [64, 8, 8, 1]]
    assert result["star_import"] == ["BatchIterator", "load_dataset"]  # not the tfds builder classes
    for what, message in result["needs_tfds"].items():
        assert "needs tensorflow-datasets and array_record" in message, (what, message)
