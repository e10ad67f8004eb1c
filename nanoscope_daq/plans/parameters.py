"""What each plan parameter means, in one place (shown by ``nanoscope scan PLAN --help``)."""

from __future__ import annotations

PARAMETER_HELP: dict[str, str] = {
    "projections": "angles per tomogram (equally spaced over range_deg, endpoint excluded)",
    "range_deg": "angular range of one tomogram (deg; negative turns backwards)",
    "start_deg": "first angle (deg)",
    "exposure_s": "exposure per frame (s)",
    "binning": "camera binning: 1, 2, 4 or 8",
    "kv": "source high voltage (kV)",
    "power_w": "source power (W)",
    "velocity": "rotation speed (deg/s); default: the fastest the camera keeps up with",
    "darks": "darks per set (default: scan.darks in the configuration)",
    "flats": "flats per set (default: scan.flats in the configuration)",
    "flats_when": "flats 'before', 'after', 'both' or 'none' of the projections",
    "gating": "respiratory gating: 'none', 'prospective' (step scans) or 'retrospective' (tagging)",
    "subject": "subject metadata as JSON: subject_id, cohort, treatment, day, anaesthesia (in vivo: required)",
    "tomograms": "tomograms in the time series",
    "interval_s": "start a tomogram every interval_s seconds (0: back to back)",
    "rotation": "'continuous' (one way) or 'back-and-forth' (reverse after each tomogram)",
    "flats_every": "flats after every this many tomograms (0: only before the first and after the last)",
    "loads_n": "loads to hold, in order (N)",
    "hold_s": "extra hold at each load once the force is stable (s)",
    "unload_at_end": "unload to 0 N after the last load step",
    "target_n": "force to load towards (N)",
    "speed_mm_per_min": "crosshead speed (mm/min)",
    "max_tomograms": "tomograms at most while loading",
}
