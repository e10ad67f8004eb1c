"""Simulated training data, networks, the training protocol, tiled inference, post-processing and the commands."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage

from nanoscope_daq.analysis.cli import main
from nanoscope_daq.analysis.datasets import simulate_stack
from nanoscope_daq.analysis.experiment import markdown, run_grid
from nanoscope_daq.analysis.inference import inference_model, pick_device, predict_probabilities, segment_volume
from nanoscope_daq.analysis.labels import Code, class_index, codes_of
from nanoscope_daq.analysis.metrics import merged_codes, otsu_threshold, segmentation_metrics
from nanoscope_daq.analysis.model_files import load_model, save_model
from nanoscope_daq.analysis.models import Sensor3D, build_model
from nanoscope_daq.analysis.postprocess import outer_geometry, postprocess, remove_islands
from nanoscope_daq.analysis.simulated_instruments import simulated_instrument
from nanoscope_daq.analysis.simulated_training import (
    evaluate_otsu,
    incremental_training,
    model_info,
    prepare,
    spread_slices,
    train_on,
)
from nanoscope_daq.analysis.training import TrainSettings, _epoch_order, normalise
from nanoscope_daq.config import load_config
from nanoscope_daq.errors import RefusedInput
from nanoscope_daq.physics.presets import tiny_leg_config
from nanoscope_daq.volume_files import Volume, read_labels, write_labels, write_volume

torch.set_num_threads(1)
PHANTOM = tiny_leg_config(load_config()).sim.phantom
"""The specimen the training slices are cut from."""
TINY = {"base_channels": 4, "depth": 2, "patch": 32, "stride": 32, "batch_size": 8}


@pytest.fixture(scope="module")
def zernike():
    return simulate_stack(simulated_instrument("zernike-a"), PHANTOM, 3, windows=3, depth=5, size=64)


def test_simulated_stacks_are_seeded_and_show_halo_and_shade_off(zernike):
    again = simulate_stack(simulated_instrument("zernike-a"), PHANTOM, 3, windows=3, depth=5, size=64)
    other = simulate_stack(simulated_instrument("zernike-a"), PHANTOM, 4, windows=3, depth=5, size=64)
    assert np.array_equal(zernike.images, again.images) and np.array_equal(zernike.labels, again.labels)
    assert not np.array_equal(zernike.images, other.images)
    labels, images = zernike.labels, zernike.images
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5}
    assert np.count_nonzero(labels == Code.SHADE_OFF) > 0 and np.count_nonzero(labels == Code.LCN) > 0
    # Shade-off: deep bone is darker than bone at edges; halo: the background next to bone is darker than far away.
    assert images[labels == Code.SHADE_OFF].mean() < images[labels == Code.BONE].mean() - 0.05
    bone = (labels == Code.BONE) | (labels == Code.SHADE_OFF)
    near = ndimage.binary_dilation(bone, iterations=3) & ~bone & (labels <= Code.SOFT_TISSUE)
    far = ~ndimage.binary_dilation(bone, iterations=20) & (labels <= Code.SOFT_TISSUE)
    if far.any():
        assert images[near].mean() < images[far].mean()
    # Shade-off is bone that looks nearer void (0) than bone (1): its edge is the image's half-way level.
    assert images[labels == Code.SHADE_OFF].mean() < 0.5 < images[labels == Code.BONE].mean()
    # The second instrument differs in contrast, offset and noise.
    b = simulate_stack(simulated_instrument("zernike-b"), PHANTOM, 3, windows=3, depth=5, size=64)
    assert np.array_equal(merged_codes(b.labels), merged_codes(zernike.labels))  # same specimen
    assert abs(b.images.mean() - images.mean()) > 0.05
    with pytest.raises(ValueError, match="unknown simulated instrument"):
        simulated_instrument("nope")


def test_the_micro_ct_stack_has_marrow_and_no_shade_off():
    stack = simulate_stack(simulated_instrument("microct"), PHANTOM, 5, windows=2, depth=3, size=32)
    assert simulated_instrument("microct").task == "bone"
    assert not np.any(stack.labels == Code.SHADE_OFF) and np.any(stack.labels == Code.SOFT_TISSUE)
    bone, soft = stack.images[stack.labels == Code.BONE], stack.images[stack.labels == Code.SOFT_TISSUE]
    assert bone.mean() > soft.mean() + 0.4


def test_a_global_otsu_threshold_misses_the_lcn(zernike):
    result = evaluate_otsu(prepare(zernike))["merged"]
    assert result["dice"]["lcn"] < 0.6
    rng = np.random.default_rng(0)
    two_modes = np.r_[rng.normal(0.0, 0.1, 5000), rng.normal(1.0, 0.1, 5000)]
    assert otsu_threshold(two_modes) == pytest.approx(0.5, abs=0.05)


def test_metrics_count_accuracy_and_dice():
    target = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    m = segmentation_metrics(predicted, target, 4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["dice"][:3] == pytest.approx([0.5, 0.8, 2 / 3]) and np.isnan(m["dice"][3])


def test_networks_shapes_and_sensor3d_reads_its_neighbours():
    unet = build_model("unet", 4, base=4, depth=2).eval()
    assert unet(torch.zeros(2, 1, 32, 48)).shape == (2, 4, 32, 48)
    net = Sensor3D(4, base=4, depth=2, sequence=3).eval()
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[:, 0] += 1.0  # change only a neighbour slice
    with torch.no_grad():
        assert net(x).shape == (1, 4, 32, 32)
        assert not torch.allclose(net(x), net(y))
    with pytest.raises(ValueError, match="odd number"):
        Sensor3D(4, sequence=2)
    with pytest.raises(ValueError, match="built for 3 slices"):
        net(torch.zeros(1, 5, 32, 32))


def test_training_is_deterministic_and_improves_on_the_start(zernike):
    data = prepare(zernike)
    slices = spread_slices(data, 6)
    settings = TrainSettings(architecture="unet", max_epochs=3, seed=1, **TINY)
    first = train_on(data, slices, settings, progress=False)
    second = train_on(data, slices, settings, progress=False)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    losses = [h["val_loss"] for h in first.history]
    assert len(losses) == 3 and min(losses[1:]) < losses[0]
    assert set(first.history[0]) >= {"epoch", "loss", "val_loss", "val_accuracy", "val_dice"}


def test_an_epoch_repeats_few_patches_until_it_holds_the_minimum(zernike):
    data = prepare(zernike)
    slices = spread_slices(data, 3)  # 12 patches of 32 px: 10 for training
    few = TrainSettings(architecture="unet", max_epochs=1, seed=2, **TINY)
    more = TrainSettings(architecture="unet", max_epochs=1, seed=2, min_patches_per_epoch=35, **TINY)
    order = _epoch_order(np.arange(10), 35, torch.Generator().manual_seed(0))
    assert len(order) == 35 and all(sorted(order[k:k + 10]) == list(range(10)) for k in (0, 10, 20))
    assert len(_epoch_order(np.arange(10), 4, torch.Generator().manual_seed(0))) == 10  # never less than one pass
    one, repeated = (train_on(data, slices, s, progress=False) for s in (few, more))
    assert not torch.equal(one.model.head.weight, repeated.model.head.weight)  # more steps in the one epoch
    with pytest.raises(ValueError, match="min_patches_per_epoch"):
        TrainSettings(min_patches_per_epoch=-1)


def test_incremental_ground_truth_logs_the_corrections(zernike):
    data = prepare(zernike)
    settings = TrainSettings(architecture="unet", max_epochs=1, seed=0, **TINY)
    result, log = incremental_training(data, [3, 6], settings, progress=False)
    assert [step["slices"] for step in log] == [3, 6] and log[0]["corrected_fraction"] is None
    assert 0.0 <= log[1]["corrected_fraction"] <= 1.0 and result.history
    with pytest.raises(ValueError, match="increasing"):
        incremental_training(data, [6, 3], settings, progress=False)


def test_early_stop_after_patience_epochs_without_improvement(zernike):
    data = prepare(zernike)
    # A vanishing learning rate: only batch-norm statistics move, the validation loss soon stalls.
    settings = TrainSettings(architecture="unet", max_epochs=40, patience=3, learning_rate=1e-12, seed=0, **TINY)
    result = train_on(data, spread_slices(data, 3), settings, progress=False)
    losses = [h["val_loss"] for h in result.history]
    assert result.stopped_early and len(losses) < 40
    assert len(losses) == result.best_epoch + 3
    best = losses[result.best_epoch - 1]
    assert best == min(losses) and all(v >= best * (1 - 1e-4) for v in losses[result.best_epoch:])


def test_model_files_round_trip_and_refuse_foreign_files(zernike, tmp_path):
    data = prepare(zernike)
    settings = TrainSettings(architecture="sensor3d", **TINY)
    model = build_model("sensor3d", 4, 4, 2, 3).eval()
    save_model(tmp_path / "m.pt", model, model_info(data, settings, {"note": "test"}))
    loaded, info = load_model(tmp_path / "m.pt")
    assert (info.architecture, info.task, info.sequence, info.provenance["note"]) == ("sensor3d", "lcn", 3, "test")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a nanoscope segmentation model"):
        load_model(tmp_path / "foreign.pt")
    with pytest.raises(RefusedInput, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_tiled_inference_covers_any_slice_size(zernike):
    data = prepare(zernike)
    model = build_model("unet", 4, 4, 2)
    info = model_info(data, TrainSettings(architecture="unet", **TINY), {})
    volume = np.random.default_rng(0).normal(size=(2, 70, 90)).astype(np.float32)
    tiled = segment_volume(model, info, volume, tile=32, overlap=8)
    whole = segment_volume(model, info, volume, tile=128, overlap=8)
    assert tiled.shape == volume.shape and set(np.unique(tiled)) <= {0, 2, 3, 5}
    assert np.mean(tiled == whole) > 0.8  # same network, tiles see less context at their edges
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_inference_folds_batch_norm_without_changing_the_output():
    for net, x in ((build_model("unet", 4, 4, 2), torch.randn(2, 1, 32, 48)),
                   (build_model("sensor3d", 4, 4, 2), torch.randn(2, 3, 32, 32))):
        net.train()(x)  # move the batch-norm statistics away from their start
        net.eval()
        fast = inference_model(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
        with torch.no_grad():
            assert torch.allclose(net(x), fast(x), atol=1e-5)
    # A slice that fits in one tile goes through whole: the same as the network's own argmax / softmax.
    model, info = load_model()
    volume = simulate_stack(simulated_instrument("zernike-a"), PHANTOM, 5, windows=1, depth=3, size=64).images[0]
    with torch.no_grad():
        logits = model(torch.from_numpy(normalise(volume))[:, None])
    assert np.array_equal(segment_volume(model, info, volume, tile=64), codes_of(logits.argmax(1).numpy(), "lcn"))
    probs = np.stack(list(predict_probabilities(model, info, volume, tile=64)))
    assert np.allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-5)


def test_the_experiment_grid_resumes_from_its_work_folder(tmp_path):
    first = run_grid(["unet"], [32], [4], epochs=1, seed=0, phantom=PHANTOM, transfer=False, work=tmp_path,
                     log=lambda line: None)
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    again = run_grid(["unet"], [32], [4], epochs=1, seed=0, phantom=PHANTOM, transfer=False, work=tmp_path,
                     log=lambda line: None)
    assert (tmp_path / "runs.jsonl").read_text().splitlines() == lines and len(lines) == 1  # nothing retrained
    assert again["runs"] == first["runs"] and (tmp_path / "goal_model.pt").is_file()
    with pytest.raises(ValueError, match="holds runs of another grid"):
        run_grid(["unet"], [32], [4], epochs=2, seed=0, phantom=PHANTOM, transfer=False, work=tmp_path)


def test_transfer_replicates_are_paired_and_leave_the_start_network_unchanged(tmp_path):
    results = run_grid(["unet"], [32], [4], epochs=1, seed=0, phantom=PHANTOM, transfer=True, work=tmp_path,
                       log=lambda line: None, transfer_replicates=2)
    transfer = results["transfer"]
    first, second = (r["pretrained"]["held_out"]["accuracy"] for r in transfer["replicates"])
    assert first != second  # other slices and seed per replicate
    assert [r["seed"] for r in transfer["replicates"]] == [0, 1]
    summary = transfer["summary"]
    accuracies = [r["scratch"]["held_out"]["accuracy"] for r in transfer["replicates"]]
    assert summary["accuracy"]["scratch"]["mean"] == pytest.approx(np.mean(accuracies))
    assert summary["accuracy"]["scratch"]["sd"] == pytest.approx(np.std(accuracies, ddof=1))
    assert 0 <= summary["loss"]["pretrained_better"] <= 2
    assert 0.25 <= summary["accuracy"]["wilcoxon_p"] <= 1  # two pairs: one-sided p is at least 1/4
    # Each replicate fine-tunes a copy of the goal network: replicate 1 trained again without replicate 0
    # before it (read back from the work folder) comes out the same.
    again = tmp_path / "again"
    again.mkdir()
    for name in ("grid.json", "goal_model.pt"):
        (again / name).write_bytes((tmp_path / name).read_bytes())
    kept = [line for line in (tmp_path / "runs.jsonl").read_text().splitlines()
            if '"transfer/pretrained/1"' not in line]
    (again / "runs.jsonl").write_text("\n".join(kept) + "\n")
    alone = run_grid(["unet"], [32], [4], epochs=1, seed=0, phantom=PHANTOM, transfer=True, work=again,
                     log=lambda line: None, transfer_replicates=2)
    assert len((again / "runs.jsonl").read_text().splitlines()) == len(kept) + 1  # only that one trained
    assert (alone["transfer"]["replicates"][1]["pretrained"]["held_out"]
            == transfer["replicates"][1]["pretrained"]["held_out"])
    table = markdown(results, "cmd")
    assert "| 1 | pretrained | 1 |" in table and "fine-tuned better" in table
    assert f"| A's network, not fine-tuned | 0 | {transfer['not_fine_tuned']['accuracy']:.4f} |" in table
    assert summary["accuracy"]["scratch"]["worst"] == min(accuracies)


def test_postprocessing_merges_shade_off_removes_islands_and_closes():
    labels = np.zeros((10, 30, 30), np.uint8)
    labels[:, 5:25, 5:25] = Code.BONE
    labels[:, 10:20, 10:20] = Code.SHADE_OFF
    labels[4:6, 14:16, 14:16] = Code.LCN  # 8 voxels: noise
    labels[2:8, 6:9, 6:9] = Code.LCN  # 54 voxels: kept below 50, removed at 100
    labels[:, 22, 5:25] = Code.BACKGROUND  # a one-voxel crack
    labels[0, 0, 0] = Code.BONE  # a speck in the background
    out = postprocess(labels, min_island=20, closing_radius=1)
    assert not np.any(out == Code.SHADE_OFF)
    assert out[5, 15, 15] == Code.BONE and out[5, 7, 7] == Code.LCN and out[0, 0, 0] == Code.BACKGROUND
    assert np.all(out[1:-1, 22, 6:24] == Code.BONE)  # the crack is closed
    assert remove_islands(labels, 100)[5, 7, 7] != Code.LCN
    envelope = outer_geometry(out)
    assert envelope[5, 15, 15] and not envelope[5, 1, 1]


def test_train_segment_and_morphometry_commands(tmp_path, capsys):
    model = tmp_path / "model.pt"
    assert main(["train", "-o", str(model), "--architecture", "unet", "--slices", "4", "--epochs", "2",
                 "--windows", "2", "--depth", "3", "--size", "64", "--batch", "8", "--no-progress"]) == 0
    metrics = json.loads(model.with_suffix(".json").read_text())
    assert len(metrics["history"]) == 2 and 0 <= metrics["held_out"]["accuracy"] <= 1
    assert "lcn" in metrics["otsu"]["merged"]["dice"] and metrics["provenance"]["instrument"] == "zernike-a"
    stack = simulate_stack(simulated_instrument("zernike-a"), PHANTOM, 9, windows=1, depth=4, size=64)
    volume_file, labels_file = tmp_path / "volume.h5", tmp_path / "labels.h5"
    write_volume(volume_file, Volume(stack.images[0], 0.5, {"made_by": "test"}))
    assert main(["segment", str(volume_file), "-o", str(labels_file), "--model", str(model), "--device", "cpu"]) == 0
    labels = read_labels(labels_file)
    assert labels.data.shape == (4, 64, 64) and labels.voxel_size_um == 0.5
    assert labels.provenance["architecture"] == "unet" and labels.provenance["source"]["made_by"] == "test"
    with h5py.File(labels_file) as h5:
        assert h5["envelope"].shape == (4, 64, 64)
    # Morphometry of the ground truth of the same stack (the tiny network's labels may hold no bone).
    truth_file = tmp_path / "truth.h5"
    write_labels(truth_file, Volume(np.where(stack.labels[0] == Code.SHADE_OFF, 2, stack.labels[0]), 0.5))
    capsys.readouterr()
    assert main(["morphometry", str(truth_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    truth = stack.labels[0]
    lcn, bone = np.count_nonzero(truth == Code.LCN), np.count_nonzero(np.isin(truth, [2, 3, 5]))
    assert report["morphometry"]["porosity"] == pytest.approx(lcn / bone)
    assert main(["segment", str(tmp_path / "none.h5"), "-o", str(labels_file)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert class_index(np.array([5]), "lcn")[0] == 3


def test_the_shipped_model_finds_the_lacunae_of_an_unseen_phantom():
    from nanoscope_daq.analysis.metrics import merged_metrics
    from nanoscope_daq.analysis.segmentation import segment_array

    stack = simulate_stack(simulated_instrument("zernike-a"), PHANTOM, 2024, windows=2, depth=6, size=128)
    volume = stack.images.reshape(-1, 128, 128)  # two windows one after the other: a 12-slice volume
    truth = merged_codes(stack.labels.reshape(-1, 128, 128))
    labels, envelope, provenance = segment_array(volume, 0.5, load_config().analysis)
    assert provenance["architecture"] == "unet" and provenance["model"] == "shipped default"
    assert set(np.unique(labels)) <= {0, 2, 3}  # shade-off merged into bone
    scores = merged_metrics(labels, truth, "lcn")
    assert scores["dice"]["lcn"] > 0.85 and scores["accuracy"] > 0.98
    porosity = np.count_nonzero(labels == Code.LCN) / np.count_nonzero(np.isin(labels, [2, 3]))
    true_porosity = np.count_nonzero(truth == Code.LCN) / np.count_nonzero(np.isin(truth, [2, 3]))
    assert porosity == pytest.approx(true_porosity, rel=0.15)
    assert envelope[np.isin(truth, [2, 3])].mean() > 0.99
