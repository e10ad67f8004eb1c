"""The experiment of Silveira et al. (2024) on simulated Zernike nanoCT: models x batch sizes x labelled slices.

For each architecture (U-Net, Sensor3D), batch size (32, 64) and number of labelled
training slices (10, 20, 30, 50, 70) a network is trained with the paper's protocol
(training.py) on slices of instrument A and evaluated on held-out slices of another
phantom (accuracy, Dice per class, cross-entropy loss, and the metrics with shade-off
merged into bone); Otsu thresholding is evaluated on the same slices. Transfer learning:
the goal network of instrument A is fine-tuned with 20 slices of instrument B and
compared with a network trained from scratch on the same 20 slices, in paired replicates
(each draws other slices and another seed: one run of each is within run-to-run spread).

    python -m nanoscope_daq.analysis.experiment --out docs/segmentation_experiment.md --work /tmp/segmentation-grid

regenerates docs/segmentation_experiment.md and .json (about 3 h on one shared CPU core,
half of it the transfer replicates).
Sizes reduced to fit: slices of 128 x 128 pixels and 64-pixel patches cut without overlap
(stride 64: 4 patches per slice), and an epoch holds at least 192 patches (the training
patches repeated, see TrainSettings.min_patches_per_epoch) so that 10 labelled slices still
give six optimiser steps per epoch at batch 32. ``--work`` (a scratch folder) keeps every
finished run (runs.jsonl) and the goal model, so an interrupted grid resumes where it
stopped and a finished one only rewrites the tables; ``--architectures``, ``--slices``
etc. run a subset.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from ..config import PhantomConfig, load_config
from ..physics.presets import tiny_leg_config
from .datasets import simulate_stack
from .model_files import load_model, save_model
from .simulated_instruments import simulated_instrument
from .simulated_training import Prepared, evaluate_otsu, evaluate_stack, model_info, prepare, spread_slices, train_on
from .training import TrainSettings

TRAIN_WINDOWS, TEST_WINDOWS, DEPTH, SIZE = 8, 4, 12, 128
PATCH, STRIDE, PATCHES_PER_EPOCH = 64, 64, 192
TEST_SEED_OFFSET = 1000
TRANSFER_SLICES = 20
TRANSFER_REPLICATES = 8
"""Paired transfer replicates: replicate r picks the labelled slices shifted by r and trains with seed + r.

