"""One process of the multi-process tests (``test_distributed.py``): the same script in every process,
on the same full arrays, as a user's would be. Prints ``RESULT {json}`` on its last line.

    python distributed_worker.py straight|first|resume CHECKPOINT_DIR
"""
import json
import sys

import fluxnet as fx

joined = fx.initialize_distributed()  # before any JAX computation

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fluxnet.models.builders import build_model  # noqa: E402
from fluxnet.train.checkpoint import Checkpointer  # noqa: E402

mode, checkpoints = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
x, y = rng.normal(size=(300, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 300)   # a partial last batch
trainer = fx.Trainer(build_model("cnn", (8, 8, 1), 10, filters=(8,), dense_units=16, dropout=0.2),
                     loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True), metrics=["accuracy"])
fit = dict(batch_size=64, verbose=0, validation_data=(x[:100], y[:100]))
if mode == "straight":
    state, history = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=2, **fit)
elif mode == "first":  # one epoch, saved, then the processes end (as if killed after the save)
    state, history = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=1, **fit)
    checkpointer = Checkpointer(checkpoints, monitor=None)
    checkpointer.save(1, state, meta={"epoch": 1})
    checkpointer.close()
else:  # new processes restore it and train the second epoch
    checkpointer = Checkpointer(checkpoints, monitor=None, read_only=True)
    state, _, _ = checkpointer.restore(1, trainer.abstract_state())
    checkpointer.close()
    state, history = trainer.fit(state, (x, y), epochs=1, **fit)
params = [np.asarray(leaf).ravel().tolist() for leaf in jax.tree.leaves(jax.device_get(state.params))]
print("RESULT " + json.dumps({"joined": joined, "processes": jax.process_count(), "devices": jax.device_count(),
                              "history": history.history, "params": params,
                              "evaluate": trainer.evaluate(state, (x, y)),
                              "predict": np.asarray(trainer.predict(state, x[:37])).ravel().tolist()}))
