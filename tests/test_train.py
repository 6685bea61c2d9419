"""htcnns train on tiny phantoms: it learns (loss falls), exports a verifiable model, records provenance."""

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from scipy import ndimage

from htcnns.cli import build_parser
from htcnns.errors import InputError, SettingsError, WeightsError
from htcnns.networks import build_network
from htcnns.training import loop
from htcnns.training.augment import RandThickSlicesd
from htcnns.training.command import (
    Sample,
    TrainConfig,
    _data_paragraph,
    case_maker,
    data_description,
    fit,
    initial_network,
    make_samples,
    network_config,
    random_patch,
    teacher,
    to_sample,
    train,
)
from htcnns.training.data import paired_patch
from htcnns.weights import load_model


def test_training_exports_a_loadable_model_with_provenance(tmp_path: Path):
    config = TrainConfig(architecture="unet", output=str(tmp_path / "unet"), steps=4, phantoms=2,
                         validation_phantoms=1, patch_size=32, roi_size=32, phantom_shape=(64, 64, 48), threads=1)
    manifest = train(config)
    loaded = load_model(tmp_path / "unet")
    assert loaded.manifest.sha256 == manifest.sha256 and loaded.manifest.roi_size == (32, 32, 32)
    provenance = json.loads((tmp_path / "unet" / "manifest.json").read_text())["provenance"]
    assert provenance["steps"] == 4 and provenance["seed"] == 0 and provenance["deep_supervision"] is True
    run_config = json.loads((tmp_path / "unet" / "train-config.json").read_text())
    assert run_config["seed"] == 0 and run_config["config"]["steps"] == 4 and run_config["training_seeds"] == [0, 1]
    assert (tmp_path / "unet" / "training-curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "unet" / "checkpoint.json").read_text())["step"] == 4
    assert set(provenance["synthetic_validation_dice"]) == {"WT", "TC", "ET"}
    card = (tmp_path / "unet" / "MODEL_CARD.md").read_text()
    assert "synthetic phantoms only" in card.lower() and manifest.sha256 in card

    continued = train(replace(config, output=str(tmp_path / "continued"), init_from=str(tmp_path / "unet"),
                              steps=1, phantoms=1, seed=1))
    assert continued.provenance["initialised_from"]["sha256"] == manifest.sha256
    assert manifest.sha256[:12] in (tmp_path / "continued" / "MODEL_CARD.md").read_text()
    with pytest.raises(WeightsError, match="cannot initialise from it"):
        train(replace(config, architecture="axial_unet", init_from=str(tmp_path / "unet")))


def test_random_patch_shapes_and_tumour_bias():
    image = np.zeros((4, 40, 40, 40), np.float32)
    regions = np.zeros((3, 40, 40, 40), np.float32)
    regions[:, 30:34, 30:34, 30:34] = 1
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(30):
        patch, target = random_patch(Sample(image, regions), 16, rng)
        assert patch.shape == (4, 16, 16, 16) and target.shape == (3, 16, 16, 16)
        hits += target.any()
    assert hits >= 15  # two in three patches are centred on tumour
    always = [random_patch(Sample(image, regions), 16, rng, foreground=1.0)[1].any() for _ in range(20)]
    assert all(always)
    never = sum(random_patch(Sample(image, regions), 16, rng, foreground=0.0)[1].any() for _ in range(60))
    assert never < 30  # the tumour fills 4^3 of 40^3 voxels: a random patch rarely holds it


@pytest.mark.parametrize(("field", "option"), [("foreground_share", "--foreground-share"),
                                               ("thick_slices", "--thick-slices")])
def test_shares_outside_zero_to_one_are_refused(tmp_path: Path, field: str, option: str):
    config = TrainConfig(architecture="unet", output=str(tmp_path / "unet"), steps=1, **{field: 1.5})
    with pytest.raises(SettingsError, match=f"{option} 1.5"):
        train(config)
    assert not (tmp_path / "unet").exists()


def test_thick_slices_average_along_one_axis_per_channel():
    stripes = (np.arange(24) % 2).astype(np.float32)  # 0, 1, 0, 1 ...: any slab of 2+ voxels flattens it
    channels = [np.broadcast_to(stripes.reshape([-1 if i == axis else 1 for i in range(3)]), (24,) * 3)
                for axis in range(3)]
    image = np.stack(channels + [np.full((24,) * 3, 3.0, np.float32)])
    transform = RandThickSlicesd("image", prob=1.0)
    transform.set_random_state(seed=0)
    flattened = np.zeros(3, int)
    for _ in range(30):
        out = np.asarray(transform({"image": image})["image"])
        assert out.shape == image.shape and np.allclose(out[3], 3.0)  # what is constant stays
        for axis in range(3):
            if np.allclose(out[axis], image[axis]):
                continue  # re-sliced along another axis: unchanged
            assert out[axis].std() < 0.4 * image[axis].std() and abs(out[axis].mean() - 0.5) < 0.1
            flattened[axis] += 1
    assert 3 <= flattened.min() and flattened.max() <= 20  # about a third each, channels independent
    untouched = RandThickSlicesd("image", prob=0.0)
    assert np.array_equal(np.asarray(untouched({"image": image})["image"]), image)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "sri24-brats-space").is_dir(), reason="../shared/data is absent")
