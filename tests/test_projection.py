"""The knn's principal directions: the projection itself, and a knn that compares patches along them."""


import numpy as np
import pytest
import torch
from PIL import Image

from funad import FunAD
from funad.config import FunADConfig
from funad.export.onnx import export_onnx, patch_score_module
from funad.features.containers import MethodFeatures
from funad.inference.projection import PrincipalProjection
from funad.inference.scorers.base import ScorerState
from funad.inference.scorers.knn import NearestNeighbourScorer
from funad.runtime import OnnxModel

from conftest import TINY


def _images(count=12, patches=16, dim=10, seed=0):
    """Patches that vary along the first three axes (scales 5, 3, 2) and hardly along the others; image 3
    holds a defect along the first axis."""
    rng = np.random.default_rng(seed)
    scales = np.array([5.0, 3.0, 2.0] + [0.05] * (dim - 3), dtype=np.float32)
    images = [(rng.normal(size=(patches, dim)) * scales + 1.0).astype(np.float32) for _ in range(count)]
    images[3][5, 0] = 40.0
    return images


def test_the_projection_keeps_the_directions_of_largest_variance_in_order():
    patches = torch.from_numpy(np.concatenate(_images(count=40)))
    projection = PrincipalProjection.fit(patches, 3)
    components = projection.components.numpy()
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-5)  # orthonormal rows
    np.testing.assert_allclose(np.abs(components[:, :3]), np.eye(3), atol=0.1)  # the three wide axes, widest first
    projected = projection(patches)
    np.testing.assert_allclose(projected.numpy(), (patches - patches.mean(0)).numpy() @ components.T, atol=1e-4)
    assert projected.shape == (len(patches), 3)


def test_as_many_directions_as_dimensions_keeps_every_distance():
    patches = torch.from_numpy(np.concatenate(_images()))
    projected = PrincipalProjection.fit(patches, 99)(patches)  # at most the dimension: a rotation
    assert projected.shape == patches.shape
    torch.testing.assert_close(torch.cdist(projected[:20], projected[20:40]), torch.cdist(patches[:20], patches[20:40]),
                               rtol=1e-4, atol=1e-4)


def test_a_large_pool_fits_its_directions_on_evenly_spaced_rows(monkeypatch):
    from funad.inference import projection

    patches = torch.from_numpy(np.concatenate(_images(count=40)))  # 640 rows
    monkeypatch.setattr(projection, "MAX_FIT_ROWS", 100)
    fitted = PrincipalProjection.fit(patches, 3)
    expected = PrincipalProjection.fit(patches[::7], 3)  # ceil(640 / 100) = 7: 92 rows
    monkeypatch.undo()
    assert torch.equal(fitted.components, expected.components) and torch.equal(fitted.mean, expected.mean)


def test_a_projection_needs_matching_shapes():
    with pytest.raises(ValueError, match="mean \\[D\\] and components \\[C, D\\]"):
        PrincipalProjection(torch.zeros(4), torch.zeros(2, 5))


def _with_mirror(images):
    """The images, and the same images mirrored (their patches in reverse order) as the ``mirror`` view."""
    return MethodFeatures(images, {"mirror": MethodFeatures([image[::-1].copy() for image in images])})


@pytest.mark.parametrize(("corroborated_share", "views"), [(1.0, ()), (0.5, ()), (0.5, ("mirror",))])
def test_a_knn_with_components_scores_as_a_knn_fitted_on_the_projected_patches(corroborated_share, views):
    images = _images()
    settings = dict(patch_fraction=0.5, corroborated=True, corroborated_share=corroborated_share,
                    map_corroboration_images=2, corroboration_views=views)
    reduced = NearestNeighbourScorer(**settings, components=3).fit(_with_mirror(images))
    assert reduced.projection_ is not None and reduced.bank_.patches.shape[1] == 3
    projected = [reduced.projection_(torch.from_numpy(image)).numpy() for image in images]
    by_hand = NearestNeighbourScorer(**settings).fit(_with_mirror(projected))
    np.testing.assert_allclose(reduced.vouched_, by_hand.vouched_, rtol=1e-5)
    np.testing.assert_array_equal(reduced.exempt_entries_, by_hand.exempt_entries_)
    np.testing.assert_allclose(reduced.score_training_images(MethodFeatures(images)),
                               by_hand.score_training_images(MethodFeatures(projected)), rtol=1e-5)
    queries = torch.from_numpy(np.stack(images[2:5]))
    for ours, theirs in zip(reduced.score(queries), by_hand.score(torch.from_numpy(np.stack(projected[2:5])))):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert reduced.score(queries)[1].argmax() == 1  # image 3's defect lies along a kept direction


