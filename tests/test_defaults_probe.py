"""benchmarks/defaults_probe.py: its DINOv2 variants are what the backbone computes, and it runs end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from funad.config import POOL_MAX_PATCHES
from funad.features.backbones.onnx_dinov2 import OnnxDinov2Backbone, packaged_model_path

from conftest import TINY, benchmark_script


@pytest.fixture(scope="module")
def probe():
    return benchmark_script("defaults_probe")


def test_each_dino_variant_is_the_backbone_with_those_blocks(probe):
    backbone = OnnxDinov2Backbone(packaged_model_path(), layers=probe.EXTRACTED_BLOCKS, combine="concat",
                                  image_size=28)
    # features_from_blocks reads only the combination settings, so one backbone serves every variant.
    random_tokens = torch.randn(3, 2, 1 + 4, 384, generator=torch.Generator().manual_seed(0))  # 2 images, CLS + 2x2
    tokens = dict(zip(probe.EXTRACTED_BLOCKS, random_tokens))
    extracted = backbone.features_from_blocks(list(tokens.values())).patches.half().numpy()
    affine = backbone.norm_weight, backbone.norm_bias
    for name, variant in probe.DINO_VARIANTS.items():
        backbone.combine, backbone.local_kernel = variant.combine, variant.local_kernel
        # Without the norm's scale and shift: a norm whose scale is 1 and shift 0.
        backbone.norm_weight, backbone.norm_bias = affine if variant.norm_affine else (
            torch.ones_like(affine[0]), torch.zeros_like(affine[1]))
        expected = backbone.features_from_blocks([tokens[block] for block in variant.blocks]).patches.numpy()
        derived = variant.derive(extracted, backbone.grid)
        assert derived.dtype == np.float16 and derived.shape == expected.shape, name
        np.testing.assert_allclose(derived, expected, atol=1e-2, err_msg=name)


def test_probe_writes_a_record_per_variant_scorer_and_seed_and_summarises_them(probe, demo_data, tmp_path, capsys):
    out = tmp_path / "probe.jsonl"
    settings = {**{k: v for k, v in TINY.items() if k != "backbone"}, "image_size": 56, "epochs": 1}
    flags = [item for key, value in settings.items() for item in ("--" + key.replace("_", "-"), str(value))]
    common = [str(demo_data.root), "--seeds", "0", "--contamination", "0.1", "--out", str(out), "--random-weights",
              "--cache-dir", str(tmp_path / "cache"), "--quiet", *flags]
    # Every scorer on today's default features, and every variant with one scorer.
    assert probe.main([*common, "--variants", "m468", "--scorers", *probe.SCORERS]) == 0
    assert probe.main([*common, "--scorers", "patchcore"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["variant"], r["scorer"]) for r in records] == (
        [("m468", s) for s in probe.SCORERS] + [(v, "patchcore") for v in probe.VARIANTS])
    for record in records:
        assert record["num_moved"] == 2 and record["fit_seconds"] > 0 and record["predict_seconds"] > 0
        for setting in ("no-overlap", "overlap"):
            assert 0.0 <= record[setting]["image_auroc"] <= 1.0 and 0.0 <= record[setting]["pixel_auroc"] <= 1.0
        trains_local_net = record["scorer"] in ("knn_trusted_half", "knn_share90", "funad", "local_net", "blend")
        assert record["image_size"] == 56 and record["align_object"] is False  # textures: auto does not turn
        assert record["pool_cap"] == (None if record["scorer"] == "knn_trusted_half" else POOL_MAX_PATCHES)
        assert (record["local_net_train_auroc"] is not None) == trains_local_net

    assert probe.main(["--summary", str(out)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + len(records) - 1  # m468 with patchcore was run twice: the rerun replaces it
    assert table[0].startswith("| dataset | variant | scorer | px | aspect | aligned | pool cap | seeds | no-overlap "
                               "image |")


def test_summary_is_the_mean_over_seeds_with_dashes_for_what_is_missing(probe, tmp_path, capsys):
    def record(seed, image_auroc):
        metrics = {"image_auroc": image_auroc}
        return {"dataset": "tile", "variant": "b6", "scorer": "patchcore", "seed": seed, "no-overlap": metrics,
                "overlap": metrics, "local_net_train_auroc": None, "fit_seconds": 2.0, "predict_seconds": 1.0}

    out = tmp_path / "probe.jsonl"
    out.write_text("".join(json.dumps(record(seed, value)) + "\n" for seed, value in ((0, 0.9), (1, 0.8))))
    assert probe.main(["--summary", str(out)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[2]
    # Records written before sizes, aspect, alignment and caps were named: dashes, the images stretched, not turned.
    assert row == "| tile | b6 | patchcore | - | stretched | no | - | 2 | 85.00 | - | 85.00 | - | - | 2.0 | 1.0 |"


def test_summary_keeps_each_input_size_aspect_alignment_and_pool_cap_apart(probe, tmp_path, capsys):
    def record(size, keep_aspect, align_object, cap, image_auroc):
        metrics = {"image_auroc": image_auroc}
        return {"dataset": "tile", "variant": "m468", "scorer": "patchcore", "seed": 0, "image_size": size,
                "keep_aspect": keep_aspect, "align_object": align_object, "pool_cap": cap, "no-overlap": metrics,
                "overlap": metrics, "local_net_train_auroc": None, "fit_seconds": 2.0, "predict_seconds": 1.0}

    out = tmp_path / "probe.jsonl"
    rows = [(224, False, False, 60000, 0.9), (224, True, False, 60000, 0.85), (224, False, True, 60000, 0.95),
            (322, False, False, 60000, 0.8), (322, False, False, 123984, 0.7),
            (322, False, False, 123984, 0.75)]  # the last one reruns
    out.write_text("".join(json.dumps(record(*row)) + "\n" for row in rows))
    assert probe.main(["--summary", str(out)]) == 0
    table = capsys.readouterr().out.strip().splitlines()[2:]
    assert [line.split(" | ")[3:9] for line in table] == [
        ["224", "stretched", "no", "60000", "1", "90.00"], ["224", "kept", "no", "60000", "1", "85.00"],
        ["224", "stretched", "yes", "60000", "1", "95.00"], ["322", "stretched", "no", "60000", "1", "80.00"],
        ["322", "stretched", "no", "123984", "1", "75.00"]]


def test_scaled_pool_cap_keeps_the_share_of_a_16x16_grid(probe):
    assert probe.pool_cap_for(60_000, False, (23, 23)) == 60_000
    assert probe.pool_cap_for(60_000, True, (16, 16)) == 60_000
    assert probe.pool_cap_for(60_000, True, (23, 23)) == 123_984  # 322 px
    assert probe.pool_cap_for(60_000, True, (32, 32)) == 240_000  # 448 px


def test_every_capped_scorer_is_built_with_the_probe_pool_cap(probe, monkeypatch):
    from funad.features.containers import FeatureSet

    rng = np.random.default_rng(0)
    features = FeatureSet([Path(f"{i}.png") for i in range(6)],
                          [rng.normal(size=(16, 8)).astype(np.float16) for _ in range(6)],
                          [rng.normal(size=8).astype(np.float16) for _ in range(6)], (4, 4))
    training = probe.Training(features, 0, [False] * 6, {}, pool_cap=40)
    for name in ("patchcore", "corroborated", "softpatch"):
        assert probe.SCORERS[name](training).scorer.pool_max_patches == 40, name

    built = []

    class FakeFunAD:  # what the FUN-AD scorers would configure, without training a Local-Net
        def __init__(self, **settings):
            built.append(settings)
            self.scorer_, self.train_scores_ = None, np.zeros(6)

        def fit_features(self, features):
            pass

    monkeypatch.setattr(probe, "FunAD", FakeFunAD)
    for name in ("knn_share90", "funad", "knn_trusted_half"):
        probe.SCORERS[name](training)
    assert [settings["knn_pool_max_patches"] for settings in built] == [40, 40, None]
    assert probe.UNCAPPED == ("knn_trusted_half",)


def test_records_name_the_input_size_grid_and_scaled_pool_cap(probe, demo_data, tmp_path):
    out = tmp_path / "probe.jsonl"
    settings = {**{k: v for k, v in TINY.items() if k != "backbone"}, "image_size": 56}
    flags = [item for key, value in settings.items() for item in ("--" + key.replace("_", "-"), str(value))]
    assert probe.main([str(demo_data.root), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet",
                       "--variants", "m468", "--scorers", "patchcore", "--pool-cap", "512", "--scale-pool-cap",
                       *flags]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["image_size"] == 56 and record["grid"] == [4, 4]
    assert record["pool_cap"] == 512 * 16 // 256


def test_without_an_input_size_letterboxed_photos_get_funads_side_and_scaled_pool(probe, photos_of_two_shapes,
                                                                                  tmp_path):
    out = tmp_path / "probe.jsonl"
    settings = {k: v for k, v in TINY.items() if k not in ("backbone", "image_size")}
    flags = [item for key, value in settings.items() for item in ("--" + key.replace("_", "-"), str(value))]
    assert probe.main([str(photos_of_two_shapes), "--out", str(out), "--random-weights", "--quiet", "--variants",
                       "m468", probe.OTHER_BACKBONE, "--scorers", "patchcore", "--pool-cap", "512", *flags]) == 0
    dino, other = [json.loads(line) for line in out.read_text().splitlines()]
    assert dino["keep_aspect"] and dino["image_size"] == 308  # 224 x 4/3, rounded up to 22 patches of 14 px
    assert dino["grid"] == [22, 22] and dino["pool_cap"] == 512 * 22 * 22 // 256
    # Each backbone's own choice, as funad makes it: EfficientNet-Lite0's cells are 8 px (28 x 28 at 224 px).
    assert other["keep_aspect"] and other["image_size"] == 304 and other["grid"] == [38, 38]
    assert other["pool_cap"] == 512 * 38 * 38 // 256


def test_probe_refuses_a_pool_cap_below_one(probe, tmp_path):
    with pytest.raises(SystemExit):
        probe.main([str(tmp_path), "--out", str(tmp_path / "x.jsonl"), "--pool-cap", "0"])


def test_probe_refuses_settings_it_makes_itself(probe, tmp_path):
    with pytest.raises(SystemExit):
        probe.main([str(tmp_path), "--out", str(tmp_path / "x.jsonl"), "--knn-normal-share", "0.5"])


def test_train_images_keeps_a_seeded_random_subset_in_order_with_its_labels(probe):
    from funad.benchmark.protocol import Split

    train = [Path(f"img_{i:02d}.png") for i in range(10)]
    split = Split("tile", 0.1, 3, train, [i % 4 == 0 for i in range(10)], [])
    kept = probe.subsample(split, 5)
    assert len(kept.train) == 5 and kept.train == sorted(kept.train) and set(kept.train) < set(train)
    assert kept.moved == [train.index(path) % 4 == 0 for path in kept.train]
    assert probe.subsample(split, 5) == kept  # seeded by the split's seed: another seed, another subset
    assert probe.subsample(Split("tile", 0.1, 4, train, split.moved, []), 5) != kept
    assert probe.subsample(split, None) is split and probe.subsample(split, 10) is split


def test_the_combined_variant_joins_both_backbones_on_the_dinov2_grid_each_part_of_equal_weight(probe):
    from funad.features.containers import FeatureSet

    rng = np.random.default_rng(0)
    paths = [Path("a.png"), Path("b.png")]
    dino = FeatureSet(paths, [rng.standard_normal((4, 6)).astype(np.float16) for _ in paths],
                      [rng.standard_normal(6).astype(np.float16) for _ in paths], (2, 2))
    other = FeatureSet(paths, [rng.standard_normal((16, 5)).astype(np.float16) for _ in paths],
                       [rng.standard_normal(7).astype(np.float16) for _ in paths], (4, 4))
    combined = probe.variant_features(probe.COMBINED, {probe.DINO: dino, probe.OTHER_BACKBONE: other})
    assert combined.grid == (2, 2) and combined.paths == paths
    first = combined.patches[0].astype(np.float32)
    assert first.shape == (4, 6 + 5) and combined.globals_[0].shape == (6 + 7,)
    np.testing.assert_allclose(np.linalg.norm(first[:, :6], axis=1), 2 ** -0.5, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(first[:, 6:], axis=1), 2 ** -0.5, atol=1e-3)
    # The top-left cell of the 2x2 grid averages the top-left 2x2 cells of the 4x4 grid (rows in reading order).
    cell = other.patches[0].astype(np.float32)[[0, 1, 4, 5]].mean(axis=0)
    np.testing.assert_allclose(first[0, 6:], cell / (np.sqrt(2) * np.linalg.norm(cell)), atol=2e-3)
    own = dino.patches[0].astype(np.float32)
    np.testing.assert_allclose(first[:, :6] * np.sqrt(2) * np.linalg.norm(own, axis=1, keepdims=True), own, atol=2e-2)


def test_median_contrast_scores_an_image_by_its_highest_patch_score_minus_its_median(probe):
    from funad.baselines import PatchCore
    from funad.features.containers import MethodFeatures
    from funad.inference.scorers.knn import NearestNeighbourScorer

    rng = np.random.default_rng(0)
    features = MethodFeatures([rng.normal(size=(16, 8)).astype(np.float32) for _ in range(12)])
    queries = torch.from_numpy(rng.normal(size=(4, 16, 8)).astype(np.float32))
    queries[:, 3] += 3.0  # one patch apart in each image
    pairs = ((probe.MedianContrast(0.5, corroborated=True), NearestNeighbourScorer(0.5, corroborated=True)),
             (probe.MedianContrastPatchCore(0.5), PatchCore(0.5)))
    for contrast, plain in pairs:
        maps, image_scores = plain.fit(features).score(queries)  # an exact bank whose maps are its image floors'
        assert torch.equal(image_scores, maps.amax(dim=1))
        contrast_maps, contrast_scores = contrast.fit(features).score(queries)
        assert torch.equal(contrast_maps, maps)
        torch.testing.assert_close(contrast_scores, maps.amax(dim=1) - maps.median(dim=1).values)
