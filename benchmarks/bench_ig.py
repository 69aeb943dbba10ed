"""Integrated Gradients: torchexplain vs Captum vs the floor, in one run.

    python benchmarks/bench_ig.py [--device cpu|cuda] [--quick] [--out PATH]

The floor is one raw forward+backward of the same ``n_steps x N`` batch (built
beforehand, not timed): what any IG must pay for the model itself. Each
configuration reports median seconds per call and peak extra memory per
provider, and the ratios torchexplain/Captum and torchexplain/floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import metadata, peak_memory, print_table, time_providers, write_results  # noqa: E402
from _models import GapLinear, resnet  # noqa: E402

from torchexplain import integrated_gradients  # noqa: E402
from torchexplain.zoo import MnistCNN  # noqa: E402


def configurations(device: torch.device, quick: bool) -> list[dict]:
    configs = [
        # Cheap configurations get more repeats: one run of each is within ~5% noise
        # on a shared CPU, and the targets are a few percent.
        {
            "name": "mnist_cnn",
            "model": "mnist",
            "shape": (1, 28, 28),
            "n": 32,
            "steps": 50,
            "kind": "compute",
            "repeats": 11,
        },
        {
            "name": "mnist_cnn",
            "model": "mnist",
            "shape": (1, 28, 28),
            "n": 256,
            "steps": 50,
            "kind": "compute",
        },
        {
            "name": "resnet18_64px",
            "model": "resnet18",
            "shape": (3, 64, 64),
            "n": 8,
            "steps": 32,
            "kind": "compute",
            "repeats": 11,
        },
        {
            "name": "gap_linear_224px",
            "model": "gap",
            "shape": (3, 224, 224),
            "n": 16,
            "steps": 50,
            "kind": "overhead",
            "repeats": 11,
        },
    ]
    if device.type == "cuda":
        configs += [
            {
                "name": "mnist_cnn",
                "model": "mnist",
                "shape": (1, 28, 28),
                "n": 1024,
                "steps": 50,
                "kind": "compute",
            },
            {
                "name": "resnet50_224px",
                "model": "resnet50",
                "shape": (3, 224, 224),
                "n": 16,
                "steps": 50,
                "kind": "compute",
            },
        ]
    if quick:
        # A smoke run that fits `torchexplain bench --quick` (all scripts) in 100 s
        # on a 2-core CPU: resnet18 alone took minutes there, so only small batches.
        configs = [
            {**configs[0], "n": 8},
            {**configs[3], "n": 4},
        ]
    return configs


def build_model(kind: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    if kind == "mnist":
        return MnistCNN().eval().to(device), "torchexplain.zoo.MnistCNN"
    if kind == "gap":
        return GapLinear().eval().to(device), "benchmarks._models.GapLinear"
    model, source = resnet(18 if kind == "resnet18" else 50, n_classes=10)
    return model.to(device), source


def make_providers(cfg: dict, device: torch.device, with_captum: bool):
    """The three providers of one configuration on freshly built, identical inputs."""
    model, source = build_model(cfg["model"], device)
    for p in model.parameters():
        p.requires_grad_(False)  # as in inference; IG needs input gradients only
    gen = torch.Generator().manual_seed(1)
    n, steps = cfg["n"], cfg["steps"]
    x = torch.rand((n, *cfg["shape"]), generator=gen).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    floor_batch = torch.rand((n * steps, *cfg["shape"]), generator=gen).to(device)
    floor_target = target.repeat_interleave(steps)

    def floor():
        batch = floor_batch.requires_grad_()
        scores = model(batch).gather(1, floor_target[:, None]).sum()
        torch.autograd.grad(scores, batch)

    def ours():
        return integrated_gradients(model, x, target=target, n_steps=steps)

    providers = {"torchexplain": ours, "floor": floor}
    if with_captum:
        from captum.attr import IntegratedGradients as CaptumIG

        captum_ig = CaptumIG(model)
        providers["captum"] = lambda: captum_ig.attribute(x, target=target, n_steps=steps)
    path_bytes = floor_batch.numel() * floor_batch.element_size()
    return providers, source, path_bytes


def run_config(cfg: dict, device: torch.device, repeats: int, with_captum: bool) -> dict:
    providers, source, path_bytes = make_providers(cfg, device, with_captum)
    timings = time_providers(providers, device, repeats=repeats, warmup=1)
    n, steps = cfg["n"], cfg["steps"]

    row = {
        "config": f"{cfg['name']} N={n} steps={steps}",
        "repeats": repeats,
        "kind": cfg["kind"],
        "model_source": source,
        "sizes": {
            "n": n,
            "steps": steps,
            "input_shape": list(cfg["shape"]),
            "path_bytes": path_bytes,
        },
        "providers": {name: dict(timings[name]) for name in providers},
    }
    t = {name: timings[name]["median_s"] for name in providers}
    row["ratio_vs_floor"] = t["torchexplain"] / t["floor"]
    row["explanations_per_s"] = n / t["torchexplain"]
    if with_captum:
        row["ratio_vs_captum"] = t["torchexplain"] / t["captum"]
        row["speedup_vs_captum"] = t["captum"] / t["torchexplain"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small configurations, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--out", default=None, help="JSON file or folder (default benchmarks/results/)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    try:
        import captum  # noqa: F401

        with_captum = True
    except ImportError:
        with_captum = False
        print("captum is not installed: comparing with the floor only (pip install captum)")
    repeats = args.repeats or (3 if args.quick else 7)
    rows = []
    for cfg in configurations(device, args.quick):
        try:
            cfg_repeats = args.repeats or (
                repeats if args.quick else max(repeats, cfg.get("repeats", 0))
            )
            rows.append(run_config(cfg, device, cfg_repeats, with_captum))
        except RuntimeError as err:  # e.g. resnet50 without torchvision
            print(f"skipped {cfg['name']}: {err}")
            continue
        rows[-1]["_cfg"] = cfg
        r = rows[-1]
        p = r["providers"]
        print(
            f"{r['config']}: torchexplain {p['torchexplain']['median_s']:.4f}s  floor {p['floor']['median_s']:.4f}s"
            + (f"  captum {p['captum']['median_s']:.4f}s" if with_captum else ""),
            flush=True,
        )
    # Memory last, after every timing: measuring it retunes the host allocator (see
    # benchmarks/_common.peak_memory), which would slow any timing taken after it.
    for r in rows:
        providers, _, path_bytes = make_providers(r.pop("_cfg"), device, with_captum)
        for name, fn in providers.items():
            if args.quick and name != "torchexplain":  # --quick: ours only (time budget)
                r["providers"][name].update(peak_extra_bytes=None, peak_extra_paths=None)
                continue
            fn()  # warm
            peak = peak_memory(fn, device)
            r["providers"][name]["peak_extra_bytes"] = peak
            r["providers"][name]["peak_extra_paths"] = None if peak is None else peak / path_bytes
    table = []
    for r in rows:
        p = r["providers"]
        entry = {
            "config": r["config"],
            "torchexplain_s": p["torchexplain"]["median_s"],
            "floor_s": p["floor"]["median_s"],
            "x_floor": r["ratio_vs_floor"],
            "expl_per_s": r["explanations_per_s"],
            "mem_paths": p["torchexplain"]["peak_extra_paths"],
        }
        if with_captum:
            entry.update(
                captum_s=p["captum"]["median_s"],
                x_captum=r["ratio_vs_captum"],
                captum_mem_paths=p["captum"]["peak_extra_paths"],
            )
        table.append(entry)
    columns = [
        "config",
        "torchexplain_s",
        "captum_s",
        "floor_s",
        "x_captum",
        "x_floor",
        "expl_per_s",
        "mem_paths",
        "captum_mem_paths",
    ]
    print_table(table, [c for c in columns if not table or c in table[0]])
    payload = {
        "meta": metadata(device, benchmark="bench_ig", repeats=repeats, quick=args.quick),
        "results": rows,
    }
    path = write_results("bench_ig", payload, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