def test_synthseg_cases_feed_training_and_refresh(tmp_path: Path):
    config = TrainConfig(architecture="unet", output=str(tmp_path / "unet"), steps=3, phantoms=1, patch_size=32,
                         data="synthseg", atlas=str(SHARED_DATA), refresh_every=2)
    make_case = case_maker(config)
    samples = make_samples(range(1), make_case)
    assert samples[0].image.shape[0] == 4 and samples[0].regions[0].any()
    renewed = []
    network = build_network("unet", network_config(config))
    losses = fit(network, samples, config, lambda k: renewed.append(k) or to_sample(make_case(10 + k)))
    assert len(losses) == 3 and np.isfinite(losses).all() and renewed == [0]
    described = data_description(config, 0, 1)
    assert "CC BY-NC-SA 3.0" in described and "CC BY-SA 3.0" in described and "held out" in described
    assert "non-commercial" in _data_paragraph(described)
    assert "ssa-like domain" in data_description(replace(config, domain="ssa"), 0, 1)
    ssa_case, adult_case = case_maker(replace(config, domain="ssa"))(0), make_case(0)
    assert ssa_case.label.any() and not np.array_equal(ssa_case.image, adult_case.image)


def test_synthseg_without_the_atlas_fails_before_training(tmp_path: Path):
    config = TrainConfig(architecture="unet", output=str(tmp_path / "unet"), data="synthseg",
                         atlas=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="synthseg sources not found"):
        train(config)
    assert not (tmp_path / "unet").exists()


TINY = {"architecture": "unet", "phantoms": 2, "validation_phantoms": 1, "patch_size": 32, "roi_size": 32,
        "batch_size": 1, "threads": 1, "phantom_shape": (48, 48, 32)}


