"""FUN-AD's default scorer: nearest-neighbour distance to the patches of the images the method trusts.

FunAD fits it on its ``trusted_images`` (the share ``knn_normal_share`` of the training images that
the trained Local-Net scores lowest; the default share, 1, is every image); the bank is a greedy
coreset of their patches, as PatchCore's, drawn from a pool of at most ``pool_max_patches`` patches
so that its cost stops growing with the number of images. Fitted on every training image,
uncorroborated, it is the plain contaminated baseline.
At image level (one vector per image) ``from_config`` banks every pooled image's vector (every trusted image's, up
to ``pool_max_patches``).

**Corroboration** (``corroborated=True``): a bank entry vouches for a new patch only as far as
some *other* training image vouches for the entry itself. Each entry keeps the distance to its
nearest pool patch from another image (FUN-AD's own-image-excluded distance, the quantity its
pseudo-labels threshold), and a patch scores ``min over entries e of max(d(patch, e), vouched(e))``.
A defect seen in one contaminated training image is in the bank, but nothing else vouches for it,
so the same defect at test time still scores high; normal patterns, seen in many images, are
unaffected. Unlike dropping such entries, rare normal patterns keep their coverage.

**Softened corroboration** (``corroboration_quantile=q``, 0-1): every vouched distance is lowered
by the q-quantile of all of them, clipped at 0, ``vouched'(e) = max(0, vouched(e) - quantile_q)``.
Entries vouched for within that margin count as fully vouched for; only those whose support in
other images is unusually distant keep a floor. q = 0 is the rule above, bit for bit (no
offset at all, not the minimum's), q = 1 zeroes every floor: the plain nearest-neighbour distance
to the same bank. Measured on the dev sets, intermediate q recovered MVTec screw (rare normal
rotations) and gave back most of what corroboration gains on contaminated bottle and magnetic tile
(docs/accuracy.md, "A synthetic-defect rule"; benchmarks/selection_rule.py).

**Corroboration across poses** (``corroboration_views``, e.g. the three quarter turns): the
vouched distance is searched among the other images' patches *and the same images turned or
mirrored* (each view counts as its source image, so an image still never vouches for itself).
A normal part photographed in a rare orientation (MVTec screw) finds support in another image's
turned copy; a defect seen in one image still finds none in any pose of another. Only the
floors change: the bank and the search at predict time are the same.

**Stricter corroboration in the maps** (``map_corroboration_images=k``): the anomaly maps (and
the defect regions and pixel threshold read from them) floor each entry at the distance within
which *k* other training images vouch for it, the image score at the nearest one. A defect
type that several contaminated training images share vouches for itself with k = 1; with k = 5
its patterns keep their floors in the maps. Image scores, the highest patch score of an image,
keep k = 1: one normal patch that fewer than k images support would raise a whole normal
image's score. Both come from the same search at predict time.

**Corroboration for the highest-scoring images only** (``corroborated_share=s`` below 1): after the
floors are found, each fitted image is scored as a new image would be (its own entries left out,
:meth:`score_training_images`), and only the entries of the highest-scoring share ``s`` of the
images keep their floors; the other images' entries are *exempt* (floor 0), as in a plain
nearest-neighbour bank. Corroboration costs coverage where a rare normal pattern has little
support in other images (MVTec screw's rare poses); the images that hold a contaminating defect
score high, so with s = 0.5 nearly all of them keep their floors while half the normal images
give their coverage back. Measured on the three dev sets (docs/accuracy.md, "Corroboration for the
highest-scoring half").
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import torch

from funad.features.containers import MethodFeatures
from funad.inference.coreset import PROJECTION_DIM, coreset_size, greedy_coreset
from funad.inference.patch_bank import PatchBank, highest_searched_exactly, sample_patches
from funad.inference.projection import PrincipalProjection
from funad.inference.scorers.base import PatchScorer, ScorerState, highest_patch_scores, register_scorer
from funad.utils.shares import share_count

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet

logger = logging.getLogger(__name__)


@register_scorer("knn")
class NearestNeighbourScorer(PatchScorer):
    """``fit(features, image_ids)`` banks a share of the chosen images' patches; patch score = distance to the bank.

    ``sampling="coreset"`` keeps a greedy k-center coreset (``patch_fraction`` of the pool) of a
    uniform pool of at most ``pool_max_patches`` of their patches (None: all of them); the
    coreset covers rare normal patterns with few entries and is selected after a random
    projection to ``projection_dim`` dimensions. ``"random"`` keeps a random share of each
    image's patches. ``corroborated``, ``corroboration_quantile`` and ``corroboration_views``
    (names of :data:`funad.data.preprocessing.VIEWS`, read from ``features.views`` by ``fit``):
    see the module docstring. ``components``: patches are compared along the top ``components``
    principal directions of the pool (:class:`PrincipalProjection`, fitted by ``fit`` as
    ``projection_``); None, or at least the features' dimension: in full.
    """

    score_range = None

    def __init__(self, patch_fraction: float = 0.01, seed: int = 0,
                 sampling: Literal["coreset", "random"] = "coreset", projection_dim: int | None = PROJECTION_DIM,
                 pool_max_patches: int | None = None, corroborated: bool = False,
                 corroboration_quantile: float = 0.0, corroboration_views: Sequence[str] = (),
                 map_corroboration_images: int = 1, corroborated_share: float = 1.0, components: int | None = None):
        check_corroboration_quantile(corroboration_quantile, corroborated)
        if not 0.0 <= corroborated_share <= 1.0 or (corroborated_share < 1.0 and not corroborated):
            raise ValueError(f"corroborated_share must lie in [0, 1], and below 1 only with corroborated=True; got "
                             f"{corroborated_share}")
        if sampling not in ("coreset", "random"):
            raise ValueError(f"sampling must be 'coreset' or 'random', got {sampling!r}")
        if not 0.0 < patch_fraction <= 1.0:
            raise ValueError(f"patch_fraction must lie in (0, 1], got {patch_fraction}")
        if corroboration_views and not corroborated:
            raise ValueError("corroboration_views widen corroboration: they need corroborated=True")
        if corroboration_views and sampling == "random":
            # A random bank is vouched for by its own entries, which have no turned copies to search.
            raise ValueError("corroboration_views need sampling='coreset' (a pool of patches to turn)")
        if map_corroboration_images < 1 or (map_corroboration_images > 1 and not corroborated):
            raise ValueError(f"map_corroboration_images must be 1, or above 1 with corroborated=True; got "
                             f"{map_corroboration_images}")
        self.patch_fraction = patch_fraction
        self.seed = seed
        self.sampling = sampling
        self.projection_dim = projection_dim
        self.pool_max_patches = pool_max_patches
        self.corroborated = corroborated
        self.corroboration_quantile = float(corroboration_quantile)
        self.corroboration_views = tuple(corroboration_views)
        self.map_corroboration_images = int(map_corroboration_images)
        self.corroborated_share = float(corroborated_share)
        if components is not None and components < 1:
            raise ValueError(f"components must be >= 1 or None, got {components}")
        self.components = components

    @classmethod
    def from_config(cls, config: FunADConfig, local_net: LocalNet) -> Self:
        # Image level: every pooled vector. The pool holds one vector per image, and a coreset of a fifth of a
        # few hundred cannot cover one class's variation (docs/accuracy.md, "Image level (`--level image`): the paper's
        # semantic toy").
        patch_fraction = config.knn_patch_fraction if config.level == "patch" else 1.0
        return cls(patch_fraction, config.seed, pool_max_patches=config.knn_pool_max_patches,
                   corroborated=config.knn_corroborated,
                   corroboration_quantile=config.knn_corroboration_quantile,
                   corroboration_views=cls.training_views(config),
                   # Image level: the map is the image's score, one vector per image.
                   map_corroboration_images=(config.knn_map_corroboration_images
                                             if config.knn_corroborated and config.level == "patch" else 1),
                   # Measured on patches only; image level keeps full corroboration.
                   corroborated_share=(config.knn_corroborated_share
                                       if config.knn_corroborated and config.level == "patch" else 1.0),
                   components=config.knn_components)

    @classmethod
    def training_views(cls, config: FunADConfig) -> tuple[str, ...]:
        # Only patches have poses (image level: one global vector per image).
        wanted = config.knn_corroborated and config.level == "patch"
        return CORROBORATION_VIEWS[config.knn_corroboration_views] if wanted else ()

    def fit(self, features: MethodFeatures, image_ids: np.ndarray | None = None) -> Self:
        images = len(features) if image_ids is None else len(np.unique(image_ids))
        if self.corroborated and images < 2:
            raise ValueError(f"a corroborated knn bank needs the patches of at least 2 training images (another "
                             f"image vouches for each entry), got {images}: fit it on more images")
        rng = np.random.default_rng(self.seed)
        self.projection_: PrincipalProjection | None = None
        if self.sampling == "coreset":
            pool, pool_images = sample_patches(features, image_ids, self.pool_max_patches, rng)
            pool = self._fit_projection(pool)
            size = coreset_size(len(pool), self.patch_fraction)
            # The stages below take minutes on large pools (magnetic tile's: 2 + 3 + 0.5) and show no bar.
            logger.info("the bank: a greedy coreset of %d of %d training patches", size, len(pool))
            chosen = greedy_coreset(pool, size, projection_dim=self.projection_dim, seed=self.seed)
            self.bank_ = PatchBank(pool[chosen], pool_images[chosen])
        else:
            indices = features.indices(image_ids)
            per_image = share_count(self.patch_fraction, features.num_patches)  # at most every position
            positions = features.random_positions(len(indices), per_image, rng)
            pool = self._fit_projection(features.take_rows(indices, positions).reshape(-1, features.dim))
            pool_images = np.repeat(indices, per_image)
            self.bank_ = PatchBank(pool, pool_images)
        if self.corroborated:
            pool, pool_images = self._vouching_pool(features, image_ids, pool, pool_images)
            logger.info("floors: how near other training images come to each of the %d bank entries, among %d "
                        "patches in %d poses", len(self.bank_), len(pool), 1 + len(self.corroboration_views))
            # The pool is searched once, by the bank's entries: exact search costs less than an index's training.
            self.vouched_, self.map_vouched_ = vouched_distances(self.bank_, PatchBank(pool, pool_images, exact=True),
                                                                 (1, self.map_corroboration_images))
            self.exempt_entries_ = (self._exempt_entries(features, image_ids) if self.corroborated_share < 1.0
                                    else np.zeros(len(self.bank_), dtype=bool))
            self._soften()
        return self

    def _vouching_pool(self, features: MethodFeatures, image_ids: np.ndarray | None, pool: torch.Tensor,
                       pool_images: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The patches that vouch for bank entries, and each one's image: ``pool`` and, after it, the same rows
        of each corroboration view (drawn as the coreset's pool is, with the same seed).

        Written into one tensor as each view is read: a concatenation per view would hold the pool about twice
        at its end (2.5 GB at magnetic tile's 826 560 patches against 1.9).
        """
        views = self.corroboration_views
        vouching = torch.empty(len(pool) * (1 + len(views)), pool.shape[1], dtype=pool.dtype)
        vouching[:len(pool)] = pool
        images = [pool_images]
        for number, view in enumerate(views, start=1):
            view_pool, view_images = sample_patches(self._view(features, view, image_ids), image_ids,
                                                    self.pool_max_patches, np.random.default_rng(self.seed))
            vouching[number * len(pool):(number + 1) * len(pool)] = self._project(view_pool)
            images.append(view_images)
        return vouching, np.concatenate(images)

    def _fit_projection(self, pool: torch.Tensor) -> torch.Tensor:
        """``pool`` projected along its top principal directions (fitting ``projection_``), or as it is (no
        ``components``, as many as its dimension, or one patch: no direction to choose)."""
        if self.components is not None and self.components < pool.shape[-1] and len(pool) > 1:
            self.projection_ = PrincipalProjection.fit(pool, self.components)
        return self._project(pool)

    def _project(self, patches: torch.Tensor) -> torch.Tensor:
        """``patches`` ``[..., D]`` where the bank's entries live (``[..., C]`` with a projection)."""
        return patches if self.projection_ is None else self.projection_(patches)

    def _exempt_entries(self, features: MethodFeatures, image_ids: np.ndarray | None) -> np.ndarray:
        """``[M]`` bool: the entries of the fitted images outside the ``corroborated_share`` that score highest
        as new images (own entries left out), with the floors of full corroboration (whatever the quantile, so
        that :meth:`with_corroboration_quantile` keeps the same exemptions)."""
        fitted = features.indices(image_ids)
        logger.info("floors: kept for the highest-scoring %g %% of the %d training images, each scored without "
                    "its own entries", 100 * self.corroborated_share, len(fitted))
        scores = self._own_image_left_out(features, self.vouched_, fitted)
        # Rounded up (an odd count's middle image keeps its floors), after round(): 0.3 x 10 is 3.0000000000000004.
        count = math.ceil(round(self.corroborated_share * len(fitted), 6))
        corroborated = fitted[np.argsort(-scores, kind="stable")[:count]]
        assert self.bank_.image_ids is not None
        return ~np.isin(self.bank_.image_ids, corroborated)

    def _soften(self) -> None:
        self.floors_ = self._floors(self.vouched_)
        self.map_floors_ = self.floors_ if self.map_corroboration_images == 1 else self._floors(self.map_vouched_)

    def _floors(self, vouched: np.ndarray) -> np.ndarray:
        """The softened vouched distances, 0 for the exempt entries."""
        floors = softened_vouched(vouched, self.corroboration_quantile)
        if not self.exempt_entries_.any():
            return floors  # the same array as vouched for q = 0: full corroboration, bit for bit
        return np.where(self.exempt_entries_, np.float32(0), floors).astype(np.float32)

    @staticmethod
    def _view(features: MethodFeatures, view: str, image_ids: np.ndarray | None) -> MethodFeatures:
        """``features.views[view]``, checked to hold every image the bank is fitted on."""
        found = features.views.get(view)
        needed = len(features) if image_ids is None else int(np.max(image_ids, initial=-1)) + 1
        if found is None or len(found) < needed:
            raise ValueError(f"corroboration view {view!r} needs the training images' features in that pose "
                             f"(features.views[{view!r}], {needed} images; FunAD extracts them), "
                             f"have {dict((name, len(posed)) for name, posed in features.views.items())}")
        return found

    def with_corroboration_quantile(self, quantile: float) -> Self:
        """This fitted, corroborated scorer with another ``corroboration_quantile``, without refitting.

        The bank and the vouched distances do not depend on the quantile, so every softening of one
        fit shares them (a shallow copy); the copy scores as a scorer fitted with ``quantile`` would.
        """
        check_corroboration_quantile(quantile, self.corroborated)
        if not self.corroborated:
            raise ValueError("with_corroboration_quantile needs a corroborated scorer")
        softened = copy.copy(self)
        softened.corroboration_quantile = float(quantile)
        softened._soften()
        return softened

    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """The patch scores maps are drawn from (with ``map_corroboration_images``' floors)."""
        patches = self._project(patches)
        scores = self._patch_scores(patches.reshape(-1, patches.shape[-1]), self._floor_sets()[-1:])[0]
        return torch.from_numpy(scores).view(patches.shape[:-1]).to(patches.device)

    def score(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self._project(patches)
        floors = self._floor_sets()
        scored = self._patch_scores(patches.reshape(-1, patches.shape[-1]), floors)
        image_floored = self._rescored_exactly(patches, scored[0].reshape(patches.shape[:-1]), floors[0])
        patch_scores, image_floored_scores = (torch.from_numpy(scores).view(patches.shape[:-1]).to(patches.device)
                                              for scores in (scored[-1], image_floored))
        return patch_scores, self.image_scores(patches, image_floored_scores)

    def _floor_sets(self) -> list[np.ndarray | None]:
        """The floors of the image scores and, where they differ, the maps'; ``[None]`` uncorroborated."""
        if not self.corroborated:
            return [None]
        return [self.floors_] if self.map_floors_ is self.floors_ else [self.floors_, self.map_floors_]

    def _patch_scores(self, queries: torch.Tensor, floors: Sequence[np.ndarray | None], own_image: int | None = None,
                      exact: bool = False) -> list[np.ndarray]:
        """``[Q]`` for each of ``floors``: ``min over entries e of max(d(q, e), floor(e))`` over each query's
        nearest entries (besides ``own_image``'s, which are left out), from one search (``exact``: exhaustive).

        Corroborated, among the ``CORROBORATION_NEIGHBOURS`` nearest: an entry farther than those rarely
        wins, since it must beat their distance and its own vouched distance at once. A floor of None is
        the plain distance to the nearest entry, so only one is searched.
        """
        neighbours = CORROBORATION_NEIGHBOURS if self.corroborated else 1
        if own_image is None:
            distances, hits = self.bank_.search(queries, min(len(self.bank_), neighbours), exact=exact)
        else:
            distances, hits = self.bank_.search_past_own(queries, neighbours, own_image, exact=exact)
        return [(distances if floor is None else np.maximum(distances, floor[hits])).min(axis=1) for floor in floors]

    def _rescored_exactly(self, patches: torch.Tensor, scores: np.ndarray, floors: np.ndarray | None,
                          own_image: int | None = None) -> np.ndarray:
        """``[B, K]`` patch ``scores`` of an approximate search, each image's highest ones searched again
        exhaustively (:func:`~funad.inference.patch_bank.highest_searched_exactly`).

        For the plain distance the image scores are then exact; corroborated, a farther entry with a
        lower floor may rarely stand in for a missed one, which no bound catches.
        """
        if not self.bank_.index.approximate:
            return scores
        queries = patches.reshape(-1, patches.shape[-1])
        return highest_searched_exactly(scores, lambda rows: self._patch_scores(queries[rows], [floors], own_image,
                                                                                exact=True)[0])

    def score_training_images(self, features: MethodFeatures) -> np.ndarray:
        # Image scores: the maps' floors are not needed.
        return self._own_image_left_out(features, self.floors_ if self.corroborated else None)

    def _own_image_left_out(self, features: MethodFeatures, floors: np.ndarray | None,
                            images: np.ndarray | None = None) -> np.ndarray:
        """The image scores of the training images (or of ``images``) without their own entries, under ``floors``
        (None: the plain distance), as :meth:`score` gives a new image's."""
        def patch_scores(image: int) -> np.ndarray:
            queries = self._project(features.take([image]))
            scores = self._patch_scores(queries[0], [floors], image)[0][None]
            rescored: np.ndarray = self._rescored_exactly(queries, scores, floors, image)[0]
            return rescored

        return highest_patch_scores(features, patch_scores, images)

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {"patch_fraction": self.patch_fraction, "seed": self.seed, "sampling": self.sampling,
                "projection_dim": self.projection_dim, "pool_max_patches": self.pool_max_patches,
                "corroborated": self.corroborated, "corroboration_quantile": self.corroboration_quantile,
                "corroboration_views": list(self.corroboration_views),
                "map_corroboration_images": self.map_corroboration_images,
                "corroborated_share": self.corroborated_share, "components": self.components}

    def state_dict(self) -> ScorerState:
        tensors = self.bank_.tensors()
        if self.projection_ is not None:
            tensors.update(self.projection_.tensors())
        if self.corroborated:
            tensors["vouched"] = torch.from_numpy(self.vouched_)
            if self.map_corroboration_images > 1:
                tensors["map_vouched"] = torch.from_numpy(self.map_vouched_)
            if self.corroborated_share < 1.0:
                tensors["exempt_entries"] = torch.from_numpy(self.exempt_entries_)
        return ScorerState(tensors, self.settings())

    @classmethod
    def from_state(cls, state: ScorerState, local_net: LocalNet) -> Self:
        # Saved before map_corroboration_images or corroborated_share: 1, as they were fitted.
        scorer = cls(**state.settings)
        tensors = dict(state.tensors)
        scorer.projection_ = PrincipalProjection.from_tensors(tensors)
        if scorer.corroborated:
            scorer.vouched_ = tensors.pop("vouched").numpy()
            scorer.map_vouched_ = tensors.pop("map_vouched").numpy() if "map_vouched" in tensors else scorer.vouched_
            scorer.exempt_entries_ = np.zeros(len(scorer.vouched_), dtype=bool)
            if scorer.corroborated_share < 1.0:
                exempt = tensors.pop("exempt_entries", None)
                if exempt is None or len(exempt) != len(scorer.vouched_):
                    raise ValueError(f"a knn scorer with corroborated_share {scorer.corroborated_share} needs its "
                                     f"exempt_entries, one per bank entry ({len(scorer.vouched_)}); found "
                                     f"{'none' if exempt is None else len(exempt)}")
                scorer.exempt_entries_ = exempt.numpy().astype(bool)
            scorer._soften()
        scorer.bank_ = PatchBank.from_tensors(tensors)
        width = scorer.bank_.patches.shape[1]
        if scorer.projection_ is not None and scorer.projection_.components.shape[0] != width:
            raise ValueError(f"a knn scorer's projection must end where its bank lives: {width} dimensions, found "
                             f"{scorer.projection_.components.shape[0]} directions")
        return scorer


#: Bank entries searched per query by the corroborated score.
CORROBORATION_NEIGHBOURS = 10
#: Pool patches first searched per bank entry for the k-th other image's distance; entries that
#: reach fewer than k other images among them are searched again with four times as many.
VOUCHING_NEIGHBOURS = 2048
#: Bank entries searched at a time for their vouched distances: faiss's own block of queries (its
#: ``distance_compute_blas_query_bs``), so that blocks cost no speed and change no distance.
VOUCHING_QUERY_BLOCK = 4096
#: ``FunADConfig.knn_corroboration_views``: the poses of the training images that vouch for bank entries.
CORROBORATION_VIEWS: dict[str, tuple[str, ...]] = {"none": (), "rotations": ("rot90", "rot180", "rot270"),
                                                   "mirror": ("mirror",),
                                                   "rotations+mirror": ("rot90", "rot180", "rot270", "mirror"),
                                                   "eighth-turns": ("rot90", "rot180", "rot270", "rot45", "rot135",
                                                                    "rot225", "rot315")}


def check_corroboration_quantile(quantile: float, corroborated: bool) -> None:
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"corroboration_quantile must lie in [0, 1], got {quantile}")
    if quantile > 0 and not corroborated:
        raise ValueError("corroboration_quantile softens corroboration: it needs corroborated=True")


