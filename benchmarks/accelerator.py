"""Accelerator throughput: a ResNet trained with ``fx.Trainer`` on random in-memory data, in float32 and
``mixed_bfloat16`` (``--dtype-policies``).

On whatever device jax sees first (a GPU when there is one), for each ``--batch-sizes`` entry:

* compile s: tracing, lowering and XLA compilation of the Trainer's train step
  (``trainer.train_step.lower(state, batch).compile()``; the jitted step then reuses that executable);
* step ms: the median over ``--steps`` steps, each waited for, after ``--warmup`` steps, of the train
  step on a batch already on the device (images/s of the step = batch / step time);
* fit img/s: one ``Trainer.fit`` epoch of ``--fit-steps`` steps, after a warm-up epoch: the
  end-to-end figure, with the Trainer's host batching and prefetching;
* GFLOP/step: XLA's cost analysis of the compiled step (``compiled.cost_analysis()["flops"]``), next
  to that of the unoptimised module (``lowered.cost_analysis()``: XLA:GPU's compiled count has been
  wrong or -1 in some versions; a warning is printed where the two differ by more than 1.5x); TFLOP/s =
  the compiled count (else the unoptimised one) / step time, and its fraction of the device's peak.

The peak: ``--peak-tflops``, else a dense (no sparsity) figure of NVIDIA's datasheets for the GPU named
by ``jax.devices()[0].device_kind`` (``PEAK_TFLOPS``). float32 convolutions and matmuls run on TF32
tensor cores at JAX's default precision on Ampere and later GPUs, so that is the peak used for them;
with ``JAX_DEFAULT_MATMUL_PRECISION=highest`` (or ``float32``) the float32 (non-tensor-core) one, with
``bfloat16`` the bf16 one. The model is
``fluxnet.models.builders.resnet``: by default ResNet-18's layout for 32x32 images (3x3 stem, no
max-pool; stages 64-128-256-512, two basic blocks each, 11.2M parameters), 10 classes.

    python benchmarks/accelerator.py                          # batch 64, 128, 256
    python benchmarks/accelerator.py --batch-sizes 256,512 --peak-tflops 494.7
    python benchmarks/accelerator.py --quick                  # tiny sizes: a CPU check that it runs

Each dtype policy (``fluxnet.dtype_policies``) gets its own model and rows; 16-bit policies are measured
against the device's bf16 peak.
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time

import jax
import numpy as np

import fluxnet as fx
from fluxnet import dtype_policies
from fluxnet.models.builders import build_model
from fluxnet.train import sharding

NUM_CLASSES = 10

# Dense peak TFLOP/s (no structured sparsity) from NVIDIA's datasheets, by a pattern of the device kind
# (first match wins): bf16 and TF32 on tensor cores, float32 without. None: no such unit.
PEAK_TFLOPS = (
    (r"GH200", {"bf16": 989.4, "tf32": 494.7, "fp32": 67.0}),
    (r"H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 67.0}),          # SXM
    (r"H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    (r"H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 67.0}),          # SXM ("NVIDIA H100 80GB HBM3")
    (r"A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", {"bf16": 366.0, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL4\b", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
)


def known_peaks(device_kind: str) -> dict | None:
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_kind):
            return peaks
    return None


def float32_peak(args, device) -> tuple[float | None, str]:
    """The peak TFLOP/s the float32 runs are measured against, and where it comes from."""
    if args.peak_tflops is not None:
        return args.peak_tflops, "given by --peak-tflops"
    peaks = known_peaks(device.device_kind)
    if peaks is None:
        return None, f"unknown for {device.device_kind!r}: pass --peak-tflops"
    known = ", ".join(f"{k} {v:g}" for k, v in peaks.items() if v is not None)
    precision = str(getattr(jax.config, "jax_default_matmul_precision", None) or "default").lower()
    unit = ("fp32" if precision in ("highest", "float32", "f32_f32_f32") else
            "bf16" if precision in ("bfloat16", "bf16_bf16_f32", "bf16_bf16_bf16") else "tf32")
    if peaks.get(unit) is None:
        unit = "fp32"
    why = ("float32 convolutions and matmuls use TF32 tensor cores at JAX's default precision"
           if unit == "tf32" and precision == "default" else f"jax_default_matmul_precision={precision}")
    return peaks[unit], f"{device.device_kind}: dense {unit} ({why}); datasheet TFLOP/s: {known}"


def xla_flops(stage) -> float | None:
    """FLOPs by XLA's cost analysis of a ``Lowered`` or ``Compiled`` step (a dict; a list of one dict in
    older jax); None where there is none (some backends report -1)."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # a backend without cost analysis
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def mean_loss(metrics) -> float:
    """The step's mean loss from its metrics ({"loss": (sum, count), ...}); NaN in another layout."""
    try:
        total, count = metrics["loss"]
        return float(total) / float(count)
    except (KeyError, TypeError, ValueError):
        return float("nan")


