"""Study: does transfer learning help on small data? Digits 0-4 -> digits 5-9.

A CNN is pretrained on digits 0-4 (source task). On digits 5-9 (target task) with 5, 10 and 50
training images per class, three ways of training are compared: from scratch (the same architecture,
random initialisation), a linear probe on the frozen pretrained backbone, and fine-tuning the whole
backbone with a 10x smaller learning rate -- each with and without data augmentation, over several
seeds. Accuracy is measured on the same held-out test split of digits 5-9.

    python experiments/transfer_digits.py [--seeds 3] [--steps 300] [--out experiments/results]

Writes ``transfer_digits.md`` (mean ± std table) and ``transfer_digits.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

import fluxnet as fx
from fluxnet import augment, optimizers, pretrained, transfer
from fluxnet.data import limit_per_class, load_dataset, preprocess_splits, select_classes
from fluxnet.models.builders import build_model

SHOTS = (5, 10, 50)
METHODS = ("scratch", "linear_probe", "fine_tune")
# One-pixel shifts with nearest-neighbour sampling: on 8x8 digits, bilinear rotations and zooms blur away
# most of the signal (an earlier run of this study with them cut "scratch" at 50 images/class to 0.74).
AUGMENT = [{"op": "RandomTranslation", "height_factor": 0.125, "width_factor": 0.125, "fill_mode": "constant",
            "interpolation": "nearest"}]
CNN = {"filters": (32, 64), "dense_units": 128, "dropout": 0.3, "batch_norm": True}
LOSS = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)


def data(seed: int, data_dir: str | None):
    splits = load_dataset("digits", data_dir=data_dir, splits={"train": "train", "validation": 0.15, "test": 0.2},
                          seed=seed)
    splits, _ = preprocess_splits(splits, {"rescale": 1 / 255})
    return select_classes(splits, range(5)), select_classes(splits, range(5, 10))


def pretrain_backbone(source, epochs: int, seed: int):
    model = build_model("cnn", source.metadata.image_shape, 5, **CNN)
    trainer = fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", 2e-3), metrics=["accuracy"])
    state, _ = trainer.fit(trainer.init(jax.random.key(seed)), source.train, epochs=epochs, batch_size=32,
                           verbose=0, seed=seed)
    accuracy = trainer.evaluate(state, source.test)["accuracy"]
    backbone = fx.Model(model.inputs, model.get_layer("pool2").output, name="backbone")
    return backbone, jax.device_get(state.variables), accuracy


def run_one(method: str, backbone_cfg, target, shots: int, use_aug: bool, steps: int, seed: int) -> float:
    """Train on ``shots`` images per class for ``steps`` optimizer steps (the same budget whatever the
    data size: 5 images per class would otherwise get a tenth of the updates of 50)."""
    train = limit_per_class(target.train, shots, seed=seed)
    pipeline = augment.Pipeline.from_config(AUGMENT) if use_aug else None
    batch = min(32, len(train))
    epochs = -(-steps // -(-len(train) // batch))  # an epoch trains its last partial batch too
    if method == "scratch":
        model = build_model("cnn", target.metadata.image_shape, 5, **CNN)
        trainer = fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", 2e-3), metrics=["accuracy"],
                             augment=pipeline)
        state = trainer.init(jax.random.key(seed))
    else:
        backbone, variables = pretrained.load(backbone_cfg)  # fresh layer objects for every run
        model = transfer.build_transfer_model(backbone, 5, pooling="flatten", dropout=0.2)
        groups = transfer.configure(model, backbone, method)
        sched = {"name": "adam", "learning_rate": 2e-3}
        txs = {"head": optimizers.build_optimizer(sched, total_steps=steps),
               "backbone": optimizers.build_optimizer({**sched, "learning_rate": 2e-4}, total_steps=steps)}
        trainer = fx.Trainer(model, loss=LOSS, optimizer=txs, param_groups=groups, metrics=["accuracy"],
                             augment=pipeline)
        init = pretrained.restore_into(model.init(jax.random.key(seed)), variables, exclude=["params/head_*"])
        state = trainer.with_variables(trainer.init(jax.random.key(seed)), init)
    state, _ = trainer.fit(state, train, epochs=epochs, batch_size=batch, verbose=0, seed=seed)
    return trainer.evaluate(state, target.test)["accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per target-task run")
    p.add_argument("--pretrain-epochs", type=int, default=40)
    p.add_argument("--data-dir", default=None, help="tfds data dir (default: tfds' own)")
    p.add_argument("--out", default=str(Path(__file__).with_name("results")))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    source, target = data(0, args.data_dir)
    backbone, variables, source_acc = pretrain_backbone(source, args.pretrain_epochs, seed=0)
    entry = pretrained.save_backbone(backbone, variables, out / "digits04_backbone", overwrite=True,
                                     info={"source": "digits 0-4", "test_accuracy": source_acc})
    print(f"pretrained on digits 0-4: test accuracy {source_acc:.4f}")
    results: dict[str, list[float]] = {}
    for shots in SHOTS:
        for use_aug in (False, True):
            for method in METHODS:
                key = f"{method}|{shots}|{'aug' if use_aug else 'none'}"
                results[key] = [run_one(method, entry, target, shots, use_aug, args.steps, seed)
                                for seed in range(args.seeds)]
                print(f"{key:32s} {np.mean(results[key]):.4f} ± {np.std(results[key]):.4f}", flush=True)
    (out / "transfer_digits.json").write_text(json.dumps(
        {"source_test_accuracy": source_acc, "results": results, "seeds": args.seeds, "steps": args.steps,
         "test_examples": len(target.test), "seconds": time.time() - start}, indent=1))
    write_table(results, out / "transfer_digits.md", source_acc, len(target.test), args)
    write_plot(results, out / "transfer_digits.png")
    print(f"done in {time.time() - start:.0f} s; results in {out}")


def write_table(results, path: Path, source_acc: float, n_test: int, args) -> None:
    lines = [f"Test accuracy on digits 5-9 ({n_test} test images), mean ± std over {args.seeds} seeds, "
             f"{args.steps} optimizer steps per run; backbone pretrained on digits 0-4 for {args.pretrain_epochs} "
             f"epochs (test accuracy on digits 0-4: {source_acc:.3f}).", "",
             "| images/class | augmentation | " + " | ".join(METHODS) + " |",
             "|---:|:---|" + "---:|" * len(METHODS)]
    for shots in SHOTS:
        for aug in ("none", "aug"):
            cells = [f"{np.mean(results[f'{m}|{shots}|{aug}']):.3f} ± {np.std(results[f'{m}|{shots}|{aug}']):.3f}"
                     for m in METHODS]
            lines.append(f"| {shots} | {'yes' if aug == 'aug' else 'no'} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, aug in zip(axes, ("none", "aug")):
        for method in METHODS:
            means = [np.mean(results[f"{method}|{s}|{aug}"]) for s in SHOTS]
            stds = [np.std(results[f"{method}|{s}|{aug}"]) for s in SHOTS]
            ax.errorbar(SHOTS, means, yerr=stds, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(SHOTS, [str(s) for s in SHOTS])
        ax.set_xlabel("training images per class")
        ax.set_title("with augmentation" if aug == "aug" else "without augmentation")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (digits 5-9)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
