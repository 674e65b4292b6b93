"""benchmarks/selection_rule.py: the held-out proxy set, the rule, and a run end to end on tiny data."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from funad.benchmark.protocol import Split

from conftest import TINY, benchmark_script


@pytest.fixture(scope="module")
def rule():
    return benchmark_script("selection_rule")


def _split(paths, seed=0):
    return Split("tile", 0.1, seed, list(paths), [i % 5 == 0 for i in range(len(paths))], [])


def test_holdout_is_a_seeded_share_in_training_order(rule):
    split = _split([Path(f"img_{i:02d}.png") for i in range(20)])
    fit, heldout = rule.holdout(split, 0.2)
    assert len(heldout) == 4 and len(fit) == 16 and sorted(fit + heldout) == split.train
    assert fit == [p for p in split.train if p in fit] and heldout == [p for p in split.train if p in heldout]
    assert rule.holdout(split, 0.2) == (fit, heldout)
    assert rule.holdout(_split(split.train, seed=1), 0.2) != (fit, heldout)


def test_proxy_set_writes_a_defective_copy_and_its_mask_per_held_out_image(rule, demo_data, tmp_path):
    split = _split(sorted(demo_data.train_dir.iterdir()))
    proxy = rule.make_proxy_set(split, 0.2, tmp_path / "a")
    assert len(proxy.copies) == len(proxy.masks) == len(proxy.heldout) == 4
    for copy, mask in zip(proxy.copies, proxy.masks):
        pixels, truth = np.asarray(Image.open(copy)), np.asarray(Image.open(mask)) > 0
        assert pixels.shape == (64, 64, 3) and truth.shape == (64, 64) and truth.any()
    samples = proxy.samples()
    assert [s.label for s in samples] == [0] * 4 + [1] * 4 and samples[-1].mask == proxy.masks[-1]
    again = rule.make_proxy_set(split, 0.2, tmp_path / "b")  # the same bytes: the feature cache finds them
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(proxy.copies, again.copies))
    assert proxy.heldout_moved == sum(p in split.moved_paths for p in proxy.heldout)


def test_demo_defects_are_one_per_held_out_image_and_other_bytes(rule, demo_data, tmp_path):
    split = _split(sorted(demo_data.train_dir.iterdir()))
    star = rule.make_proxy_set(split, 0.2, tmp_path / "star")
    demo = rule.make_proxy_set(split, 0.2, tmp_path / "demo", "demo")
    assert demo.heldout == star.heldout and len(demo.copies) == len(demo.heldout)
    for original, copy, mask in zip(demo.heldout, demo.copies, demo.masks):
        before, after = np.asarray(Image.open(original).convert("RGB")), np.asarray(Image.open(copy))
        changed = (before != after).any(axis=2)
        assert changed.any() and not changed[np.asarray(Image.open(mask)) == 0].any()  # only inside the mask


def test_rule_is_the_argmax_with_ties_to_the_lower_quantile(rule):
    assert rule.choose({0.0: 0.8, 0.5: 0.9, 1.0: 0.85}) == 0.5
    assert rule.choose({0.0: 0.9, 0.5: 0.9, 1.0: 0.85}) == 0.0


def test_benchmark_writes_every_record_resumes_and_summarises(rule, demo_data, tmp_path, capsys):
    out = tmp_path / "rule.jsonl"
    settings = {**{k: v for k, v in TINY.items() if k != "backbone"}, "image_size": 56}
    flags = [item for key, value in settings.items() for item in ("--" + key.replace("_", "-"), str(value))]
    command = [str(demo_data.root), "--seeds", "0", "1", "--contamination", "0.1", "--out", str(out),
               "--variant", "efficientnet_lite0", "--random-weights", "--quantiles", "0", "0.5", "1",
               "--cache-dir", str(tmp_path / "cache"), "--quiet", *flags]
    assert rule.main(command) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = ["test", "proxy no-overlap", "proxy overlap"]
    assert [(r["seed"], r["kind"], r["q"]) for r in records] == [
        (seed, kind, q) for seed in (0, 1) for kind in kinds for q in (0.0, 0.5, 1.0)]
    for record in records:
        if record["kind"] == "test":
            assert record["num_moved"] == 2
            for setting in ("no-overlap", "overlap"):
                assert 0 <= record[setting]["image_auroc"] <= 1 and 0 <= record[setting]["pixel_auroc"] <= 1
        else:
            assert record["num_heldout"] == record["num_synthetic"] == 4 and 0 <= record["heldout_moved"] <= 2
            assert 0 <= record["proxy"]["image_auroc"] <= 1 and 0 <= record["proxy"]["pixel_auroc"] <= 1
            assert record["num_fit"] == 18 + 4 * (record["kind"] == "proxy overlap")

    assert rule.main(command) == 0  # every fit is there: nothing is redone
    assert len(out.read_text().splitlines()) == len(records)

    assert rule.main(["--summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "q = 1 (plain)" in text and "best fixed (q = " in text and "| **mean** | both (image) |" in text
    choice_row = next(line for line in text.splitlines() if "| q chosen |" in line)
    assert len(choice_row.split("|")) == 2 + 2 + len(rule.RULES) + 2  # a cell per rule, best fixed and oracle

    # Another kind of synthetic defect adds its proxy records only: the test set's are there already.
    assert rule.main([*command, "--seeds", "0", "--defects", "demo"]) == 0
    added = [json.loads(line) for line in out.read_text().splitlines()][len(records):]
    assert [(r["kind"], r["defects"]) for r in added] == [
        (f"proxy {proxy} (demo)", "demo") for proxy in ("no-overlap", "overlap") for _ in range(3)]
    assert rule.main(["--summary", str(out), "--defects", "demo"]) == 0
    assert "| q chosen |" in capsys.readouterr().out


def test_quantile_one_scores_as_the_plain_bank(rule, demo_data):
    """The 'plain' candidate is the uncorroborated distance to the same bank (what PatchCore scores)."""
    from funad import FunAD

    model = FunAD(pretrained=False, cache_dir=False, progress=False, **TINY)
    features = model.extract(sorted(demo_data.train_dir.iterdir()))
    base, _ = rule.fit_candidates(features, seed=0)
    plain = rule.NearestNeighbourScorer(0.1, 0, pool_max_patches=rule.POOL_CAP).fit(features.method_features("patch"))
    queries = features.method_features("patch").take(range(4))
    np.testing.assert_allclose(base.with_corroboration_quantile(1.0).score_patches(queries).numpy(),
                               plain.score_patches(queries).numpy(), rtol=1e-6)