def measure(args, trainer, state, batch_size: int, rng: np.random.Generator):
    """One batch size's row (a dict) and the state to carry on with."""
    n = batch_size * args.fit_steps
    x = rng.standard_normal((n, args.image_size, args.image_size, 3), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    # a batch as the Trainer's EpochIterator makes one: {"x", "y"} host arrays, left to the jitted step to
    # place on CPU devices, else placed on the batch sharding (as its Prefetcher does), so that fit runs
    # the executable compiled here
    batch = {"x": x[:batch_size], "y": y[:batch_size]}
    if not getattr(trainer.batches, "host_batches", all(d.platform == "cpu" for d in trainer.mesh.devices.flat)):
        batch = jax.device_put(batch, sharding.batch_sharded(trainer.mesh))

    start = time.perf_counter()
    lowered = trainer.train_step.lower(state, batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    # the compiled (optimised) module's count; XLA:GPU's has been unreliable in some versions, so the
    # unoptimised module's is kept to compare, and used where the compiled one has none
    compiled_flops, lowered_flops = xla_flops(compiled), xla_flops(lowered)
    flops = compiled_flops or lowered_flops

    for _ in range(args.warmup):
        state, metrics = trainer.train_step(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready(metrics)  # one execution: its outputs are ready together
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    loss = mean_loss(metrics)

    start = time.perf_counter()
    state, _ = trainer.fit(state, (x, y), epochs=1, batch_size=batch_size, verbose=0)  # warm-up epoch
    warm_fit_s = time.perf_counter() - start
    start = time.perf_counter()
    state, history = trainer.fit(state, (x, y), epochs=1, batch_size=batch_size, verbose=0)
    fit_s = time.perf_counter() - start
    row = {"batch": batch_size, "compile_s": compile_s, "step_ms": 1e3 * step_s,
           "step_ms_range": (1e3 * min(times), 1e3 * max(times)), "step_img_s": batch_size / step_s,
           "fit_img_s": n / fit_s, "flops": flops, "compiled_flops": compiled_flops, "lowered_flops": lowered_flops,
           "tflop_s": flops / step_s / 1e12 if flops else None,
           "loss": loss, "fit_loss": history.history["loss"][-1], "warm_fit_s": warm_fit_s, "fit_s": fit_s}
    return row, state


def number(value: float) -> str:
    return f"{value:,.2f}" if value >= 1 else f"{value:.3g}"


def table(rows: list[dict]) -> str:
    lines = ["| policy | batch | compile s | step ms (median; min-max) | img/s (step) | img/s (fit) "
             "| GFLOP/step (XLA compiled; unoptimised) | TFLOP/s | % of peak |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def gflop(flops):
        return number(flops / 1e9) if flops else "n/a"

    for r in rows:
        tflops = number(r["tflop_s"]) if r["tflop_s"] else "n/a"
        frac = f"{100 * r['tflop_s'] / r['peak']:.1f}%" if r["tflop_s"] and r["peak"] else "n/a"
        lo, hi = r["step_ms_range"]
        lines.append(f"| {r['policy']} | {r['batch']} | {r['compile_s']:.2f} | {r['step_ms']:.2f} ({lo:.2f}-{hi:.2f}) "
                     f"| {r['step_img_s']:,.0f} | {r['fit_img_s']:,.0f} | {gflop(r['compiled_flops'])}; "
                     f"{gflop(r['lowered_flops'])} | {tflops} | {frac} |")
    return "\n".join(lines)


def policy_peak(args, device, policy: str, float32: tuple[float | None, str]) -> tuple[float | None, str]:
    """The peak a policy's rows are measured against: float32's, or the bf16 tensor-core one."""
    if dtype_policies.get(policy).compute_dtype == "float32" or args.peak_tflops is not None:
        return float32
    peaks = known_peaks(device.device_kind)
    if peaks is None or peaks.get("bf16") is None:
        return None, f"unknown bf16 peak for {device.device_kind!r}: pass --peak-tflops"
    return peaks["bf16"], f"{device.device_kind}: dense bf16"


def ints_arg(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sizes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=ints_arg, default=None, help="comma-separated (default 64,128,256)")
    p.add_argument("--image-size", type=int, default=None, help="square RGB images (default 32)")
    p.add_argument("--stages", type=ints_arg, default=None, help="filters per stage (default 64,128,256,512)")
    p.add_argument("--blocks-per-stage", type=int, default=None, help="basic blocks per stage (default 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per batch size (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after compiling (default 3)")
    p.add_argument("--fit-steps", type=int, default=None, help="steps of the timed fit epoch (default 20)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s for the fraction")
    p.add_argument("--dtype-policies", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                   default=["float32", "mixed_bfloat16"], help="comma-separated (default float32,mixed_bfloat16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (batch 8,16; 16x16 images; stages 8,16; 1 block; 5 steps): checks it runs")
    args = p.parse_args(argv)
    defaults = ({"batch_sizes": [8, 16], "image_size": 16, "stages": [8, 16], "blocks_per_stage": 1, "steps": 5,
                 "warmup": 1, "fit_steps": 4} if args.quick else
                {"batch_sizes": [64, 128, 256], "image_size": 32, "stages": [64, 128, 256, 512],
                 "blocks_per_stage": 2, "steps": 30, "warmup": 3, "fit_steps": 20})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("image_size", "blocks_per_stage", "steps", "warmup", "fit_steps"):
        if getattr(args, key) < (0 if key == "warmup" else 1):
            p.error(f"--{key.replace('_', '-')} must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    begin = time.perf_counter()
    device = jax.devices()[0]
    float32 = float32_peak(args, device)
    rng = np.random.default_rng(args.seed)
    print(f"jax {jax.__version__}, fluxnet {fx.__version__}, python {platform.python_version()}; "
          f"device: {device.platform} {device.device_kind!r} (1 of {jax.device_count()})", flush=True)
    rows, sources = [], {}
    for policy in args.dtype_policies:
        model = build_model("resnet", (args.image_size, args.image_size, 3), NUM_CLASSES, stages=tuple(args.stages),
                            blocks_per_stage=args.blocks_per_stage)
        model.dtype_policy = policy
        # one device: the table is per chip (the Trainer would otherwise shard each batch over all of them)
        trainer = fx.Trainer(model, loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True),
                             optimizer="adam", metrics=["accuracy"], devices=[device])
        state = trainer.init(jax.random.key(args.seed))
        peak, sources[policy] = policy_peak(args, device, policy, float32)
        print(f"model: fluxnet resnet, {args.image_size}x{args.image_size}x3 -> {NUM_CLASSES}, stages "
              f"{tuple(args.stages)} x {args.blocks_per_stage} basic blocks, {model.count_params():,} parameters; "
              f"adam; {policy}; random data", flush=True)
        for batch_size in args.batch_sizes:
            row, state = measure(args, trainer, state, batch_size, rng)
            rows.append({**row, "policy": policy, "peak": peak})
            print(f"  batch {batch_size}: compile {row['compile_s']:.1f} s, step {row['step_ms']:.2f} ms, fit epoch "
                  f"{row['warm_fit_s']:.2f} s (warm-up) / {row['fit_s']:.2f} s, loss {row['loss']:.3f} / "
                  f"{row['fit_loss']:.3f}", file=sys.stderr, flush=True)
    print()
    print(table(rows))
    for r in rows:
        if r["warm_fit_s"] - r["fit_s"] > 0.5 * r["compile_s"]:  # the first fit also compiles its state copies
            print(f"\nwarning: {r['policy']} batch {r['batch']}: the warm-up fit epoch took {r['warm_fit_s']:.1f} s "
                  f"against {r['fit_s']:.1f} s: fit seems to have compiled the train step again rather than run the "
                  "executable timed here.")
        counts = (r["compiled_flops"], r["lowered_flops"])
        if all(counts) and max(counts) > 1.5 * min(counts):
            print(f"\nwarning: {r['policy']} batch {r['batch']}: XLA's compiled FLOP count ({counts[0] / 1e9:,.2f} G) "
                  f"and the unoptimised module's ({counts[1] / 1e9:,.2f} G) differ by more than 1.5x; TFLOP/s uses "
                  "the compiled one.")
    for policy, source in sources.items():
        peak = next(r["peak"] for r in rows if r["policy"] == policy)
        print(f"\npeak for {policy}: {f'{peak:g} TFLOP/s' if peak else 'n/a'} ({source}).", end="")
    print(f"\nstep: {args.warmup} warm-up, median of {args.steps} timed; fit: one epoch of {args.fit_steps} steps "
          f"after a warm-up epoch. Total {time.perf_counter() - begin:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
