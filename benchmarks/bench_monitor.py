"""What ExplanationMonitor costs a training run: seconds per epoch with and without it.

    python benchmarks/bench_monitor.py [--device cpu|cuda] [--quick] [--out PATH]

The MNIST CNN (torchexplain.zoo.MnistCNN) trains on the bundled 4,000 training
digits (batch 64, Adam: 63 steps an epoch) twice from the same seed: once plain
(the floor) and once calling ``monitor.step`` after every step with
``every_n_steps=100`` (IG, 50 steps, on 8 probe test digits, writing its JSON-lines
log and PNG grid at each record, as a user would). The two runs advance one step
at a time in turn, each with its own RNG stream (dropout), so load on a shared
machine hits both alike and they must end with identical weights (checked).

Per epoch = 63 x the median step (for the monitored run: the median of its steps
without a record) + (63 / 100) x the median record (explain, log line, PNG), so a
few slow steps on a busy machine do not decide the figure. Raw per-step times
and the plain ratio of totals are kept in the JSON.

There is no peer: Captum and Alibi have no training-loop monitor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from _common import metadata, print_table, sync, write_results  # noqa: E402

from torchexplain import ExplanationMonitor, IntegratedGradients  # noqa: E402
from torchexplain.datasets import load_mnist  # noqa: E402
from torchexplain.zoo import MnistCNN  # noqa: E402

BATCH_SIZE = 64
EVERY_N_STEPS = 100
PROBE_SIZE = 8
IG_STEPS = 50
#: --quick trains on the first 640 digits (10 steps an epoch, a record at step 0):
#: a smoke run; its per-epoch figure uses the full run's record rate all the same.
QUICK_TRAIN = 640


class Run:
    """One training run, advanced a step at a time (its own model, optimizer, RNG stream, step count)."""

    def __init__(self, images, labels, device, monitor: ExplanationMonitor | None) -> None:
        torch.manual_seed(0)
        self.model = MnistCNN().to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.images, self.labels, self.device = images, labels, device
        self.monitor = monitor
        self.global_step = 0
        self.step_s: list[float] = []  # steps without a record
        self.record_s: list[float] = []  # whole steps that recorded
        self.order_generator = torch.Generator().manual_seed(0)
        self.order = torch.empty(0, dtype=torch.long)
        # Dropout draws from the global stream; each run keeps its own copy of it, so
        # the two runs see the same masks however their steps interleave.
        self.cuda_devices = [device.index or 0] if device.type == "cuda" else []
        self.rng_states = self._get_states()

    def _get_states(self):
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.cuda_devices]

    def step(self) -> None:
        steps_per_epoch = -(-self.images.shape[0] // BATCH_SIZE)
        position = self.global_step % steps_per_epoch
        if position == 0:
            self.order = torch.randperm(self.images.shape[0], generator=self.order_generator)
        batch = self.order[position * BATCH_SIZE : (position + 1) * BATCH_SIZE]
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.rng_states[0])
            for d, state in zip(self.cuda_devices, self.rng_states[1], strict=True):
                torch.cuda.set_rng_state(state, d)
            sync(self.device)
            start = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.images[batch]), self.labels[batch])
            loss.backward()
            self.optimizer.step()
            recorded = (
                self.monitor is not None
                and self.monitor.step(self.model, self.global_step) is not None
            )
            sync(self.device)
            (self.record_s if recorded else self.step_s).append(time.perf_counter() - start)
            self.rng_states = self._get_states()
        self.global_step += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--quick", action="store_true", help="10-step epochs (640 digits), 1 per run"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per run (default 4, quick 1)"
    )
    parser.add_argument(
        "--out", default=None, help="JSON file or folder (default benchmarks/results/)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    epochs = args.epochs or (1 if args.quick else 4)

    train, test = load_mnist("train"), load_mnist("test")
    n_train = QUICK_TRAIN if args.quick else train.images.shape[0]
    images, labels = train.images[:n_train].to(device), train.labels[:n_train].to(device)
    probe = test.images[:PROBE_SIZE]
    steps_per_epoch = -(-images.shape[0] // BATCH_SIZE)
    with tempfile.TemporaryDirectory() as log_dir:
        monitor = ExplanationMonitor(
            IntegratedGradients(None, n_steps=IG_STEPS),
            probe,
            every_n_steps=EVERY_N_STEPS,
            out_dir=log_dir,
        )
        plain = Run(images, labels, device, None)
        monitored = Run(images, labels, device, monitor)
        # Warm-up on throwaway runs (thread pools, allocator, the first IG call).
        warm = Run(
            images,
            labels,
            device,
            ExplanationMonitor(IntegratedGradients(None, n_steps=IG_STEPS), probe, every_n_steps=2),
        )
        for _ in range(3):
            warm.step()
        start = time.perf_counter()
        for _ in range(epochs * steps_per_epoch):
            plain.step()
            monitored.step()
        wall_s = time.perf_counter() - start
        for a, b in zip(plain.model.parameters(), monitored.model.parameters(), strict=True):
            if not torch.equal(a, b):
                raise RuntimeError(
                    "the monitor changed the training: weights differ from the plain run"
                )
    record_s = monitored.record_s
    records_per_epoch = steps_per_epoch / EVERY_N_STEPS
    plain_epoch = steps_per_epoch * statistics.median(plain.step_s)
    monitored_epoch = steps_per_epoch * statistics.median(
        monitored.step_s
    ) + records_per_epoch * statistics.median(record_s)
    total_plain, total_monitored = sum(plain.step_s), sum(monitored.step_s) + sum(record_s)
    print(
        f"{epochs} epochs of {steps_per_epoch} steps each, interleaved, in {wall_s:.1f} s; "
        f"{len(record_s)} records",
        flush=True,
    )
    config = (
        f"mnist_cnn train={images.shape[0]} bs={BATCH_SIZE} every_n_steps={EVERY_N_STEPS} "
        f"probe={PROBE_SIZE} ig_steps={IG_STEPS}"
    )
    row = {
        "method": "monitor",
        "config": config,
        "sizes": {
            "train": int(images.shape[0]),
            "batch_size": BATCH_SIZE,
            "steps_per_epoch": steps_per_epoch,
            "epochs": epochs,
            "probe": PROBE_SIZE,
            "ig_steps": IG_STEPS,
        },
        "providers": {
            # median_s: seconds per epoch, built from medians (see the module docs).
            "torchexplain": {
                "median_s": monitored_epoch,
                "step_s_median": statistics.median(monitored.step_s),
                "step_s": monitored.step_s,
            },
            "floor": {
                "median_s": plain_epoch,
                "step_s_median": statistics.median(plain.step_s),
                "step_s": plain.step_s,
            },
        },
        "records": len(record_s),
        "record_s": record_s,
        "record_s_median": statistics.median(record_s),
        "records_per_epoch": records_per_epoch,
        "ratio_vs_floor": monitored_epoch / plain_epoch,
        "overhead_per_epoch_s": monitored_epoch - plain_epoch,
        "ratio_of_totals": total_monitored / total_plain,
        "weights_identical": True,
    }
    print_table(
        [
            {
                "config": config,
                "plain_s/epoch": plain_epoch,
                "monitor_s/epoch": monitored_epoch,
                "x_floor": row["ratio_vs_floor"],
                "records": len(record_s),
                "s/record": row["record_s_median"],
            }
        ],
        ["config", "plain_s/epoch", "monitor_s/epoch", "x_floor", "records", "s/record"],
    )
    meta = metadata(
        device,
        benchmark="bench_monitor",
        quick=args.quick,
        epochs=epochs,
        timing="seconds per epoch = steps_per_epoch x median step (+ steps_per_epoch / every_n_steps "
        "x median record step for the monitored run); the two runs' steps interleaved",
    )
    path = write_results(
        f"bench_monitor{'-quick' if args.quick else ''}", {"meta": meta, "results": [row]}, args.out
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
