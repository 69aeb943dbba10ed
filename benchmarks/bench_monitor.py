"""What ExplanationMonitor costs a training run: seconds per epoch with and without it.

    python benchmarks/bench_monitor.py [--device cpu|cuda] [--quick] [--out PATH]

The MNIST CNN (torchexplain.zoo.MnistCNN) trains on the bundled 4,000 training
digits (batch 64, Adam: 63 steps an epoch) twice from the same seed, epochs of
the two runs interleaved so drift hits both alike: once plain (the floor) and once
calling ``monitor.step`` every step with ``every_n_steps=100`` (IG, 50 steps, on 8
probe test digits, writing its JSON-lines log and PNG grid each record, as a user
would). A record lands in some epochs and not in others, so the figure per epoch
is the total time over all epochs divided by their number, not a median. The
monitor's own seconds per record are reported beside it.

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
#: --quick trains on the first 1,280 digits (20 steps an epoch): a smoke run whose one
#: record (at step 0) costs the same as in the full run, over a much shorter epoch.
QUICK_TRAIN = 1280


class Run:
    """One training run that continues from epoch to epoch (its own model, optimizer, step count)."""

    def __init__(self, images, labels, device, monitor: ExplanationMonitor | None) -> None:
        torch.manual_seed(0)
        self.model = MnistCNN().to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.images, self.labels, self.device = images, labels, device
        self.monitor = monitor
        self.global_step = 0
        self.order = torch.Generator().manual_seed(0)
        # Dropout draws from the global stream; the two interleaved runs each keep their
        # own copy of it, so they see the same masks and must end with the same weights.
        self.cuda_devices = [device.index or 0] if device.type == "cuda" else []
        self.rng_states = self._get_states()

    def _get_states(self):
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.cuda_devices]

    def epoch(self, max_steps: int | None = None) -> float:
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.rng_states[0])
            for d, state in zip(self.cuda_devices, self.rng_states[1], strict=True):
                torch.cuda.set_rng_state(state, d)
            seconds = self._epoch(max_steps)
            self.rng_states = self._get_states()
        return seconds

    def _epoch(self, max_steps: int | None) -> float:
        sync(self.device)
        start = time.perf_counter()
        order = torch.randperm(self.images.shape[0], generator=self.order)
        for i, first in enumerate(range(0, self.images.shape[0], BATCH_SIZE)):
            if max_steps is not None and i >= max_steps:
                break
            batch = order[first : first + BATCH_SIZE]
            self.optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.images[batch]), self.labels[batch])
            loss.backward()
            self.optimizer.step()
            if self.monitor is not None:
                self.monitor.step(self.model, self.global_step)
            self.global_step += 1
        sync(self.device)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="one 20-step epoch per run (one record, at step 0)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 4, quick 1)")
    parser.add_argument("--out", default=None, help="JSON file or folder (default benchmarks/results/)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    epochs = args.epochs or (1 if args.quick else 4)

    train, test = load_mnist("train"), load_mnist("test")
    n_train = QUICK_TRAIN if args.quick else train.images.shape[0]
    images, labels = train.images[:n_train].to(device), train.labels[:n_train].to(device)
    probe = test.images[:PROBE_SIZE]
    with tempfile.TemporaryDirectory() as log_dir:
        monitor = ExplanationMonitor(
            IntegratedGradients(None, n_steps=IG_STEPS), probe, every_n_steps=EVERY_N_STEPS, out_dir=log_dir
        )
        plain = Run(images, labels, device, None)
        monitored = Run(images, labels, device, monitor)
        # Warm-up on throwaway runs (thread pools, allocator, first IG call), then time fresh ones.
        Run(images, labels, device, None).epoch(max_steps=3)
        warm_monitor = ExplanationMonitor(IntegratedGradients(None, n_steps=IG_STEPS), probe, every_n_steps=1)
        Run(images, labels, device, warm_monitor).epoch(max_steps=1)
        plain_s, monitored_s = [], []
        for _ in range(epochs):
            plain_s.append(plain.epoch())
            monitored_s.append(monitored.epoch())
            print(f"epoch: plain {plain_s[-1]:.2f} s, with monitor {monitored_s[-1]:.2f} s", flush=True)
        for a, b in zip(plain.model.parameters(), monitored.model.parameters(), strict=True):
            if not torch.equal(a, b):
                raise RuntimeError("the monitor changed the training: weights differ from the plain run")
    record_s = [r["seconds"] for r in monitor.records]
    steps_per_epoch = -(-images.shape[0] // BATCH_SIZE)
    per_epoch = {"plain": sum(plain_s) / epochs, "monitored": sum(monitored_s) / epochs}
    config = (
        f"mnist_cnn train={images.shape[0]} bs={BATCH_SIZE} every_n_steps={EVERY_N_STEPS} "
        f"probe={PROBE_SIZE} ig_steps={IG_STEPS} epochs={epochs}"
    )
    row = {
        "method": "monitor",
        "config": config,
        "sizes": {"train": int(images.shape[0]), "batch_size": BATCH_SIZE, "steps_per_epoch": steps_per_epoch,
                  "epochs": epochs, "probe": PROBE_SIZE, "ig_steps": IG_STEPS},
        "providers": {
            # median_s carries seconds per epoch (total / epochs) so the common readers take it.
            "torchexplain": {"median_s": per_epoch["monitored"], "epoch_s": monitored_s},
            "floor": {"median_s": per_epoch["plain"], "epoch_s": plain_s},
        },
        "records": len(record_s),
        "record_s_median": statistics.median(record_s) if record_s else None,
        "ratio_vs_floor": per_epoch["monitored"] / per_epoch["plain"],
        "overhead_per_epoch_s": per_epoch["monitored"] - per_epoch["plain"],
        "weights_identical": True,
    }
    print_table(
        [{"config": config, "plain_s/epoch": per_epoch["plain"], "monitor_s/epoch": per_epoch["monitored"],
          "x_floor": row["ratio_vs_floor"], "records": len(record_s), "s/record": row["record_s_median"]}],
        ["config", "plain_s/epoch", "monitor_s/epoch", "x_floor", "records", "s/record"],
    )
    meta = metadata(device, benchmark="bench_monitor", quick=args.quick,
                    timing="seconds per epoch = total over epochs / epochs; epochs of both runs interleaved")
    path = write_results(f"bench_monitor{'-quick' if args.quick else ''}", {"meta": meta, "results": [row]}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
