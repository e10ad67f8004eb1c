"""The experiment of Silveira et al. (2024) on simulated Zernike nanoCT: models x batch sizes x labelled slices.

For each architecture (U-Net, Sensor3D), batch size (32, 64) and number of labelled
training slices (10, 20, 30, 50, 70) a network is trained with the paper's protocol
(training.py) on slices of instrument A and evaluated on held-out slices of another
phantom (accuracy, Dice per class, cross-entropy loss, and the metrics with shade-off
merged into bone); Otsu thresholding is evaluated on the same slices. Transfer learning:
the best-protocol network of instrument A is fine-tuned with 20 slices of instrument B
and compared with a network trained from scratch on the same 20 slices.

    python -m nanoscope_daq.analysis.experiment --out docs/segmentation_experiment.md

regenerates docs/segmentation_experiment.md and .json (about 2-3 h on one CPU core at the
defaults; ``--epochs``, ``--slices`` etc. run a subset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .datasets import instrument, simulate_stack
from .simulated_training import (Prepared, evaluate_otsu, evaluate_stack, model_info, prepare, spread_slices,
                                 train_on)
from .training import TrainSettings

TRAIN_WINDOWS, TEST_WINDOWS, DEPTH, SIZE = 8, 4, 12, 128
TEST_SEED_OFFSET = 1000


def stacks(name: str, seed: int) -> tuple[Prepared, Prepared]:
    """Training and held-out stacks of one instrument (different phantoms)."""
    inst = instrument(name)
    return (prepare(simulate_stack(inst, seed, TRAIN_WINDOWS, DEPTH, SIZE)),
            prepare(simulate_stack(inst, seed + TEST_SEED_OFFSET, TEST_WINDOWS, DEPTH, SIZE)))


def run_one(train: Prepared, test: Prepared, settings: TrainSettings, slices: int, model=None) -> dict[str, Any]:
    start = time.perf_counter()
    result = train_on(train, spread_slices(train, slices), settings, model=model, progress=False)
    info = model_info(train, settings, {})
    return {"architecture": settings.architecture, "batch": settings.batch_size, "slices": slices,
            "epochs": len(result.history), "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "seconds": time.perf_counter() - start, "held_out": evaluate_stack(result.model, info, test),
            "model": result.model}


def run_grid(architectures: list[str], batches: list[int], slice_counts: list[int], epochs: int, seed: int,
             transfer: bool, log=print) -> dict[str, Any]:
    """Every configuration of the grid, the Otsu baseline and (optionally) the transfer-learning comparison."""
    train_a, test_a = stacks("zernike-a", seed)
    results: dict[str, Any] = {"seed": seed, "epochs_max": epochs, "slice_size": SIZE, "patch": 64,
                               "otsu": evaluate_otsu(test_a), "runs": []}
    best_model = None
    for arch in architectures:
        for batch in batches:
            for count in slice_counts:
                settings = TrainSettings(architecture=arch, batch_size=batch, max_epochs=epochs, seed=seed)
                run = run_one(train_a, test_a, settings, count)
                model = run.pop("model")
                if (arch, batch, count) == (architectures[-1], batches[0], slice_counts[-1]):
                    best_model = model
                results["runs"].append(run)
                log(_row(run))
    if transfer and best_model is not None:
        train_b, test_b = stacks("zernike-b", seed)
        settings = TrainSettings(architecture=architectures[-1], batch_size=batches[0], max_epochs=epochs, seed=seed)
        results["transfer"] = {
            "otsu": evaluate_otsu(test_b),
            "scratch_20": _strip(run_one(train_b, test_b, settings, 20)),
            "pretrained_20": _strip(run_one(train_b, test_b, settings, 20, model=best_model)),
        }
        log("transfer: " + json.dumps({k: v["held_out"]["dice"] for k, v in results["transfer"].items()
                                       if k != "otsu"}))
    return results


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    run.pop("model", None)
    return run


def _row(run: dict[str, Any]) -> str:
    h = run["held_out"]
    dice = " | ".join(f"{d:.3f}" for d in h["dice"])
    return (f"| {run['architecture']} | {run['batch']} | {run['slices']} | {run['epochs']} | {h['accuracy']:.4f} | "
            f"{dice} | {h['loss']:.4f} | {h['merged']['accuracy']:.4f} | {h['merged']['dice']['lcn']:.3f} |")


def markdown(results: dict[str, Any], command: str) -> str:
    """The results as the tables of docs/segmentation_experiment.md."""
    otsu = results["otsu"]["merged"]
    lines = [
        "# Segmentation experiment (generated)", "",
        f"Regenerate with `{command}`.", "",
        f"Held-out slices of another phantom, instrument zernike-a; slices {results['slice_size']} px, "
        f"patches {results['patch']} px, at most {results['epochs_max']} epochs, seed {results['seed']}.", "",
        "Dice per class: background, bone, LCN, shade-off. Merged: shade-off counted as bone (what "
        "post-processing does), so thresholding can be compared.", "",
        "| model | batch | slices | epochs | accuracy | Dice bg | Dice bone | Dice LCN | Dice shade-off | loss "
        "| merged accuracy | merged Dice LCN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in results["runs"]],
        f"| Otsu | - | - | - | - | - | - | - | - | - | {otsu['accuracy']:.4f} | {otsu['dice']['lcn']:.3f} |",
    ]
    if "transfer" in results:
        t = results["transfer"]
        lines += ["", "Transfer learning to instrument zernike-b (20 labelled slices):", "",
                  "| start | accuracy | Dice bg | Dice bone | Dice LCN | Dice shade-off | loss | merged Dice LCN |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in ("scratch_20", "pretrained_20"):
            h = t[name]["held_out"]
            lines.append(f"| {name} | {h['accuracy']:.4f} | " + " | ".join(f"{d:.3f}" for d in h["dice"])
                         + f" | {h['loss']:.4f} | {h['merged']['dice']['lcn']:.3f} |")
        lines.append(f"| Otsu | {t['otsu']['merged']['accuracy']:.4f} | | | | | | "
                     f"{t['otsu']['merged']['dice']['lcn']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/segmentation_experiment.md", help="markdown table to write")
    parser.add_argument("--architectures", default="unet,sensor3d")
    parser.add_argument("--batches", default="32,64")
    parser.add_argument("--slices", default="10,20,30,50,70")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-transfer", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run_grid(args.architectures.split(","), [int(b) for b in args.batches.split(",")],
                       [int(s) for s in args.slices.split(",")], args.epochs, args.seed, not args.no_transfer)
    command = "python -m nanoscope_daq.analysis.experiment " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, command.strip()))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
