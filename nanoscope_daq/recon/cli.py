"""``nanoscope recon FILE.nxs -o VOLUME.h5``: the sub-command's options and what it runs.

``add_recon_parser(subparsers)`` registers it on the ``nanoscope`` command's sub-parsers;
defaults come from the configuration's [recon] section (``--config`` or
$NANOSCOPE_CONFIG), options override them.
"""

from __future__ import annotations

import argparse
import sys

from ..config import (
    CALIBRATION_PARAMETERS,
    RECON_ALGORITHMS,
    RECON_FILTERS,
    ConfigError,
    load_config,
    parameter_names,
)
from .errors import ReconInputError
from .nxtomo_reader import NxTomoScan


def add_recon_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``recon`` sub-command to ``subparsers``; it runs :func:`run_recon`."""
    parser = subparsers.add_parser("recon", help="reconstruct an NXtomo file into a volume file",
                                   description="Reconstruct an NXtomo file (this instrument's or another's) into "
                                               "/volume (float32, z-y-x, 1/mm); see docs/recon.md.")
    parser.add_argument("nxs", help="NXtomo (.nxs) file")
    parser.add_argument("-o", "--output", required=True, help="volume file to write (.h5)")
    parser.add_argument("--config", help="TOML file overriding the defaults (see default_config.toml [recon])")
    parser.add_argument("--cor", type=float, help="detector column of the rotation axis (default: found automatically)")
    parser.add_argument("--algorithm", choices=RECON_ALGORITHMS,
                        help="fbp (FDK on cone beam), fdk, or fourier (parallel)")
    parser.add_argument("--filter", choices=RECON_FILTERS, help="ramp filter window")
    parser.add_argument("--cutoff", type=float, help="filter cutoff, fraction of Nyquist (0 < c <= 1)")
    parser.add_argument("--rings", type=int, metavar="PX", help="ring removal median width (odd px; 0: off)")
    parser.add_argument("--zingers", type=float, metavar="T", help="zinger threshold (relative; 0: off)")
    parser.add_argument("--pixel-um", type=float, help="pixel at the sample (um) when the file lacks x_pixel_size")
    parser.add_argument("--paganin", type=float, metavar="DELTA_BETA",
                        help="single-distance phase retrieval with this delta/beta (off by default)")
    parser.add_argument("--energy-kev", type=float, help="X-ray energy for --paganin (default: the file's)")
    parser.add_argument("--distance-mm", type=float,
                        help="effective propagation distance for --paganin (default: the file's)")
    parser.add_argument("--calibrate", metavar="PARAMS", type=_parameter_list, default=(),
                        help="estimate these geometry parameters from the data, comma-separated: "
                             f"{','.join(CALIBRATION_PARAMETERS)} (e.g. cor,tilt; distance and offsets: cone beam)")
    parser.add_argument("--motion", nargs="?", const="rigid", choices=("rigid", "respiratory"),
                        help="estimate and undo the specimen's motion: rigid (default; a translation per "
                             "projection) or respiratory (the breath, from the frames' recorded respiratory phase)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    parser.set_defaults(func=run_recon)
    return parser


def _parameter_list(text: str) -> tuple[str, ...]:
    names = parameter_names(text)
    unknown = [name for name in names if name not in CALIBRATION_PARAMETERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown calibration parameter(s) {', '.join(unknown) or '(none)'}; "
                                         f"give a comma-separated list of: {', '.join(CALIBRATION_PARAMETERS)}")
    return names


def run_recon(args: argparse.Namespace) -> int:
    """Run the reconstruction ``args`` describe and print the volume's path; exit status 0, or 2 on bad input."""
    overrides = {key: value for key, value in (("filter_cutoff", args.cutoff), ("ring_filter_px", args.rings),
                                                ("zinger_threshold", args.zingers)) if value is not None}
    try:
        settings = load_config(args.config, recon=overrides).recon
        NxTomoScan(args.nxs).close()  # a missing or foreign file is refused before torch loads (2-3 s)
        from .offline import PhaseRetrieval, reconstruct_file

        phase = PhaseRetrieval(args.paganin, args.energy_kev, args.distance_mm) if args.paganin else None
        path = reconstruct_file(args.nxs, args.output, cor=args.cor, algorithm=args.algorithm, filter=args.filter,
                                device=args.device, pixel_um=args.pixel_um, phase=phase, settings=settings,
                                calibrate=args.calibrate, motion=args.motion)
    except (ReconInputError, ConfigError) as exc:
        print(f"nanoscope recon: {exc}", file=sys.stderr)
        return 2
    import h5py

    with h5py.File(path, "r") as h5:
        prov = h5["provenance"].attrs
        print(f"{path}  volume {h5['volume'].shape} voxel {h5['volume'].attrs['voxel_size_um']:.4g} um  "
              f"{prov['algorithm']} / {prov['filter']}  axis at column {prov['cor_column']:.2f} ({prov['cor_method']})")
    return 0

