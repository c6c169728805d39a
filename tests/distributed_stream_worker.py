"""One process of the multi-process streaming test (``test_streaming.py``): the same script in every
process; ``stream`` reads a grain MapDataset (each process only its devices' rows of each batch),
``memory`` the same rows as arrays. Prints ``RESULT {json}`` on its last line.

    python distributed_stream_worker.py memory|stream
"""
import json
import sys

import fluxnet as fx

joined = fx.initialize_distributed()  # before any JAX computation

import grain  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from fluxnet.models.builders import build_model  # noqa: E402

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 300).astype("int32")
    trainer = fx.Trainer(build_model("cnn", (8, 8, 1), 10, filters=(8,), dense_units=16, dropout=0.2),
                         loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True), metrics=["accuracy"])
    if sys.argv[1] == "stream":
        def rows(n, targets=True):
            return grain.MapDataset.source([(x[i], y[i]) if targets else (x[i],) for i in range(n)])

        train, validation, inputs = rows(300), rows(100), rows(37, targets=False)
    else:
        train, validation, inputs = (x, y), (x[:100], y[:100]), x[:37]
    state, history = trainer.fit(trainer.init(jax.random.key(0)), train, epochs=2, batch_size=64, verbose=0,
                                 validation_data=validation, seed=0)
    params = [np.asarray(leaf).ravel().tolist() for leaf in jax.tree.leaves(jax.device_get(state.params))]
    print("RESULT " + json.dumps({"joined": joined, "processes": jax.process_count(), "devices": jax.device_count(),
                                  "history": history.history, "params": params,
                                  "evaluate": trainer.evaluate(state, train),
                                  "predict": np.asarray(trainer.predict(state, inputs)).ravel().tolist()}))
