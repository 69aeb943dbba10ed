"""What ExplanationMonitor costs a training run: seconds per epoch with and without it.

    python benchmarks/bench_monitor.py [--device cpu|cuda] [--quick] [--out PATH]

The MNIST CNN (torchexplain.zoo.MnistCNN) trains on the bundled 4,000 training
digits (batch 64, Adam: 63 steps an epoch) twice from the same seed, epochs of
the two runs interleaved so drift hits both alike: once plain (the floor) and once
calling ``monitor.step`` every step with ``every_n_steps=100`` (IG, 50 steps, on 8
probe test digits, writing its JSON-lines log and PNG grid each record, as a user
would). A record lands in some epochs and not in others, and on a shared machine
one slow epoch swamps a mean, so the figure per epoch is built from medians of what
was measured: an epoch of training under the monitor with its records taken out,
plus (63 / 100) x one whole record (explain, log line, PNG), set against the median
plain epoch. The raw epoch times and their total ratio are kept in the JSON. The
run also checks that both runs end with identical weights.

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
    """One training run that continues from epoch to epoch (its own model, optimizer, step count)."""

    def __init__(self, images, labels, device, monitor: ExplanationMonitor | None) -> None:
        torch.manual_seed(0)
        self.model = MnistCNN().to(device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.images, self.labels, self.device = images, labels, device
        self.monitor = monitor
        self.global_step = 0
        self.record_s: list[float] = []
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
                before = time.perf_counter()
                if self.monitor.step(self.model, self.global_step) is not None:
                    sync(self.device)
                    self.record_s.append(time.perf_counter() - before)  # explain + log + PNG
            self.global_step += 1
        sync(self.device)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="10-step epochs (640 digits), 2 per run")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 4, quick 1)")
    parser.add_argument("--out", default=None, help="JSON file or folder (default benchmarks/results/)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    epochs = args.epochs or (2 if args.quick else 5)

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
        plain_s, monitored_s, monitored_train_s = [], [], []
        for _ in range(epochs):
            plain_s.append(plain.epoch())
            records_before = len(monitored.record_s)
            monitored_s.append(monitored.epoch())
            monitored_train_s.append(monitored_s[-1] - sum(monitored.record_s[records_before:]))
            print(f"epoch: plain {plain_s[-1]:.2f} s, with monitor {monitored_s[-1]:.2f} s "
                  f"({len(monitored.record_s) - records_before} records)", flush=True)
        for a, b in zip(plain.model.parameters(), monitored.model.parameters(), strict=True):
            if not torch.equal(a, b):
                raise RuntimeError("the monitor changed the training: weights differ from the plain run")
    record_s = monitored.record_s
    steps_per_epoch = -(-images.shape[0] // BATCH_SIZE)
    # On a shared machine one slow epoch swamps a mean, so each piece is a median: an
    # epoch of training, an epoch of training under the monitor (its records taken
    # out), and one whole record; records land steps_per_epoch / every_n_steps times
    # an epoch in the long run.
    records_per_epoch = steps_per_epoch / EVERY_N_STEPS
    plain_epoch = statistics.median(plain_s)
    monitored_epoch = statistics.median(monitored_train_s) + records_per_epoch * statistics.median(record_s)
    config = (
        f"mnist_cnn train={images.shape[0]} bs={BATCH_SIZE} every_n_steps={EVERY_N_STEPS} "
        f"probe={PROBE_SIZE} ig_steps={IG_STEPS}"
    )
    row = {
        "method": "monitor",
        "config": config,
        "sizes": {"train": int(images.shape[0]), "batch_size": BATCH_SIZE, "steps_per_epoch": steps_per_epoch,
                  "epochs": epochs, "probe": PROBE_SIZE, "ig_steps": IG_STEPS},
        "providers": {
            # median_s: seconds per epoch, from the medians above (see the module docs).
            "torchexplain": {"median_s": monitored_epoch, "epoch_s": monitored_s,
                             "epoch_without_records_s": monitored_train_s},
            "floor": {"median_s": plain_epoch, "epoch_s": plain_s},
        },
        "records": len(record_s),
        "record_s": record_s,
        "record_s_median": statistics.median(record_s),
        "records_per_epoch": records_per_epoch,
        "ratio_vs_floor": monitored_epoch / plain_epoch,
        "overhead_per_epoch_s": monitored_epoch - plain_epoch,
        "total_ratio": sum(monitored_s) / sum(plain_s),
        "weights_identical": True,
    }
    print_table(
        [{"config": config, "plain_s/epoch": plain_epoch, "monitor_s/epoch": monitored_epoch,
          "x_floor": row["ratio_vs_floor"], "records": len(record_s), "s/record": row["record_s_median"]}],
        ["config", "plain_s/epoch", "monitor_s/epoch", "x_floor", "records", "s/record"],
    )
    meta = metadata(
        device, benchmark="bench_monitor", quick=args.quick, epochs=epochs,
        timing="seconds per epoch: median plain epoch vs median monitored epoch without its records "
               "+ (steps_per_epoch / every_n_steps) x median seconds per record; epochs interleaved",
    )
    path = write_results(f"bench_monitor{'-quick' if args.quick else ''}", {"meta": meta, "results": [row]}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
