"""Study: does transfer learning help on small data? Digits 0-4 -> digits 5-9.

A CNN is pretrained on digits 0-4 (source task). On digits 5-9 (target task) with 5, 10 and 50
training images per class, three ways of training are compared: from scratch (the same architecture,
random initialisation), a linear probe on the frozen pretrained backbone, and fine-tuning the whole
backbone with a 10x smaller learning rate -- each with and without data augmentation, over several
seeds. Accuracy is measured on the same held-out test split of digits 5-9.

Keras applications (``fx.applications``) get a row each: with no ImageNet weights offline, each network
is pretrained headless on digits 0-4 at its smallest input (digits upsampled by
``fx.applications.inputs.application_images``), then probed and fine-tuned on digits 5-9 as the CNN is
(``--app-shots`` images per class, no augmentation). ``--quick`` leaves them out: compiling the smallest
of them takes longer than the whole quick run.

    python experiments/transfer_digits.py [--seeds 3] [--steps 300] [--applications vgg16,mobilenet_v2,...]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import common
import fluxnet as fx
from fluxnet import augment, layers, optimizers, pretrained, transfer
from fluxnet.applications import APPLICATIONS
from fluxnet.applications.inputs import application_images, input_size
from fluxnet.data import limit_per_class, load_dataset, preprocess_splits, select_classes
from fluxnet.models.builders import build_model

NAME = "transfer_digits"
SHOTS = (5, 10, 50)
METHODS = ("scratch", "linear_probe", "fine_tune")
# One-pixel shifts with nearest-neighbour sampling: on 8x8 digits, bilinear rotations and zooms blur away
# most of the signal (an earlier run of this study with them cut "scratch" at 50 images/class to 0.74).
AUGMENT = [{"op": "RandomTranslation", "height_factor": 0.125, "width_factor": 0.125, "fill_mode": "constant",
            "interpolation": "nearest"}]
CNN = {"filters": (32, 64), "dense_units": 128, "dropout": 0.3, "batch_norm": True}
LOSS = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)
QUICK = {"seeds": 1, "steps": 4, "pretrain_epochs": 1, "shots": (5,), "augmentation": ("none",), "applications": []}


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per target-task run")
    p.add_argument("--pretrain-epochs", type=int, default=40)
    p.add_argument("--applications", type=lambda s: [a for a in s.split(",") if a], default=APPLICATIONS.names(),
                   help="comma-separated fx.applications names to add as rows (default: all; '' for none)")
    p.add_argument("--app-shots", type=int, default=10, help="target images per class for the applications")
    p.add_argument("--app-steps", type=int, default=100, help="optimizer steps per application target run")
    p.add_argument("--app-seeds", type=int, default=1)
    p.add_argument("--app-pretrain-epochs", type=int, default=5)
    p.set_defaults(shots=SHOTS, augmentation=("none", "aug"))


def data(seed: int, data_dir: str | None):
    """Digits 0-4 and digits 5-9 (each relabelled 0-4), pixels in [0, 255]."""
    splits = load_dataset("digits", data_dir=data_dir, splits={"train": "train", "validation": 0.15, "test": 0.2},
                          seed=seed)
    return select_classes(splits, range(5)), select_classes(splits, range(5, 10))


def rescaled(splits):
    return preprocess_splits(splits, {"rescale": 1 / 255})[0]


def pretrain(model, source, epochs: int, learning_rate: float, seed: int = 0):
    """``model`` trained on the source task: its trainer and train state."""
    trainer = fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", learning_rate), metrics=["accuracy"])
    state, _ = trainer.fit(trainer.init(jax.random.key(seed)), source.train, epochs=epochs, batch_size=32,
                           verbose=0, seed=seed)
    return trainer, state


def recalibrated(backbone, variables: dict, images: np.ndarray) -> dict:
    """``variables`` with every BatchNormalization's moving statistics set to those of ``images`` (one
    pass in training mode, momentum 0): a few hundred pretraining steps leave moving averages with Keras'
    momentum (0.99; MobileNetV2's 0.999) far from the statistics the network was trained with."""
    norms = [layer for layer in backbone.layers if isinstance(layer, layers.BatchNormalization)]
    if not norms:  # ConvNeXt normalises with LayerNormalization: nothing to recompute
        return variables
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        _, state = backbone.apply(pretrained.subset_variables(backbone, variables), images, training=True,
                                  rng=jax.random.key(0))
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return {**variables, "batch_stats": {**variables["batch_stats"], **jax.device_get(state["batch_stats"])}}


def run_one(method: str, entry: Path, target, shots: int, aug: str, steps: int, seed: int) -> float:
    """Train on ``shots`` images per class for ``steps`` optimizer steps (the same budget whatever the
    data size: 5 images per class would otherwise get a tenth of the updates of 50)."""
    train = limit_per_class(target.train, shots, seed=seed)
    pipeline = augment.Pipeline.from_config(AUGMENT) if aug == "aug" else None
    batch = min(32, len(train))
    epochs = -(-steps // -(-len(train) // batch))  # an epoch trains its last partial batch too
    if method == "scratch":
        model = build_model("cnn", target.metadata.image_shape, 5, **CNN)
        trainer = fx.Trainer(model, loss=LOSS, optimizer=optimizers.get("adam", 2e-3), metrics=["accuracy"],
                             augment=pipeline)
        state = trainer.init(jax.random.key(seed))
    else:
        backbone, variables = pretrained.load(entry)  # fresh layer objects for every run
        model = transfer.build_transfer_model(backbone, 5, pooling="flatten", dropout=0.2)
        groups = transfer.configure(model, backbone, method)
        sched = {"name": "adam", "learning_rate": 2e-3}
        txs = {"head": optimizers.build_optimizer(sched, total_steps=steps),
               "backbone": optimizers.build_optimizer({**sched, "learning_rate": 2e-4}, total_steps=steps)}
        trainer = fx.Trainer(model, loss=LOSS, optimizer=txs, param_groups=groups, metrics=["accuracy"],
                             augment=pipeline)
        state = trainer.init(jax.random.key(seed))
        state = trainer.with_variables(state, pretrained.restore_into(state.variables, variables,
                                                                      exclude=["params/head_*"]))
    state, _ = trainer.fit(state, train, epochs=epochs, batch_size=batch, verbose=0, seed=seed)
    return trainer.evaluate(state, target.test)["accuracy"]


def cnn_rows(args, source, target, tmp: Path) -> dict:
    """The CNN study: every method, shot count and augmentation setting over ``args.seeds`` seeds."""
    model = build_model("cnn", source.metadata.image_shape, 5, **CNN)
    trainer, state = pretrain(model, source, args.pretrain_epochs, 2e-3)
    source_acc = trainer.evaluate(state, source.test)["accuracy"]
    backbone = fx.Model(model.inputs, model.get_layer("pool2").output, name="backbone")
    entry = pretrained.save_backbone(backbone, jax.device_get(state.variables), tmp / "digits04",
                                     info={"source": "digits 0-4"})
    print(f"pretrained on digits 0-4: test accuracy {source_acc:.4f}", flush=True)
    results: dict[str, list[float]] = {}
    for shots in args.shots:
        for aug in args.augmentation:
            for method in METHODS:
                key = f"{method}|{shots}|{aug}"
                results[key] = [run_one(method, entry, target, shots, aug, args.steps, seed)
                                for seed in range(args.seeds)]
                print(f"{key:32s} {common.mean_std(results[key])}", flush=True)
    return {"source_test_accuracy": source_acc, "results": results}


def application_row(name: str, args, source, target, tmp: Path) -> dict:
    """Pretrain application ``name`` headless on digits 0-4 at its smallest input, then probe and
    fine-tune it on ``args.app_shots`` images per class of digits 5-9; seconds of each part and in all."""
    begin = time.perf_counter()
    source, target = (s.map_images(lambda images: application_images(images, name)) for s in (source, target))
    side = input_size(name)
    start = time.perf_counter()
    backbone = APPLICATIONS.get(name).builder(include_top=False, weights=None, input_shape=(side, side, 3))
    model = transfer.build_transfer_model(backbone, 5, pooling="flatten")
    trainer, state = pretrain(model, source, args.app_pretrain_epochs, 1e-3)
    moving_acc = trainer.evaluate(state, source.test)["accuracy"]
    variables = recalibrated(backbone, jax.device_get(state.variables), source.train.images)
    source_acc = trainer.evaluate(trainer.with_variables(state, variables), source.test)["accuracy"]
    entry = pretrained.save_backbone(backbone, variables, tmp / name, info={"application": name})
    row = {"input": side, "params": backbone.count_params(), "source_test_accuracy": source_acc,
           "source_test_accuracy_moving_stats": moving_acc, "pretrain_seconds": time.perf_counter() - start}
    print(f"{name}: pretrained at {side}x{side} in {row['pretrain_seconds']:.0f} s, digits 0-4 test accuracy "
          f"{source_acc:.4f} (before recalibrating BatchNormalization: {moving_acc:.4f})", flush=True)
    # the same probe on the source task: do the features separate the classes they were trained on?
    row["source_linear_probe"] = run_one("linear_probe", entry, source, args.app_shots, "none", args.app_steps, 0)
    for method in METHODS[1:]:
        start = time.perf_counter()
        row[method] = [run_one(method, entry, target, args.app_shots, "none", args.app_steps, seed)
                       for seed in range(args.app_seeds)]
        row[f"{method}_seconds"] = time.perf_counter() - start
        print(f"{name} {method}: {common.mean_std(row[method])} in {row[f'{method}_seconds']:.0f} s", flush=True)
    row["seconds"] = time.perf_counter() - begin
    return row


def main(argv: list[str] | None = None) -> dict:
    args = common.parse(NAME, __doc__, argv, add)
    if args.quick:
        vars(args).update(QUICK)
    with tempfile.TemporaryDirectory() as tmp, common.compilation_cache(Path(tmp) / "xla"):
        tmp = Path(tmp)
        source, target = data(0, args.data_dir)
        results = cnn_rows(args, rescaled(source), rescaled(target), tmp)
        results["applications"] = {name: application_row(name, args, source, target, tmp)
                                   for name in args.applications}
    results.update({"seeds": args.seeds, "steps": args.steps, "pretrain_epochs": args.pretrain_epochs,
                    "shots": list(args.shots), "augmentation": list(args.augmentation),
                    "test_examples": len(target.test), "app_shots": args.app_shots,
                    "app_steps": args.app_steps, "app_seeds": args.app_seeds,
                    "app_pretrain_epochs": args.app_pretrain_epochs})
    plot(results, common.png(args))
    return common.write(args, results, tables(results))


def tables(r: dict) -> str:
    def cells(key: str) -> list[str]:
        return [common.mean_std(r["results"][f"{m}|{key}"]) for m in METHODS]

    rows = [[shots, "yes" if aug == "aug" else "no", *cells(f"{shots}|{aug}")]
            for shots in r["shots"] for aug in r["augmentation"]]
    cnn = common.markdown(["images/class", "augmentation", *METHODS], rows, "rlrrr")
    text = (f"Test accuracy on digits 5-9 ({r['test_examples']} test images), mean ± std over {r['seeds']} seeds, "
            f"{r['steps']} optimizer steps per run; backbone pretrained on digits 0-4 for {r['pretrain_epochs']} "
            f"epochs (test accuracy on digits 0-4: {r['source_test_accuracy']:.3f}).\n\n{cnn}\n")
    if r["applications"]:
        rows = [[name, f"{a['input']}x{a['input']}", f"{a['params']:,}",
                 f"{a['source_test_accuracy']:.3f} ({a['source_test_accuracy_moving_stats']:.3f})",
                 f"{a['source_linear_probe']:.3f}", common.mean_std(a["linear_probe"]), common.mean_std(a["fine_tune"]),
                 *[f"{a[f'{part}seconds']:.0f}" for part in ("pretrain_", "linear_probe_", "fine_tune_", "")]]
                for name, a in r["applications"].items()]
        if f"scratch|{r['app_shots']}|none" in r["results"]:
            rows.append([f"the CNN above ({r['steps']} steps, {r['seeds']} seeds)", "8x8", "",
                         f"{r['source_test_accuracy']:.3f}", "", *cells(f"{r['app_shots']}|none")[1:], "", "", "", ""])
        apps = common.markdown(["backbone", "input", "parameters", "digits 0-4 test acc (before recalibration)",
                                "linear_probe on digits 0-4", "linear_probe", "fine_tune", "pretrain s",
                                "linear_probe s", "fine_tune s", "total s"], rows)
        text += (f"\nKeras applications, pretrained headless from random weights on digits 0-4 for "
                 f"{r['app_pretrain_epochs']} epochs (batch 32), BatchNormalization statistics then recomputed "
                 f"on the training images; digits 5-9 with {r['app_shots']} images per class, {r['app_steps']} "
                 f"optimizer steps, mean ± std over {r['app_seeds']} seed(s); the linear probe on digits 0-4 uses the "
                 f"same images per class and steps (and compiles the program the linear probe on digits 5-9 "
                 f"reuses); seconds include compilation:\n\n{apps}\n")
    return text


def plot(r: dict, path: Path) -> None:
    plt = common.pyplot()
    shots = r["shots"]
    fig, axes = plt.subplots(1, len(r["augmentation"]), figsize=(5 * len(r["augmentation"]) + 2.6, 3.8), sharey=True,
                             squeeze=False)
    axes = axes[0]
    for ax, aug in zip(axes, r["augmentation"]):
        for method in METHODS:
            values = [r["results"][f"{method}|{s}|{aug}"] for s in shots]
            ax.errorbar(shots, np.mean(values, 1), yerr=np.std(values, 1), marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.set_xlabel("training images per class")
        ax.set_title("with augmentation" if aug == "aug" else "without augmentation")
    for i, (name, a) in enumerate(r["applications"].items()):
        for method, marker in (("linear_probe", "s"), ("fine_tune", "D")):
            axes[0].scatter([r["app_shots"] * (1.04 + 0.04 * i)], [np.mean(a[method])], marker=marker,
                            color=f"C{3 + i}", label=f"{name} {method}")
    axes[0].set_ylabel("test accuracy (digits 5-9)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")  # beside the plots: the markers fill them
    common.save_figure(fig, path, axes, rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))


if __name__ == "__main__":
    main()