Eight, because one pair is within the run-to-run spread (accuracy +-0.003) and a
one-sided Wilcoxon signed-rank test of eight pairs can reach p < 0.01."""


def stacks(name: str, phantom: PhantomConfig, seed: int) -> tuple[Prepared, Prepared]:
    """Training and held-out stacks of one instrument (phantoms of different seeds)."""
    inst = simulated_instrument(name)
    return (prepare(simulate_stack(inst, phantom, seed, TRAIN_WINDOWS, DEPTH, SIZE)),
            prepare(simulate_stack(inst, phantom, seed + TEST_SEED_OFFSET, TEST_WINDOWS, DEPTH, SIZE)))


def run_one(train: Prepared, test: Prepared, settings: TrainSettings, slices: int, model=None,
            slice_offset: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    result = train_on(train, spread_slices(train, slices, slice_offset), settings, model=model, progress=False)
    info = model_info(train, settings, {})
    return {"architecture": settings.architecture, "batch": settings.batch_size, "slices": slices,
            "epochs": len(result.history), "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "seconds": time.perf_counter() - start, "held_out": evaluate_stack(result.model, info, test),
            "model": result.model}


def run_grid(architectures: list[str], batches: list[int], slice_counts: list[int], epochs: int, seed: int,
             phantom: PhantomConfig, transfer: bool, work: Path | None = None, log=print,
             transfer_replicates: int = TRANSFER_REPLICATES) -> dict[str, Any]:
    """Every configuration of the grid, the Otsu baseline and (optionally) the transfer-learning comparison.

    The goal configuration (last architecture, first batch size, most slices) runs first: its model is the
    transfer-learning start, and the transfer comparison runs next. With ``work``, finished runs are read back
    instead of trained again. ``phantom``: the specimen the slices are cut from."""
    train_a, test_a = stacks("zernike-a", phantom, seed)
    grid_settings = {"seed": seed, "epochs_max": epochs, "slice_size": SIZE, "patch": PATCH, "stride": STRIDE,
                     "min_patches_per_epoch": PATCHES_PER_EPOCH}
    results: dict[str, Any] = {**grid_settings, "otsu": evaluate_otsu(test_a), "runs": []}
    done = _finished_runs(work, grid_settings)
    goal = (architectures[-1], batches[0], max(slice_counts))
    grid = [(a, b, c) for a in architectures for b in batches for c in slice_counts]
    goal_model = None
    # The goal first, then batch by batch with the last architecture first: an interrupted grid has the most.
    order = sorted(grid, key=lambda k: (k != goal, batches.index(k[1]), -architectures.index(k[0]), k[2]))
    for arch, batch, count in order:
        settings = _settings(arch, batch, epochs, seed)
        key = f"{arch}/{batch}/{count}"
        model_path = work / "goal_model.pt" if work is not None and (arch, batch, count) == goal else None
        if key in done and (model_path is None or model_path.is_file()):
            run = done[key]
            if model_path is not None:
                goal_model, _ = load_model(model_path)
        else:
            run = run_one(train_a, test_a, settings, count)
            model = run.pop("model")
            if (arch, batch, count) == goal:
                goal_model = model
                if model_path is not None:
                    save_model(model_path, model, model_info(train_a, settings, {}))
            _record(work, done, key, run)
            log(_row(run))
        results["runs"].append(run)
        if transfer and (arch, batch, count) == goal:  # right after the goal model: the comparison comes early
            results["transfer"] = _transfer(goal_model, _settings(arch, batch, epochs, seed), phantom,
                                            transfer_replicates, work, done, log)
    results["runs"].sort(key=lambda r: (architectures.index(r["architecture"]), r["batch"], r["slices"]))
    return results


def _transfer(start_model, settings: TrainSettings, phantom: PhantomConfig, replicates: int, work: Path | None,
              done: dict[str, dict[str, Any]], log) -> dict[str, Any]:
    """Instrument B with TRANSFER_SLICES labelled slices, from scratch and fine-tuned from ``start_model``."""
    train_b, test_b = stacks("zernike-b", phantom, settings.seed)
    out: dict[str, Any] = {"otsu": evaluate_otsu(test_b), "replicates": [],
                           "not_fine_tuned": evaluate_stack(start_model, model_info(train_b, settings, {}), test_b)}
    for r in range(replicates):
        paired = {"replicate": r, "seed": settings.seed + r, "slice_offset": r}
        for start in ("scratch", "pretrained"):
            key = transfer_key(start, r)
            if key not in done:
                model = copy.deepcopy(start_model) if start == "pretrained" else None  # training changes it
                run = transfer_run(train_b, test_b, settings, r, model)
                _record(work, done, key, run)
                log(f"transfer {start} {r}: " + _row(run))
            paired[start] = done[key]
        out["replicates"].append(paired)
    out["summary"] = transfer_summary(out["replicates"])
    return out


def transfer_key(start: str, replicate: int) -> str:
    return f"transfer/{start}/{replicate}"


def transfer_run(train: Prepared, test: Prepared, settings: TrainSettings, replicate: int,
                 model=None) -> dict[str, Any]:
    """Replicate ``replicate`` of the transfer comparison (``model``: the start network, None from scratch)."""
    paired = dataclasses.replace(settings, seed=settings.seed + replicate)
    return _strip(run_one(train, test, paired, TRANSFER_SLICES, model=model, slice_offset=replicate))


TRANSFER_METRICS = {
    "accuracy": lambda h: h["accuracy"], "dice_lcn": lambda h: h["dice"][2], "loss": lambda h: h["loss"],
    "merged_accuracy": lambda h: h["merged"]["accuracy"],
}
"""Held-out metrics the transfer summary compares (the LCN class is the same merged or not)."""


def transfer_summary(replicates: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: mean, sd and worst replicate per start, the pairs where fine-tuning did better, and the
    one-sided p of the Wilcoxon signed-rank test of the pairs (null: fine-tuning is no better)."""
    summary: dict[str, Any] = {"replicates": len(replicates)}
    for name, metric in TRANSFER_METRICS.items():
        values = {start: np.array([metric(r[start]["held_out"]) for r in replicates])
                  for start in ("scratch", "pretrained")}
        gain = values["pretrained"] - values["scratch"]
        if name == "loss":
            gain = -gain
        p = float(stats.wilcoxon(gain, alternative="greater").pvalue) if np.any(gain != 0) else 1.0
        worst = np.max if name == "loss" else np.min
        summary[name] = {**{start: {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                                    "worst": float(worst(v))}
                            for start, v in values.items()},
                         "pretrained_better": int(np.sum(gain > 0)), "wilcoxon_p": p}
    epochs = {start: np.array([r[start]["epochs"] for r in replicates]) for start in ("scratch", "pretrained")}
    summary["epochs"] = {start: {"mean": float(v.mean())} for start, v in epochs.items()}
    return summary


