"""The command a TrainJob runs on each node, run here as two "nodes" (two torchrun launchers on loopback, one
CPU process each, gloo) with the PET_* variables Kubeflow Trainer's torch plugin sets: they rendezvous, train
together, and only rank 0 writes the model and the report, on the directory both "nodes" share."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from components.common import trainjob as T
from components.common.cluster import ENV, Cluster
from tests import testing

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_train_as_one_world_and_rank0_alone_writes(tmp_path: Path) -> None:
    tiny = testing.tiny_model(tmp_path / "tiny", dropout=0.0)
    texts, labels, facets = testing.synthetic_reviews(96, seed=5)
    frame = testing.features(texts, labels, 32, facets=facets).assign(split=["train"] * 64 + ["validation"] * 32)
    frame.to_parquet(tmp_path / "features.parquet")
    shared = tmp_path / "shared"
    argv = ["--features", str(tmp_path / "features.parquet"), "--base-model", str(tiny), "--no-mlflow", "--use-cpu"]
    argv += ["--max-steps", "4", "--per-device-train-batch-size", "8", "--max-seq-length", "32", "--save-steps", "2"]
    argv += ["--output-dir", str(shared / "train"), "--model-dir", str(shared / "model")]
    argv += ["--report", str(shared / "training_report.json")]
    placement = Cluster(
        image="registry.example/train:1",
        gpu={"accelerator_type": "nvidia.com/gpu", "accelerator_count": 1, "nodes": 2},
        trainjob={"shared_pvc": "shared", "mount_path": str(shared)},
    )
    command = T.render_trainjob(placement, argv, name="two", namespace="ns")["spec"]["trainer"]["command"]
    assert command[0] == "python"
    port = _free_port()
    logs, launchers = [], []
    for rank in (0, 1):
        # What the runtime's torch plugin sets on each node (PET_NPROC_PER_NODE: 1 here, not the GPU count)
        env = os.environ | {
            "PET_NNODES": "2",
            "PET_NPROC_PER_NODE": "1",
            "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(port),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT),
        }
        env.pop(ENV, None)
        log = (tmp_path / f"node{rank}.log").open("w")
        logs.append(log)
        launchers.append(
            subprocess.Popen([sys.executable, *command[1:]], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        )
    codes = [p.wait(timeout=540) for p in launchers]
    for log in logs:
        log.close()
    texts = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], texts
    report = json.loads((shared / "training_report.json").read_text())
    assert report["world_size"] == 2 and report["global_step"] == 4
    assert (shared / "model" / "model.safetensors").is_file()
    assert (shared / "train").is_dir()  # checkpoints went to the shared directory
    assert "process group has NOT been destroyed" not in "".join(texts)
