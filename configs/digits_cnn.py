"""The main job: a Conv-BatchNorm-Pool CNN on the bundled digits (8x8 grey images, 10 classes), offline.

    fluxnet train configs/digits_cnn.py [key=value ...] [--workdir DIR]
"""
from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    config = ConfigDict()
    config.seed = 0
    config.data = ConfigDict({
        "name": "digits",                 # bundled; or a tfds name (mnist, cifar10, ...) or an image folder
        "data_dir": None,                 # tfds data dir; None: tfds' default
        "splits": {"train": "train", "validation": 0.15, "test": 0.2},  # fractions of train, or tfds strings
        "stratify": True,
        "image_size": None,               # (height, width) to resize to; None keeps the data set's size
        "preprocess": {"rescale": 1 / 255, "normalize": False},
        "classes": None,                  # e.g. (0, 1, 2, 3, 4): only these classes, relabelled 0..k-1
        "train_per_class": None,          # few-shot: at most this many training images per class
        "streaming": "auto",              # auto | True | False: read batches on demand (grain workers), not into memory
        "max_in_memory_mb": 2048.0,       # auto streams when the decoded images (uint8) would exceed this many MiB
        "workers": 2,                     # processes reading a streamed data set (0: read in the training process)
    })
    # On-device augmentation in the train step (fluxnet.augment ops, Keras names), e.g.
    # augment=({"op": "RandomTranslation", "height_factor": 0.1, "width_factor": 0.1},)
    config.augment = ()
    config.model = ConfigDict({
        "name": "cnn",                    # mlp | cnn | resnet
        "cnn": {"filters": (32, 64), "dense_units": 128, "dropout": 0.3, "batch_norm": True},
        "mlp": {"units": (128,), "dropout": 0.2},   # model.name=mlp
    })
    config.loss = ConfigDict({"name": "sparse_categorical_crossentropy", "from_logits": True})
    config.metrics = ("accuracy",)
    config.optimizer = ConfigDict({"name": "adam", "learning_rate": 2e-3, "schedule": "cosine",
                                   "weight_decay": None, "clipnorm": None,
                                   "mu_dtype": None})  # adam/adamw: "bfloat16" halves the first moment's memory
    config.train = ConfigDict({
        "epochs": 25,
        "batch_size": 32,
        "class_weight": None,             # None | "balanced" | {class: weight}
        "oversample": False,
        "steps_per_execution": 1,
        "grad_accum_steps": 1,            # k > 1: each batch as k micro-batches, gradients added (memory / k)
        "remat": "none",                  # none | full | layers: recompute activations in the backward pass
        "dtype_policy": "float32",        # float32 | mixed_bfloat16 | mixed_float16 | bfloat16 (Keras' names)
        "compilation_cache": "auto",      # compiled steps kept on disk: auto (~/.cache/fluxnet/jax) | DIR | None
        "plots": True,                    # curves.png and confusion_matrix.png in the workdir (False: ~1 s less a run)
        "parallel": "sharding",           # sharding (jit over a device mesh) | pmap
        "early_stopping": {"monitor": "val_loss", "patience": 0, "restore_best_weights": True},  # 0: off
        "checkpoint": {"keep": 2, "monitor": "val_accuracy"},
    })
    return config
