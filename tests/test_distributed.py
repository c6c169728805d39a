"""Training across processes on JAX's own runtime (``fx.initialize_distributed``): two local processes
with two CPU devices each, collectives through gloo, give what one process with four devices gives, and
a two-process run saved, ended (killed, or preempted by a SIGTERM to one process) and restarted
continues bit-exactly."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runs_support import device_flags

WORKER = str(Path(__file__).resolve().parent / "distributed_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(mode: str, checkpoints: Path, processes: int, devices: int) -> list[dict]:
    """``processes`` workers with ``devices`` CPU devices each; their RESULT dicts."""
    return run_workers([WORKER, mode, str(checkpoints)], processes, devices)


def run_workers(argv: list[str], processes: int, devices: int) -> list[dict]:
    """``python ARGV`` in ``processes`` processes of ``devices`` CPU devices each, joined as one JAX job;
    the RESULT dict each prints last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k.startswith("JAX_COMPILATION")}
    env["XLA_FLAGS"] = device_flags(devices)
    port = free_port()
    procs = []
    for i in range(processes):
        cluster = ({"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(processes),
                    "JAX_PROCESS_ID": str(i)} if processes > 1 else {})
        procs.append(subprocess.Popen([sys.executable, *argv], env={**env, **cluster},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1].removeprefix("RESULT ")))
    return results


def test_two_processes_train_as_one_process_with_all_the_devices(tmp_path):
    alone, = run("straight", tmp_path / "a", processes=1, devices=4)
    together = run("straight", tmp_path / "b", processes=2, devices=2)
    assert not alone["joined"] and alone["devices"] == 4
    for r in together:
        assert r["joined"] and (r["processes"], r["devices"]) == (2, 4)
        for key, values in alone["history"].items():
            np.testing.assert_allclose(r["history"][key], values, rtol=1e-6, err_msg=key)
        for a, b in zip(r["params"], alone["params"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for key, value in alone["evaluate"].items():
            np.testing.assert_allclose(r["evaluate"][key], value, rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(r["predict"], alone["predict"], rtol=1e-5, atol=1e-6)
    assert together[0] == together[1]                                   # every process holds the same result


@pytest.mark.slow  # the library's side of what the command-line test below checks in the default suite
def test_a_two_process_run_restarted_from_its_checkpoint_continues_bit_exactly(tmp_path):
    straight = run("straight", tmp_path / "s", processes=2, devices=2)[0]
    run("first", tmp_path / "ck", processes=2, devices=2)                # saved collectively, then ended
    assert (tmp_path / "ck" / "1").is_dir()
    resumed = run("resume", tmp_path / "ck", processes=2, devices=2)[0]
    assert resumed["history"]["loss"] == straight["history"]["loss"][1:]
    assert resumed["params"] == straight["params"] and resumed["evaluate"] == straight["evaluate"]


def cli_pair(args: list[str], crash_at: str | None = None, crashing: tuple[int, ...] = (0, 1)) -> list:
    """``fluxnet ARGS`` in two processes of two CPU devices each (``crash_at`` fires in the ``crashing``
    ones); their return codes and last lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k.startswith("JAX_COMPILATION")}
    env = {k: v for k, v in env.items() if k != "FLUXNET_CRASH_AT"}
    env["XLA_FLAGS"] = device_flags(2)
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "fluxnet.cli", *args],
                              env={**env, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": str(i), **({"FLUXNET_CRASH_AT": crash_at}
                                                                if crash_at and i in crashing else {})},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        out.append((proc.returncode, stdout.strip().splitlines()[-1] if stdout.strip() else stderr[-3000:]))
    return out


def test_the_command_line_trains_one_run_directory_from_two_processes_and_resumes_it(tmp_path, digits_tfds_dir):
    mlp = str(Path(__file__).resolve().parent.parent / "configs" / "digits_mlp.py")

    def args(workdir):
        return ["train", mlp, f"data.data_dir={digits_tfds_dir}", "train.epochs=3", "model.mlp.units=(16,)",
                "--workdir", str(workdir), "--quiet"]

    straight = cli_pair(args(tmp_path / "straight"))
    assert [code for code, _ in straight] == [0, 0], straight
    assert straight[0][1] == straight[1][1]                             # the same test metrics in both
    # a preemption notice to one host: SIGTERM to process 1 only, halfway through epoch 1; JAX's
    # preemption service makes both stop at the step it agrees on (the notice takes a moment to spread,
    # so in epoch 1 or 2), exit 143 and keep the epochs completed before it
    workdir = tmp_path / "run"
    stopped = cli_pair(args(workdir), crash_at="sigterm:1", crashing=(1,))
    assert [code for code, _ in stopped] == [143, 143], stopped
    logged = workdir / "metrics.jsonl"
    assert not logged.exists() or len(logged.read_text().splitlines()) < 3
    killed = cli_pair(args(workdir), crash_at="epoch:3")                # then SIGKILL halfway through epoch 3
    assert [code for code, _ in killed] == [-9, -9], killed
    resumed = cli_pair(args(workdir))
    assert [code for code, _ in resumed] == [0, 0], resumed
    assert resumed[0][1] == straight[0][1]                              # bit-exact: the same test metrics
    for run in (tmp_path / "straight", workdir):
        epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]                                      # written once, by process 0
        assert not list(run.glob(".*.tmp")) and (run / "checkpoints" / "3").is_dir()
    logged = [(tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in ("straight", "run")]
    assert logged[0] == logged[1]
