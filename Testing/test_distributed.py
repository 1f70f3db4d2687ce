"""Training on several processes: a real ``torchrun`` with 2 CPU processes (gloo) against 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from monai.losses import DiceCELoss

from rtdeep.training.distributed import DistContext, shard, share_of_batch
from rtdeep.training.trainer import partial_label_loss

# Each rank lists its threads after close_distributed: leaving the group must end gloo's threads while
# Python runs (a thread left over can abort the process at exit: "terminate called without an active
# exception", seen about once in 5 runs under load before init_distributed imported torch.distributed.nn
# ahead of the group).
# gloo's TCP loop thread may finish exiting a moment after the group is destroyed (seen once in CI:
# rank 1 listed "gloo_tcp_loop" right after close_distributed), so the listing waits up to 10 s for
# gloo's threads to end; one still there after that is a thread that outlives the group.
GLOO_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop")
RECORD_THREADS = f"GLOO_THREADS = {GLOO_THREADS!r}\n" + textwrap.dedent('''
    import json, os, time

    def record_threads(out, rank):
        def names():
            found = []
            for task in os.listdir("/proc/self/task"):
                try:
                    found.append(open(f"/proc/self/task/{task}/comm").read().strip())
                except FileNotFoundError:  # the thread ended between the listing and the read
                    pass
            return sorted(found)

        deadline = time.monotonic() + 10.0
        while any(name in GLOO_THREADS for name in names()) and time.monotonic() < deadline:
            time.sleep(0.05)
        (out / f"threads_after_close_rank{rank}.json").write_text(json.dumps(names()))
''')


def _gloo_threads_left(out) -> dict[str, list[str]]:
    listed = {path.name: json.loads(path.read_text()) for path in sorted(out.glob("threads_after_close_rank*.json"))}
    assert len(listed) == 2, listed
    return {name: [thread for thread in threads if thread in GLOO_THREADS] for name, threads in listed.items()}


# A tiny run: 3 synthetic cases (one without a heart), a 2-level 3D U-Net, 2 epochs of 3 iterations.
SCRIPT = RECORD_THREADS + textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import numpy as np, torch
    from rtdeep.models import build_network
    from rtdeep.models.architectures import ArchSpec
    from rtdeep.sites import get_site
    from rtdeep.training.data import SegCase
    from rtdeep.training.distributed import close_distributed, init_distributed
    from rtdeep.training.trainer import TrainConfig, train_segmentation

    out = Path(sys.argv[1])
    context = init_distributed("cpu")
    site = get_site("thorax")
    rng = np.random.default_rng(0)
    cases = []
    for n in range(3):
        labels = np.zeros((16, 32, 32), np.uint8)
        for value in range(1, 6):
            labels[2 * value:2 * value + 3, 4 * value:4 * value + 6, 5:25] = value
        present = np.ones(5, bool)
        if n == 2:
            present[2] = False
            labels[labels == 3] = 0
        image = (labels * 0.15 + rng.normal(0, 0.05, labels.shape)).astype(np.float32)
        cases.append(SegCase(f"c{n}", image, labels, np.eye(4), present))
    arch = ArchSpec("tiny", "tiny", 3, (16, 16, 16), 2, (4, 8))
    config = TrainConfig(site="thorax", arch="tiny", seed=0, time_budget_s=600, max_epochs=2,
                         iterations_per_epoch=3, device="cpu", threads=1)
    result = train_segmentation(config, site, arch, cases, [], out / f"rank{context.rank}", context=context)
    if context.is_main:
        probe = torch.from_numpy(np.random.default_rng(1).random((1, 1, 16, 32, 32), np.float32))
        with torch.no_grad():
            probabilities = torch.softmax(result.network(probe), 1).numpy()
        np.save(out / "probabilities.npy", probabilities)
        (out / "losses.json").write_text(json.dumps([h["train_loss"] for h in result.history]))
    close_distributed()
    record_threads(out, context.rank)
''')


def _run(tmp_path, name: str, processes: int, source: str = SCRIPT):
    script = tmp_path / "train_tiny.py"
    script.write_text(source)
    out = tmp_path / name
    out.mkdir()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = (launcher if processes > 1 else [sys.executable]) + [str(script), str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out


def test_two_gloo_processes_agree_with_one(tmp_path):
    import numpy as np

    one = _run(tmp_path, "one", 1)
    two = _run(tmp_path, "two", 2)
    losses_one = json.loads((one / "losses.json").read_text())
    losses_two = json.loads((two / "losses.json").read_text())
    assert len(losses_one) == len(losses_two) == 2
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-4)
    # the trained networks predict the same (conv biases before instance norm may drift; they do not matter)
    difference = np.abs(np.load(two / "probabilities.npy") - np.load(one / "probabilities.npy")).max()
    assert difference < 1e-3
    # only rank 0 wrote: its checkpoint and history exist, rank 1 made no folder
    assert sorted(p.name for p in (two / "rank0").iterdir()) == ["best_model.pt", "checkpoint.pt", "history.json"]
    assert not (two / "rank1").exists()
    assert _gloo_threads_left(two) == {"threads_after_close_rank0.json": [], "threads_after_close_rank1.json": []}


def test_partial_label_loss_is_dice_ce_when_every_organ_is_present():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 6, 8, 8, 8), torch.randint(0, 6, (2, 1, 8, 8, 8))
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    present = torch.ones(2, 6, dtype=torch.bool)
    assert torch.isclose(partial_label_loss(loss, logits, labels, present), loss(logits, labels))


def test_absent_organ_is_not_taught_as_background():
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    labels = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    labels[..., :2] = 1
    says_organ_2 = torch.full((1, 3, 4, 4, 4), -10.0)
    says_organ_2[:, 1][labels[:, 0] == 1] = 10.0
    says_organ_2[:, 2][labels[:, 0] == 0] = 10.0  # organ 2 predicted where the reference has background
    says_background = says_organ_2.clone()
    says_background[:, 0], says_background[:, 2] = says_organ_2[:, 2], -10.0
    absent = torch.tensor([[True, True, False]])
    # the study lacks organ 2: predicting it there costs nothing more than predicting background
    assert torch.isclose(partial_label_loss(loss, says_organ_2, labels, absent),
                         partial_label_loss(loss, says_background, labels, absent), atol=1e-4)
    # when organ 2 is delineated (and absent there), predicting it is penalised
    assert partial_label_loss(loss, says_organ_2, labels, torch.ones(1, 3, dtype=torch.bool)) > 1.0
    # a batch split over processes gives the loss of the whole batch
    logits = torch.randn(2, 3, 4, 4, 4)
    both = torch.cat([labels, labels])
    present = torch.tensor([[True, True, True], [True, True, False]])
    whole = partial_label_loss(loss, logits, both, present)
    halves = [partial_label_loss(loss, logits[i:i + 1], both[i:i + 1], present[i:i + 1]) for i in range(2)]
    assert torch.isclose(whole, (halves[0] + halves[1]) / 2, atol=1e-6)


def test_shards_and_batch_shares():
    assert shard(list(range(10)), DistContext(rank=1, world_size=3)) == [1, 4, 7]
    assert share_of_batch(8, DistContext(rank=1, world_size=2)) == slice(4, 8)
    with pytest.raises(ValueError, match="multiple"):
        share_of_batch(2, DistContext(rank=0, world_size=3))


# The pneumonitis classifier on 20 synthetic patients (16 train, 4 test) of 16^3 crops, 3 epochs with
# augmentation and dropout; batches of 5 of the 12 fitting patients, so the shares are unequal (3 + 2, 1 + 1).
PNEUMONITIS_SCRIPT = RECORD_THREADS + textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import numpy as np
    from rtdeep.pneumonitis.dataset import CaseRecord
    from rtdeep.pneumonitis.run import evaluate_and_write
    from rtdeep.pneumonitis.train import TrainConfig
    from rtdeep.training.distributed import close_distributed, init_distributed

    out = Path(sys.argv[1])
    context = init_distributed("cpu")
    rng = np.random.default_rng(0)
    records = []
    for k in range(20):
        label = k % 2
        mask = np.zeros((16, 16, 16), np.float32)
        mask[3:13, 3:13, 3:13] = 1
        ct = rng.normal(0.0, 0.3, mask.shape) + mask * rng.uniform(0.0, 0.5) + 0.6 * label * mask
        dose = mask * rng.uniform(0.5, 1.0)
        mld = float(rng.uniform(8, 20))
        figures = {"mld_gy": mld, "v5_pct": 3 * mld, "v20_pct": 1.5 * mld, "ntcp_lkb": mld / 100,
                   "ntcp_logistic_mld": mld / 80, "lung_volume_cc": 3000.0}
        inputs = np.stack([ct, dose, mask]).astype(np.float16)
        records.append(CaseRecord(f"P{k}", label, figures, {"lung-dose20": inputs}, {"lung-dose20": 100.0},
                                  {"lung-dose20": 0.0}, "synthetic"))
    config = TrainConfig(epochs=3, batch_size=5, features=(4, 8, 8, 8), calibration_fraction=0.25)
    result = evaluate_and_write(records[:16], records[16:], "lung-dose20", out / f"rank{context.rank}",
                                config=config, context=context)
    if context.is_main:
        history = result.experiment.training.history
        (out / "result.json").write_text(json.dumps({
            "train_losses": [row["train_loss"] for row in history],
            "calibration_losses": [row["calibration_loss"] for row in history],
            "test_probabilities": result.experiment.cnn.test_probabilities.tolist()}))
    close_distributed()
    record_threads(out, context.rank)
''')


def test_pneumonitis_classifier_on_two_gloo_processes_agrees_with_one(tmp_path):
    """DDP with the global batch's batch-norm statistics and dropout mask: 1 and 2 processes follow one
    trajectory, and only rank 0 writes."""
    import numpy as np

    one = _run(tmp_path, "one", 1, PNEUMONITIS_SCRIPT)
    two = _run(tmp_path, "two", 2, PNEUMONITIS_SCRIPT)
    result_one = json.loads((one / "result.json").read_text())
    result_two = json.loads((two / "result.json").read_text())
    assert len(result_one["train_losses"]) == 3
    for key in ("train_losses", "calibration_losses"):
        np.testing.assert_allclose(result_two[key], result_one[key], rtol=1e-4)
    np.testing.assert_allclose(result_two["test_probabilities"], result_one["test_probabilities"], atol=1e-4)
    # only rank 0 wrote the result files; rank 1 made no folder
    written = ["metrics.json", "predictions.csv", "reliability.png", "report.txt"]
    assert sorted(p.name for p in (two / "rank0").iterdir()) == written
    assert not (two / "rank1").exists()
    assert _gloo_threads_left(two) == {"threads_after_close_rank0.json": [], "threads_after_close_rank1.json": []}