def test_interrupted_run_resumes_to_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = TrainConfig(output=str(tmp_path / "whole"), steps=4, checkpoint_every=2, refresh_every=1,
                         validate_every=2, **TINY)
    whole = train(config)
    cut = replace(config, output=str(tmp_path / "cut"))
    real_step, calls = loop.train_step, []

    def stop_at_third_step(*args):
        calls.append(len(calls))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(loop, "train_step", stop_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["step"] == 2
    with pytest.raises(SettingsError, match=r"other settings \(steps\)"):
        train(replace(cut, steps=5, resume=True))
    resumed = train(replace(cut, resume=True))
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    whole_state = json.loads((tmp_path / "whole" / "checkpoint.json").read_text())
    assert state["step"] == 4 and state["progress"]["losses"] == whole_state["progress"]["losses"]
    assert [e["step"] for e in state["progress"]["evaluations"]] == [2]
    assert resumed.sha256 == whole.sha256  # bitwise the weights of the uninterrupted run
    assert resumed.provenance["synthetic_validation_dice"] == whole.provenance["synthetic_validation_dice"]
    assert json.loads((tmp_path / "cut" / "train-config.json").read_text())["resumed_at_step"] == 2


def test_frozen_encoder_keeps_the_parent_weights(tmp_path: Path, tiny_models: Path):
    config = TrainConfig(output=str(tmp_path / "tuned"), steps=2, init_from=str(tiny_models / "unet"),
                         freeze_encoder=True, **TINY)
    manifest = train(config)
    parent = load_model(tiny_models / "unet").network.state_dict()
    child = load_model(tmp_path / "tuned").network.state_dict()
    encoder = [name for name in parent if name.startswith("encoder.")]
    assert encoder and all(torch.equal(parent[name], child[name]) for name in encoder)
    assert not torch.equal(parent["head.weight"], child["head.weight"])
    assert manifest.provenance["frozen_encoder"] == ["encoder."]
    with pytest.raises(SettingsError, match="--freeze-encoder needs --init-from"):
        train(replace(config, init_from=""))


def test_fold_run_validates_on_its_fold_and_tunes_the_et_threshold(tmp_path: Path):
    config = TrainConfig(output=str(tmp_path / "fold1"), steps=2, folds=2, fold=1, tune_et_threshold=True,
                         checkpoint_every=0, **TINY)
    manifest = train(config)
    provenance = manifest.provenance
    assert provenance["fold"] == {"folds": 2, "fold": 1} and provenance["validation_seeds"] == [1]
    tuning = provenance["et_threshold_tuning"]
    assert tuning["mean_et_dice"][str(tuning["chosen"])] == max(tuning["mean_et_dice"].values())
    assert load_model(tmp_path / "fold1").manifest.postprocessing.et_threshold == tuning["chosen"]
    run_config = json.loads((tmp_path / "fold1" / "train-config.json").read_text())
    assert run_config["training_seeds"] == [0] and run_config["validation_seeds"] == [1]
    assert not (tmp_path / "fold1" / "checkpoint.json").exists()
    assert "fold 1 of 2" in (tmp_path / "fold1" / "MODEL_CARD.md").read_text()


def test_cli_flags_reach_the_config(monkeypatch: pytest.MonkeyPatch):
    seen = []

    def record(config: TrainConfig) -> SimpleNamespace:
        seen.append(config)
        return SimpleNamespace(provenance={"validation_dice": {}, "validation_cases": []})

    monkeypatch.setattr("htcnns.training.command.train", record)
    args = build_parser().parse_args(["train", "--architecture", "unet", "--output", "out", "--no-deep-supervision",
                                      "--folds", "3", "--fold", "2", "--resume", "--checkpoint-every", "7",
                                      "--validate-every", "5", "--freeze-encoder", "--tune-et-threshold",
                                      "--data", "synthseg", "--domain", "paediatric"])
    assert args.run(args) == 0
    assert seen[0] == TrainConfig(architecture="unet", output="out", deep_supervision=False, folds=3, fold=2,
                                  resume=True, checkpoint_every=7, validate_every=5, freeze_encoder=True,
                                  tune_et_threshold=True, data="synthseg", domain="paediatric")
    defaults = build_parser().parse_args(["train", "--architecture", "unet", "--output", "out"])
    assert defaults.deep_supervision and defaults.checkpoint_every == 100 and not defaults.resume


def test_paired_patches_are_one_patch_augmented_alike_but_for_thick_slices():
    rng = np.random.default_rng(3)
    image = np.stack([ndimage.gaussian_filter(rng.normal(size=(40, 40, 40)), 3) for _ in range(4)])
    image = (image / image.std()).astype(np.float32)  # smooth: thick slices blur it without erasing it
    regions = np.zeros((3, 40, 40, 40), np.float32)
    regions[:, 10:30, 10:30, 10:30] = 1
    thick, thin, target = paired_patch(Sample(image, regions), 24, rng, 0.5, 1.0)
    assert thick.shape == thin.shape == (4, 24, 24, 24) and target.shape == (3, 24, 24, 24)
    assert not np.allclose(thick, thin)
    for channel in range(4):  # the same box, flip and affine: thin and thick of one channel correlate closely
        assert np.corrcoef(thick[channel].ravel(), thin[channel].ravel())[0, 1] > 0.8
    other, *_ = paired_patch(Sample(image, regions), 24, rng, 0.5, 1.0)
    assert np.corrcoef(other[0].ravel(), thin[0].ravel())[0, 1] < 0.8


def test_thick_consistency_adds_the_frozen_parents_disagreement_to_the_loss(tmp_path: Path, tiny_models: Path):
    config = TrainConfig(output=str(tmp_path / "tuned"), steps=2, init_from=str(tiny_models / "unet"),
                         thick_slices=1.0, thick_consistency=1.0, **TINY)
    with pytest.raises(SettingsError, match="--thick-consistency needs --init-from"):
        train(replace(config, init_from=""))
    with pytest.raises(SettingsError, match="--thick-consistency needs"):
        train(replace(config, thick_slices=0.0))
    pool = [to_sample(case_maker(config)(0))]
    parent = teacher(config)
    assert parent is not None and not any(p.requires_grad for p in parent.parameters())
    losses = []
    for frozen in (None, parent):
        network, _ = initial_network(config)
        learner = loop.make_learner(network, config)
        losses.append(loop.train_step(learner, [pool], config, DiceCELoss(sigmoid=True), teacher=frozen))
    assert losses[1] > losses[0] + 0.05  # the same thick patches, plus the disagreement with the parent on thin ones
    manifest = train(config)
    assert manifest.provenance["config"]["thick_consistency"] == 1.0