def softened_vouched(vouched: np.ndarray, quantile: float) -> np.ndarray:
    """``[M]``: the floors the corroborated score puts under each entry's distance.

    ``max(0, vouched - (q-quantile of vouched))``; for q = 0 the vouched distances themselves
    (the same array: today's rule bit for bit).
    """
    if quantile == 0:
        return vouched
    offset = np.quantile(vouched.astype(np.float64), quantile)
    floors: np.ndarray = np.maximum(vouched.astype(np.float64) - offset, 0.0).astype(np.float32)
    return floors


def vouched_distances(bank: PatchBank, pool: PatchBank, counts: Sequence[int] = (1,)) -> list[np.ndarray]:
    """``[M]`` for each k in ``counts``: the distance from each bank entry within which pool patches of k
    other training images lie (the k-th nearest other image's nearest patch); one search for all of them."""
    assert bank.image_ids is not None and pool.image_ids is not None
    if max(counts) == 1:  # the nearest other image: a search that only needs to pass the entry's own
        nearest = pool.nearest_from_other_images(bank.patches, bank.image_ids)[0].astype(np.float32)
        return [nearest for _ in counts]
    found = {count: np.empty(len(bank), np.float32) for count in counts}
    pending = np.arange(len(bank))
    neighbours = min(len(pool), VOUCHING_NEIGHBOURS)
    while len(pending):
        short = []
        for entry, distances, hits in _searched_in_blocks(bank, pending, pool, neighbours):
            sources = pool.image_ids[hits]
            _, first = np.unique(sources, return_index=True)  # where each image's nearest patch is
            first = np.sort(first[sources[first] != bank.image_ids[entry]])
            if len(first) < max(counts) and neighbours < len(pool):
                short.append(entry)  # searched again with more neighbours
                continue
            for count in counts:  # fewer images than count in the whole pool: the farthest of them
                found[count][entry] = distances[first[min(count, len(first)) - 1]]
        pending, neighbours = np.asarray(short, dtype=np.int64), min(len(pool), 4 * neighbours)
    return [found[count] for count in counts]


def _searched_in_blocks(bank: PatchBank, entries: np.ndarray, pool: PatchBank,
                        neighbours: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Each of the bank's ``entries`` with the distances to, and indices of, its ``neighbours`` nearest pool patches.

    Searched a block of entries at a time, so that the answers ([entries, neighbours] distances and indices)
    never take more than a block's worth of memory (1 GB at magnetic tile's 41 328 entries otherwise).
    """
    for start in range(0, len(entries), VOUCHING_QUERY_BLOCK):
        block = entries[start:start + VOUCHING_QUERY_BLOCK]
        distances, hits = pool.search(bank.patches[block], neighbours)
        yield from zip(block.tolist(), distances, hits)
