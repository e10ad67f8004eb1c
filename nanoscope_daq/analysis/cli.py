"""Argument parsers of `nanoscope train`, `nanoscope segment` and `nanoscope morphometry` (hooked in by ../cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..config import AnalysisConfig, Config, load_config


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def _analysis_config(args: argparse.Namespace) -> AnalysisConfig:
    return _config(args).analysis


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file overriding the defaults ([analysis]; train also reads the "
                                         "phantom, [sim.phantom])")


# -- train --------------------------------------------------------------------------
def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`nanoscope train`: the paper's protocol on simulated data (or on a volume + labels file)."""
    p = subparsers.add_parser("train", help="train a segmentation model; writes weights + metrics JSON")
    _add_config_option(p)
    p.add_argument("-o", "--out", required=True, help="model file to write (.pt)")
    p.add_argument("--metrics", help="metrics JSON to write (default: next to the model, .json)")
    p.add_argument("--architecture", choices=["unet", "sensor3d"], default="sensor3d")
    p.add_argument("--batch", type=int, help="batch size (paper: 32 or 64; default from config)")
    p.add_argument("--slices", type=int, default=70, help="labelled training slices (paper: 10 .. 70)")
    p.add_argument("--instrument", default="zernike-a",
                   help="simulated instrument: zernike-a, zernike-b (nanoCT, LCN task) or microct (bone task)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the split, the weights and the batches")
    p.add_argument("--epochs", type=int, help="at most this many epochs (default from config: 100)")
    p.add_argument("--pretrained", help="model file to start from (transfer learning)")
    p.add_argument("--incremental", help="incremental ground truth: slice counts such as 10,20,30")
    p.add_argument("--windows", type=int, default=8, help="simulated windows of --depth slices each")
    p.add_argument("--depth", type=int, default=12, help="consecutive slices per simulated window")
    p.add_argument("--size", type=int, default=128, help="simulated slice size (pixels)")
    p.add_argument("--volume", help="train on this volume file instead of simulated data (needs --labels)")
    p.add_argument("--labels", help="labels file of --volume (every slice labelled)")
    p.add_argument("--task", choices=["lcn", "bone"], default="lcn", help="classes to learn from --labels")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    from ..volume_files import read_labels, read_volume
    from .simulated_instruments import simulated_instrument

    config = _config(args)
    cfg = config.analysis
    # The inputs are checked before torch and the phantom's physics load (seconds).
    if args.volume or args.labels:
        if not (args.volume and args.labels):
            raise SystemExit("nanoscope train: --volume and --labels go together; pass both")
        volume, labels = read_volume(args.volume), read_labels(args.labels)
        if volume.data.shape != labels.data.shape:
            raise SystemExit(f"nanoscope train: volume {volume.data.shape} and labels {labels.data.shape} differ")
    else:
        inst = simulated_instrument(args.instrument)
    steps = [int(v) for v in args.incremental.split(",")] if args.incremental else None

    import torch

    from ..physics.presets import tiny_leg_config
    from .datasets import simulate_stack
    from .model_files import load_model, save_model
    from .simulated_training import (
        Prepared,
        evaluate_otsu,
        evaluate_stack,
        incremental_training,
        model_info,
        prepare,
        spread_slices,
        train_on,
    )
    from .training import TrainSettings, normalise

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    settings = TrainSettings(
        architecture=args.architecture, batch_size=args.batch or cfg.train_batch_size,
        max_epochs=args.epochs or cfg.train_max_epochs, patience=cfg.train_patience_epochs,
        min_improvement=cfg.train_min_improvement, validation_fraction=cfg.train_validation_fraction,
        patch=cfg.train_patch_pixels, stride=cfg.train_patch_stride_pixels, learning_rate=cfg.train_learning_rate,
        loss=cfg.train_loss, base_channels=cfg.base_channels, sequence=cfg.sequence_slices, seed=args.seed)
    provenance: dict[str, Any] = {"command": " ".join(sys.argv), "seed": args.seed}
    if args.volume:
        whole = Prepared(normalise(volume.data)[None], labels.data[None], args.task, volume.voxel_size_um)
        train_data, test_data, otsu = whole, None, None
        provenance.update(volume=args.volume, labels=args.labels)
    else:
        phantom = tiny_leg_config(config).sim.phantom
        train_data = prepare(simulate_stack(inst, phantom, args.seed, args.windows, args.depth, args.size))
        test_data = prepare(simulate_stack(inst, phantom, args.seed + 1000, max(2, args.windows // 2), args.depth,
                                           args.size))
        otsu = evaluate_otsu(test_data)
        provenance.update(instrument=args.instrument, windows=args.windows, depth=args.depth, size=args.size)
    start_model = None
    if args.pretrained:
        start_model, pre_info = load_model(args.pretrained)
        if pre_info.architecture != settings.architecture or pre_info.task != train_data.task:
            raise SystemExit(f"nanoscope train: {args.pretrained} is a {pre_info.architecture} model for task "
                             f"{pre_info.task!r}; train a {settings.architecture} for {train_data.task!r} instead")
        provenance["pretrained"] = args.pretrained
    incremental_log = None
    if steps:
        result, incremental_log = incremental_training(train_data, steps, settings, progress=not args.no_progress)
        slices = steps[-1]
    else:
        slices = args.slices
        result = train_on(train_data, spread_slices(train_data, slices), settings, model=start_model,
                          progress=not args.no_progress)
    provenance.update(slices=slices, best_epoch=result.best_epoch, epochs_run=len(result.history),
                      stopped_early=result.stopped_early, settings=dataclasses.asdict(settings))
    info = model_info(train_data, settings, provenance)
    save_model(args.out, result.model, info)
    metrics: dict[str, Any] = {"model": args.out, "provenance": provenance, "seconds": result.seconds,
                               "history": result.history, "incremental": incremental_log, "otsu": otsu}
    if test_data is not None:
        metrics["held_out"] = evaluate_stack(result.model, info, test_data)
    metrics_path = Path(args.metrics) if args.metrics else Path(args.out).with_suffix(".json")
    metrics_path.write_text(json.dumps(metrics, indent=2, default=str))
    held = metrics.get("held_out")
    summary = f"accuracy {held['accuracy']:.4f}, Dice {[format(d, '.3f') for d in held['dice']]}" if held else ""
    print(f"wrote {args.out} and {metrics_path} ({len(result.history)} epochs, best {result.best_epoch}) {summary}")
    return 0


# -- segment ------------------------------------------------------------------------
def add_segment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`nanoscope segment VOLUME.h5 -o LABELS.h5`."""
    p = subparsers.add_parser("segment", help="segment a reconstructed volume with the shipped or a given model")
    _add_config_option(p)
    p.add_argument("volume", help="volume file (/volume, voxel_size_um)")
    p.add_argument("-o", "--out", required=True, help="labels file to write")
    p.add_argument("--model", help="model file (default: [analysis] model_path, else the shipped model)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device (default from config)")
    p.set_defaults(func=_cmd_segment)
    return p


def _cmd_segment(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .segmentation import segment_file

    cfg = _analysis_config(args)
    if args.device:
        cfg = replace(cfg, device=args.device)
    provenance = segment_file(args.volume, args.out, cfg, args.model)
    print(f"wrote {args.out} ({provenance['architecture']} on {provenance['device']}, "
          f"{provenance['seconds']:.1f} s)")
    return 0


# -- morphometry --------------------------------------------------------------------
def add_morphometry_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`nanoscope morphometry LABELS.h5 [--json] [--followup LABELS2.h5 --days D]`."""
    p = subparsers.add_parser("morphometry", help="porosity, lacunae and bone morphometry of a labels file")
    _add_config_option(p)
    p.add_argument("labels", help="labels file (/labels, voxel_size_um) or a simulator ground_truth.h5")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--followup", help="labels file of a later time point: also report remodelling rates")
    p.add_argument("--days", type=float, help="days between the two time points (with --followup)")
    p.set_defaults(func=_cmd_morphometry)
    return p


def _cmd_morphometry(args: argparse.Namespace) -> int:
    from ..volume_files import read_labels

    cfg = _analysis_config(args)
    labels = read_labels(args.labels)
    if args.followup:  # both files and --days checked before scipy's modules load and anything is computed
        if args.days is None:
            raise SystemExit("nanoscope morphometry: --followup needs --days (the interval between time points)")
        later = read_labels(args.followup)
    from .morphometry import MorphometrySettings, morphometry
    from .remodeling import remodeling

    settings = MorphometrySettings(cfg.lacuna_min_volume_um3, cfg.lacuna_min_thickness_um,
                                   cfg.thickness_step_voxels)
    result = morphometry(labels.data, labels.voxel_size_um, settings)
    report: dict[str, Any] = {"morphometry": result.to_dict()}
    if args.followup:
        change = remodeling(labels.data, later.data, labels.voxel_size_um, args.days,
                            min_cluster_voxels=cfg.remodeling_min_cluster_voxels)
        report["remodeling"] = change.to_dict()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(result.table())
    if args.followup:
        r = report["remodeling"]
        print(f"\nremodelling over {args.days:g} days:")
        for key in ("bfr_per_day", "brr_per_day", "mar_um_per_day", "mar_periosteal_um_per_day",
                    "mar_endosteal_um_per_day", "mrr_um_per_day", "ms_bs_per_day", "es_bs_per_day"):
            print(f"  {key:<28} {r[key]:.4g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m nanoscope_daq.analysis.cli train|segment|morphometry ...`)."""
    parser = argparse.ArgumentParser(prog="nanoscope", description="segmentation, morphometry and training")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_train_parser, add_segment_parser, add_morphometry_parser):
        add(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"nanoscope {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