def test_components_at_or_above_the_dimension_compare_in_full():
    images = _images()
    scorer = NearestNeighbourScorer(patch_fraction=0.5, components=10).fit(MethodFeatures(images))
    assert scorer.projection_ is None and scorer.bank_.patches.shape[1] == 10


def test_the_projection_round_trips_and_older_states_load_without_one():
    images = _images()
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, components=3).fit(MethodFeatures(images))
    state = scorer.state_dict()
    assert {"projection_mean", "projection_components"} <= set(state.tensors)
    restored = NearestNeighbourScorer.from_state(ScorerState(dict(state.tensors), state.settings), local_net=None)
    queries = torch.from_numpy(np.stack(images[:4]))
    assert torch.equal(scorer.score_patches(queries), restored.score_patches(queries))
    full = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True).fit(MethodFeatures(images)).state_dict()
    older = {key: value for key, value in full.settings.items() if key != "components"}  # saved before components
    older_scorer = NearestNeighbourScorer.from_state(ScorerState(dict(full.tensors), older), local_net=None)
    assert older_scorer.projection_ is None and torch.isfinite(older_scorer.score_patches(queries)).all()
    mismatched = dict(state.tensors) | {"projection_components": torch.zeros(4, 10)}
    with pytest.raises(ValueError, match="3 dimensions, found 4 directions"):
        NearestNeighbourScorer.from_state(ScorerState(mismatched, state.settings), local_net=None)


def test_the_onnx_module_projects_before_the_distance():
    images = _images()
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, components=3).fit(MethodFeatures(images))
    module = patch_score_module(scorer)
    queries = torch.from_numpy(np.stack(images[2:5]))
    image_floored, map_floored = module(queries)
    expected_map, expected_image = scorer.score(queries)
    torch.testing.assert_close(map_floored, expected_map, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(image_floored.amax(dim=1), expected_image, rtol=1e-4, atol=1e-4)


def test_the_config_field_reaches_the_scorer_and_is_checked():
    assert NearestNeighbourScorer.from_config(FunADConfig(knn_components=7), local_net=None).components == 7
    assert NearestNeighbourScorer.from_config(FunADConfig(knn_components=None), local_net=None).components is None
    with pytest.raises(ValueError, match="knn_components must be >= 1 or None"):
        FunADConfig(knn_components=0)
    with pytest.raises(ValueError, match="components must be >= 1 or None"):
        NearestNeighbourScorer(components=0)


def test_a_model_with_components_saves_loads_and_exports_with_the_same_scores(demo_data, tmp_path):
    model = FunAD(cache_dir=False, progress=False, pretrained=False, knn_components=8, **TINY).fit(
        demo_data.train_dir)
    assert model.scorer_.projection_ is not None and model.scorer_.bank_.patches.shape[1] == 8
    images = demo_data.test_paths[:3]
    scores = model.score(images)
    loaded = FunAD.load(model.save(tmp_path / "model"))
    loaded.progress = False
    np.testing.assert_array_equal(loaded.score(images), scores)
    graph = OnnxModel(export_onnx(model, tmp_path / "model.onnx"))
    np.testing.assert_allclose(graph.run([Image.open(path).convert("RGB") for path in images]).scores, scores,
                               rtol=1e-4)