def _settings(architecture: str, batch: int, epochs: int, seed: int) -> TrainSettings:
    return TrainSettings(architecture=architecture, batch_size=batch, max_epochs=epochs, patch=PATCH, stride=STRIDE,
                         min_patches_per_epoch=PATCHES_PER_EPOCH, seed=seed)


def _finished_runs(work: Path | None, grid: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs an earlier, interrupted grid with the same ``grid`` settings finished (key -> run)."""
    if work is None:
        return {}
    work.mkdir(parents=True, exist_ok=True)
    header = work / "grid.json"
    if header.is_file() and json.loads(header.read_text()) != grid:
        raise ValueError(f"{work} holds runs of another grid ({header.read_text().strip()}, now {json.dumps(grid)}); "
                         "pass another --work folder or empty this one")
    header.write_text(json.dumps(grid))
    path = work / "runs.jsonl"
    if not path.is_file():
        return {}
    return {entry["key"]: entry["run"] for entry in map(json.loads, path.read_text().splitlines()) if entry}


def _record(work: Path | None, done: dict[str, dict[str, Any]], key: str, run: dict[str, Any]) -> None:
    done[key] = run
    if work is not None:
        with open(work / "runs.jsonl", "a") as f:
            f.write(json.dumps({"key": key, "run": run}) + "\n")


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    run.pop("model", None)
    return run


def _row(run: dict[str, Any]) -> str:
    return (f"| {run['architecture']} | {run['batch']} | {run['slices']} | {run['epochs']} | "
            f"{run['seconds'] / 60:.1f} | " + _held_out_cells(run))


def _held_out_cells(run: dict[str, Any]) -> str:
    """Accuracy, Dice per class, loss and the merged metrics: the table cells every run shares."""
    h = run["held_out"]
    dice = " | ".join(f"{d:.3f}" for d in h["dice"])
    return (f"{h['accuracy']:.4f} | {dice} | {h['loss']:.4f} | {h['merged']['accuracy']:.4f} | "
            f"{h['merged']['dice']['lcn']:.3f} |")


def markdown(results: dict[str, Any], command: str) -> str:
    """The results as the tables of docs/segmentation_experiment.md."""
    otsu = results["otsu"]["merged"]
    lines = [
        "# Segmentation experiment (generated)", "",
        f"Regenerate with `{command}`.", "",
        f"Held-out slices of another phantom, instrument zernike-a; slices {results['slice_size']} px, "
        f"patches {results['patch']} px at stride {results['stride']} px, at least "
        f"{results['min_patches_per_epoch']} patches per epoch, at most {results['epochs_max']} epochs, "
        f"seed {results['seed']}; minutes: wall time on one shared CPU core.", "",
        "Dice per class: background, bone, LCN, shade-off. Merged: shade-off counted as bone (what "
        "post-processing does), so thresholding can be compared.", "",
        "| model | batch | slices | epochs | minutes | accuracy | Dice bg | Dice bone | Dice LCN | Dice shade-off "
        "| loss | merged accuracy | merged Dice LCN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in results["runs"]],
        f"| Otsu | - | - | - | - | - | - | - | - | - | - | {otsu['accuracy']:.4f} | {otsu['dice']['lcn']:.3f} |",
    ]
    if "transfer" in results:
        lines += _transfer_tables(results["transfer"])
    return "\n".join(lines) + "\n"


def _transfer_tables(t: dict[str, Any]) -> list[str]:
    """The paired transfer replicates, then mean +- sd per start and how often fine-tuning did better."""
    lines = ["", f"Transfer learning to instrument zernike-b ({TRANSFER_SLICES} labelled slices; replicate r: "
             "slices shifted by r, seed + r, the same for both starts):", "",
             "| replicate | start | epochs | accuracy | Dice bg | Dice bone | Dice LCN | Dice shade-off | loss "
             "| merged accuracy | merged Dice LCN |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for paired in t["replicates"]:
        for start in ("scratch", "pretrained"):
            run = paired[start]
            lines.append(f"| {paired['replicate']} | {start} | {run['epochs']} | " + _held_out_cells(run))
    lines.append("| - | A's network, not fine-tuned | 0 | " + _held_out_cells({"held_out": t["not_fine_tuned"]}))
    lines.append(f"| - | Otsu | | | | | | | | {t['otsu']['merged']['accuracy']:.4f} | "
                 f"{t['otsu']['merged']['dice']['lcn']:.3f} |")
    s = t["summary"]
    lines += ["", f"Mean +- sd (worst replicate) over {s['replicates']} replicates; pairs where the fine-tuned "
              "network did better, and the one-sided p of the Wilcoxon signed-rank test of the pairs (null: it is "
              "no better).", "",
              "| metric | from scratch | fine-tuned | fine-tuned better | p |", "|---|---|---|---|---|"]
    for name in TRANSFER_METRICS:
        m = s[name]
        cells = [f"{m[start]['mean']:.4f} +- {m[start]['sd']:.4f} ({m[start]['worst']:.4f})"
                 for start in ("scratch", "pretrained")]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {m['pretrained_better']} of {s['replicates']} | "
                     f"{m['wilcoxon_p']:.3f} |")
    lines.append(f"| epochs | {s['epochs']['scratch']['mean']:.0f} | {s['epochs']['pretrained']['mean']:.0f} | | |")
    return lines


def _stamped(line: str) -> None:
    print(time.strftime("%H:%M:%S"), line, flush=True)


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
    parser.add_argument("--transfer-replicates", type=int, default=TRANSFER_REPLICATES,
                        help="paired scratch / fine-tuned replicates on instrument zernike-b")
    parser.add_argument("--work", help="folder keeping finished runs and the goal model: a rerun resumes there")
    parser.add_argument("--config", help="TOML file overriding the defaults (the phantom: [sim.phantom])")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run_grid(args.architectures.split(","), [int(b) for b in args.batches.split(",")],
                       [int(s) for s in args.slices.split(",")], args.epochs, args.seed,
                       tiny_leg_config(load_config(args.config)).sim.phantom, not args.no_transfer,
                       Path(args.work) if args.work else None, log=_stamped,
                       transfer_replicates=args.transfer_replicates)
    command = "python -m nanoscope_daq.analysis.experiment " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, command.strip()))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
