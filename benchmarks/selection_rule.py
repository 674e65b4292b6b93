"""A label-free rule choosing the knn scorer's corroboration per dataset, against the best fixed choice and the oracle.

Candidates: the corroborated knn with ``corroboration_quantile`` q in {0, 0.25, 0.5, 0.9, 1}
(q = 0 is funad's default, q = 1 the plain, uncorroborated distance to the same bank). One fit
serves every q (the bank and the vouched distances do not depend on it:
``NearestNeighbourScorer.with_corroboration_quantile``).

For each DATASET (``ROOT`` or ``ROOT:CATEGORY``) and seed, on one split of the contaminated-data
protocol (``--contamination``), as ``benchmarks/defaults_probe.py`` makes and evaluates it:

* **test** (the oracle table): every candidate fitted on the whole contaminated training set,
  evaluated on the split's test sets as ``funad benchmark`` evaluates them (image AUROC; pixel
  AUROC where the dataset has masks; no-overlap and overlap). Test labels are read here only.
* **proxy**, from the training images alone: a seeded ``--holdout`` share (20 %) of the training
  images is held out and the candidates are fitted on the rest; FUN-AD*'s synthetic anomalies
  (``funad.data.synthetic.synthesize_anomalies``: a Perlin-noise blob filled with texture cut from
  another held-out image), as many as there are held-out images, are written as PNGs (with their
  masks) into a work folder, so that the ordinary extraction and feature cache handle them. Each
  candidate scores the held-out originals (label 0) against the defective copies (label 1):
  image AUROC, and pixel AUROC on the synthetic masks. ``proxy no-overlap`` fits on the
  remaining images only; ``proxy overlap`` also adds the defective copies to the fit set
  (contamination that reappears at test time, as in the overlap setting). ``--defects demo``
  plants the demo dataset's defects instead (``funad.data.synthetic.add_defect``: foreign
  scikit-image texture, a thin scratch or a missing chunk, one per held-out image): a second,
  independent proxy, recorded under its own kinds; FUN-AD*'s is the one named in advance.

The rules: argmax over q of the proxy image AUROC, ``no-overlap``, ``overlap``, or ``mean`` (the
mean of both; the rule named in advance as the main one). Ties go to the lower q (the default
side). The held-out images can include planted real anomalies (the rule cannot know which);
their count is recorded as a diagnostic and selects nothing.

Records are appended to ``--out`` as each fit finishes (one per candidate), so a stopped run keeps
its finished work; a rerun with the same ``--out`` skips the fits whose records are all there.
``--summary`` prints the oracle table, the proxy values, and the rules' choices against the best
fixed q (the q of the best mean test image AUROC over datasets and settings) and the oracle (per
dataset and seed, the q of the best test image AUROC, mean of both settings)::

    python benchmarks/selection_rule.py ../shared/data/mvtec:bottle ../shared/data/mvtec:screw \\
        ../shared/data/magnetic_tile --seeds 0 --contamination 0.1 --out runs/selection_rule.jsonl
    python benchmarks/selection_rule.py --summary runs/selection_rule.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from funad.benchmark.datasets import Dataset, Sample
from funad.benchmark.protocol import SETTINGS, Split
from funad.benchmark.runner import Evaluator  # funad benchmark's evaluation, so the numbers compare
from funad.cli.fit import add_config_options
from funad.data.augment import _LazyImages
from funad.data.synthetic import add_defect, load_demo_textures, synthesize_anomalies
from funad.features.containers import FeatureSet
from funad.inference.scorers.knn import NearestNeighbourScorer
from funad.utils.shares import share_count

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is no package
from defaults_probe import (
    POOL_CAP,
    VARIANTS,
    Extractor,
    backbone_of,
    backbones_of,
    mean_cell,
    prepare_run,
    split_facts,
    variant_features,
)

logger = logging.getLogger("selection_rule")

QUANTILES = (0.0, 0.25, 0.5, 0.9, 1.0)
HOLDOUT_SHARE = 0.2
#: Seeds the held-out draw and the synthetic anomalies apart from the split's own draws.
PROXY_STREAM = 7_211
PROXIES = ("no-overlap", "overlap")
#: Synthetic defects planted in the held-out images (funad_star: the brief's, named in advance).
DEFECTS = ("funad_star", "demo")
RULES = (*PROXIES, "mean")
MAIN_RULE = "mean"
#: FunADConfig fields the benchmark sets itself.
OWNED_FIELDS = ("backbone", "weights", "level", "seed", "scorer", "knn_patch_fraction", "knn_pool_max_patches",
                "knn_corroborated", "knn_corroboration_quantile")


# --------------------------------------------------------------------------- proxy data


@dataclass
class ProxySet:
    """One seed's held-out originals, the images the candidates are fitted on, and the defective copies."""

    fit: list[Path]
    heldout: list[Path]
    copies: list[Path]
    masks: list[Path]
    heldout_moved: int  # planted real anomalies among the held-out images: a diagnostic, read by nothing

    def samples(self) -> list[Sample]:
        return ([Sample(path, 0) for path in self.heldout]
                + [Sample(path, 1, mask, "synthetic") for path, mask in zip(self.copies, self.masks)])


def holdout(split: Split, share: float) -> tuple[list[Path], list[Path]]:
    """(fit, held out): a seeded ``share`` of the split's training images held out, both in training order."""
    count = max(2, share_count(share, len(split.train)))
    if count >= len(split.train) - 1:
        raise ValueError(f"{split.category}: holding out {count} of {len(split.train)} training images leaves "
                         "too few to fit on")
    chosen = set(np.random.default_rng([split.seed, PROXY_STREAM]).choice(len(split.train), count,
                                                                           replace=False).tolist())
    return ([p for i, p in enumerate(split.train) if i not in chosen],
            [p for i, p in enumerate(split.train) if i in chosen])


def synthetic_defects(paths: list[Path], defects: str,
                      rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image, mask)``, as many as ``paths``: FUN-AD*'s own (``funad_star``) or the demo set's (``demo``).

    ``funad_star``: :func:`synthesize_anomalies` (random targets, texture of another of the images).
    ``demo``: one per image, :func:`add_defect` (foreign scikit-image texture, a scratch or a missing chunk).
    """
    images = _LazyImages(paths)
    if defects == "funad_star":
        yield from synthesize_anomalies(images, len(paths), rng)
        return
    textures = load_demo_textures().defects
    for index in range(len(images)):
        yield add_defect(images[index], textures, rng)


def make_proxy_set(split: Split, share: float, folder: Path, defects: str = "funad_star") -> ProxySet:
    """Hold out images and write one synthetic anomaly per held-out image (and its mask) into ``folder``.

    The same split, share and images give the same bytes, so a rerun finds their features in the cache.
    """
    fit, heldout = holdout(split, share)
    rng = np.random.default_rng([split.seed, PROXY_STREAM, DEFECTS.index(defects) + 1])
    folder.mkdir(parents=True, exist_ok=True)
    copies, masks = [], []
    for index, (image, mask) in enumerate(synthetic_defects(heldout, defects, rng)):
        copies.append(folder / f"synthetic_{index:04d}.png")
        masks.append(folder / f"synthetic_{index:04d}_mask.png")
        Image.fromarray(image).save(copies[-1])
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(masks[-1])
    moved = split.moved_paths
    return ProxySet(fit, heldout, copies, masks, sum(path in moved for path in heldout))


# --------------------------------------------------------------------------- fits and records


class Records:
    """The JSON lines file: appended record by record; the keys already there, so a rerun skips finished fits."""

    def __init__(self, out: Path):
        self.out = out
        self.done = {record_key(r) for r in read_records(out)} if out.is_file() else set()

    def has_all(self, dataset: str, variant: str, seed: int, kind: str, quantiles: Sequence[float]) -> bool:
        return all((dataset, variant, seed, kind, float(q)) in self.done for q in quantiles)

    def append(self, record: dict[str, Any]) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.done.add(record_key(record))


def record_key(record: dict[str, Any]) -> tuple:
    return record["dataset"], record["variant"], record["seed"], record["kind"], float(record["q"])


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fit_candidates(features: FeatureSet, seed: int) -> tuple[NearestNeighbourScorer, float]:
    """The corroborated knn bank: every image, a 10 % coreset of a capped pool, vouched for by the other images
    as they are. funad's default scorer when this was measured; today's (funad.config) differs: a 20 % coreset,
    vouched for also by the images' quarter turns, maps floored at the 5th other image, floors kept only for the
    highest-scoring half of the images."""
    started = time.perf_counter()
    scorer = NearestNeighbourScorer(0.1, seed, pool_max_patches=POOL_CAP, corroborated=True)
    scorer.fit(features.method_features("patch"))
    return scorer, time.perf_counter() - started


def evaluate_candidates(base: NearestNeighbourScorer, evaluator: Evaluator, quantiles: Sequence[float],
                        facts: dict[str, Any], fit_seconds: float, records: Records) -> None:
    for q in quantiles:
        metrics, predict_seconds = evaluator.evaluate(base.with_corroboration_quantile(q))
        record = {**facts, "q": float(q), **metrics, "fit_seconds": fit_seconds, "predict_seconds": predict_seconds}
        records.append(record)
        if facts["kind"] == "test":
            images = ", ".join(f"{s} {metrics[s]['image_auroc']:.4f}" for s in SETTINGS)
        else:
            images = f"{metrics['proxy']['image_auroc']:.4f}"
        logger.info("%s seed %d %s q=%g: image AUROC %s", facts["dataset"], facts["seed"], facts["kind"], q, images)


def run_dataset(root: Path, dataset: Dataset, splits: list[Split], args: argparse.Namespace,
                extractor: Extractor, records: Records, work: Path) -> None:
    variant = args.variant
    kinds = ["test", *(proxy_kind(proxy, args.defects) for proxy in PROXIES)]
    todo = [split for split in splits
            if not all(records.has_all(dataset.name, variant, split.seed, kind, args.quantiles) for kind in kinds)]
    if not todo:
        logger.info("%s: every record is there already", dataset.name)
        return
    proxies = {split.seed: make_proxy_set(split, args.holdout, work / dataset.name.replace("/", "_") / args.defects
                                          / f"seed{split.seed}", args.defects) for split in todo}
    paths = list(dict.fromkeys([p for split in todo for p in split.train] + [s.path for s in dataset.test]
                               + [p for proxy in proxies.values() for p in proxy.copies]))
    extractor = extractor.with_aspect_of([p for split in splits for p in split.train])  # every run alike
    features = variant_features(variant, {backbone: extractor.extract(backbone, paths)
                                          for backbone in backbones_of(variant)})
    model = extractor.model(variant)
    for split in todo:
        proxy = proxies[split.seed]
        common = {"dataset": dataset.name, "root": str(root), "variant": variant, **split_facts(split)}
        if not records.has_all(dataset.name, variant, split.seed, "test", args.quantiles):
            base, seconds = fit_candidates(features.subset(split.train), split.seed)
            evaluator = Evaluator(split, SETTINGS, features, model, dataset.has_masks)
            evaluate_candidates(base, evaluator, args.quantiles, {**common, "kind": "test"}, seconds, records)
        # The proxy's test set: held-out originals and their defective copies. Evaluator reads a
        # split's "overlap" test set as the whole of its test list; it is reported as "proxy".
        proxy_split = Split(dataset.name, split.ratio, split.seed, proxy.fit, [False] * len(proxy.fit),
                            proxy.samples())
        evaluator = Evaluator(proxy_split, ("overlap",), features, model, args.proxy_pixels)
        for name, fit_paths in (("no-overlap", proxy.fit), ("overlap", proxy.fit + proxy.copies)):
            kind = proxy_kind(name, args.defects)
            if records.has_all(dataset.name, variant, split.seed, kind, args.quantiles):
                continue
            base, seconds = fit_candidates(features.subset(fit_paths), split.seed)
            facts = {**common, "kind": kind, "defects": args.defects, "holdout": args.holdout,
                     "num_fit": len(fit_paths), "num_heldout": len(proxy.heldout), "num_synthetic": len(proxy.copies),
                     "heldout_moved": proxy.heldout_moved}
            evaluate_candidates(base, Renamed(evaluator), args.quantiles, facts, seconds, records)


class Renamed:
    """The proxy evaluator's metrics under "proxy" (its one setting is the whole proxy set, not "overlap")."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def evaluate(self, scorer: NearestNeighbourScorer) -> tuple[dict[str, dict[str, float]], float]:
        metrics, seconds = self.evaluator.evaluate(scorer)
        return {"proxy": metrics["overlap"]}, seconds


# --------------------------------------------------------------------------- rules and summary


def latest(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Records by key; a rerun of one (dataset, variant, seed, kind, q) replaces the earlier record."""
    return {record_key(record): record for record in records}


def choose(proxy_values: dict[float, float]) -> float:
    """argmax over q; ties go to the lower q."""
    best = max(proxy_values.values())
    return min(q for q, value in proxy_values.items() if value == best)


def proxy_kind(proxy: str, defects: str) -> str:
    """The records' kind: ``proxy no-overlap``, ``proxy overlap``; other defects than FUN-AD*'s named after them."""
    return f"proxy {proxy}" + ("" if defects == "funad_star" else f" ({defects})")


def rule_values(by_key: dict[tuple, dict[str, Any]], dataset: str, variant: str, seed: int,
                quantiles: Sequence[float], defects: str = "funad_star") -> dict[str, dict[float, float]] | None:
    """Each rule's proxy value per q for one (dataset, seed); None where a proxy record is missing."""
    values: dict[str, dict[float, float]] = {}
    for proxy in PROXIES:
        found = [by_key.get((dataset, variant, seed, proxy_kind(proxy, defects), q)) for q in quantiles]
        if any(record is None for record in found):
            return None
        values[proxy] = {q: record["proxy"]["image_auroc"] for q, record in zip(quantiles, found)}
    values["mean"] = {q: (values["no-overlap"][q] + values["overlap"][q]) / 2 for q in quantiles}
    return values


def test_metric(by_key: dict[tuple, dict[str, Any]], dataset: str, variant: str, seed: int, q: float,
                setting: str, metric: str) -> float | None:
    value: float | None = by_key[(dataset, variant, seed, "test", q)][setting].get(metric)
    return value


def percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def q_label(q: float) -> str:
    return f"{q:g} (plain)" if q == 1.0 else f"{q:g}"


def summary(records: list[dict[str, Any]], defects: str = "funad_star") -> str:
    by_key = latest(records)
    tests = [r for r in by_key.values() if r["kind"] == "test"]
    units = sorted({(r["dataset"], r["variant"], r["seed"]) for r in tests})
    quantiles = sorted({float(r["q"]) for r in tests})
    # Complete units only: every candidate on the test set, and every proxy.
    units = [u for u in units if all((*u, "test", q) in by_key for q in quantiles)
             and rule_values(by_key, *u, quantiles, defects) is not None]
    datasets = sorted({u[0] for u in units})
    seeds_of = {d: [u for u in units if u[0] == d] for d in datasets}
    lines: list[str] = []

    def mean_over(units_: list[tuple], q_of: Any, setting: str, metric: str) -> float | None:
        values = [test_metric(by_key, *u, q_of(u), setting, metric) for u in units_]
        present = [v for v in values if v is not None]
        return float(np.mean(present)) if present else None

    lines += ["### Test AUROC of each candidate (oracle table; image / pixel %, mean over seeds)", "",
              "| dataset | setting | seeds | " + " | ".join(f"q = {q_label(q)}" for q in quantiles) + " |",
              "|---|---|---|" + "---|" * len(quantiles)]
    for dataset in datasets:
        for setting in SETTINGS:
            cells = []
            for q in quantiles:
                image = mean_over(seeds_of[dataset], lambda u, q=q: q, setting, "image_auroc")
                pixel = mean_over(seeds_of[dataset], lambda u, q=q: q, setting, "pixel_auroc")
                cells.append(percent(image) + ("" if pixel is None else f" / {percent(pixel)}"))
            lines.append(f"| {dataset} | {setting} | {len(seeds_of[dataset])} | " + " | ".join(cells) + " |")

    lines += ["", "### Proxy (training images only): held-out originals vs synthetic copies, image AUROC % "
                  "(pixel AUROC on the synthetic masks), mean over seeds", "",
              "| dataset | proxy | " + " | ".join(f"q = {q_label(q)}" for q in quantiles) + " |",
              "|---|---|" + "---|" * len(quantiles)]
    for dataset in datasets:
        for proxy in (*PROXIES, "mean"):
            cells = []
            for q in quantiles:
                if proxy == "mean":
                    value = np.mean([rule_values(by_key, *u, quantiles, defects)["mean"][q]
                                     for u in seeds_of[dataset]])
                    cells.append(percent(float(value)))
                    continue
                found = [by_key[(*u, proxy_kind(proxy, defects), q)]["proxy"] for u in seeds_of[dataset]]
                pixel = mean_cell([f.get("pixel_auroc") for f in found], 100, 2)
                image = mean_cell([f["image_auroc"] for f in found], 100, 2)
                cells.append(image + ("" if pixel == "-" else f" ({pixel})"))
            lines.append(f"| {dataset} | {proxy} | " + " | ".join(cells) + " |")

    lines += ["", "Per seed, the proxy image AUROC % (no-overlap / overlap / mean) that each rule maximises:", "",
              "| dataset | seed | " + " | ".join(f"q = {q_label(q)}" for q in quantiles) + " |",
              "|---|---|" + "---|" * len(quantiles)]
    for unit in units:
        values = rule_values(by_key, *unit, quantiles, defects)
        assert values is not None
        cells = [" / ".join(percent(values[r][q], 1) for r in RULES) for q in quantiles]
        lines.append(f"| {unit[0]} | {unit[2]} | " + " | ".join(cells) + " |")

    # Best fixed q: the best mean test image AUROC over datasets and settings (datasets weigh alike).
    def fixed_score(q: float) -> float:
        return float(np.mean([mean_over(seeds_of[d], lambda u: q, s, "image_auroc") for d in datasets
                              for s in SETTINGS]))

    fixed_scores = {q: fixed_score(q) for q in quantiles}
    best_fixed = choose(fixed_scores)

    def oracle_q(unit: tuple) -> float:
        return choose({q: float(np.mean([test_metric(by_key, *unit, q, s, "image_auroc") for s in SETTINGS]))
                       for q in quantiles})

    def rule_q(rule: str) -> Any:
        return lambda unit: choose(rule_values(by_key, *unit, quantiles, defects)[rule])

    choosers = {**{f"rule ({r})": rule_q(r) for r in RULES}, f"best fixed (q = {best_fixed:g})": lambda u: best_fixed,
                "oracle": oracle_q}
    lines += ["", "Mean test image AUROC over datasets and settings per fixed q: "
              + ", ".join(f"q = {q_label(q)}: {percent(v)}" for q, v in fixed_scores.items())
              + f"; best fixed q = {best_fixed:g}.", "",
              f"### Choices (per seed) and their test AUROC (image / pixel %, mean over seeds); main rule: "
              f"{MAIN_RULE}", "",
              "| dataset | setting | " + " | ".join(choosers) + " |", "|---|---|" + "---|" * len(choosers)]
    for dataset in datasets:
        picks = " | ".join(",".join(f"{chooser(u):g}" for u in seeds_of[dataset]) for chooser in choosers.values())
        lines.append(f"| {dataset} | q chosen | {picks} |")
        for setting in SETTINGS:
            cells = []
            for chooser in choosers.values():
                image = mean_over(seeds_of[dataset], chooser, setting, "image_auroc")
                pixel = mean_over(seeds_of[dataset], chooser, setting, "pixel_auroc")
                cells.append(percent(image) + ("" if pixel is None else f" / {percent(pixel)}"))
            lines.append(f"| {dataset} | {setting} | " + " | ".join(cells) + " |")
    for setting in SETTINGS:
        cells = []
        for chooser in choosers.values():
            image = np.mean([mean_over(seeds_of[d], chooser, setting, "image_auroc") for d in datasets])
            pixels = [mean_over(seeds_of[d], chooser, setting, "pixel_auroc") for d in datasets]
            pixel = [p for p in pixels if p is not None]
            cells.append(percent(float(image)) + (f" / {percent(float(np.mean(pixel)))}" if pixel else ""))
        lines.append(f"| **mean** | {setting} | " + " | ".join(cells) + " |")
    cells = []
    for chooser in choosers.values():
        cells.append(percent(float(np.mean([mean_over(seeds_of[d], chooser, s, "image_auroc")
                                            for d in datasets for s in SETTINGS]))))
    lines.append("| **mean** | both (image) | " + " | ".join(cells) + " |")
    seconds = [r["fit_seconds"] + r["predict_seconds"] for r in by_key.values() if r["kind"].startswith("proxy")]
    if seconds:
        lines += ["", f"Proxy cost: {sum(seconds):.0f} s of fits and scoring over {len(units)} (dataset, seed) "
                      "units, not counting the synthetic images' extraction."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", metavar="DATASET", help="ROOT or ROOT:CATEGORY, as for funad benchmark")
    parser.add_argument("--variant", choices=VARIANTS, default="m468",
                        help="features (defaults_probe's variants; m468: funad's default)")
    parser.add_argument("--quantiles", type=float, nargs="+", default=list(QUANTILES),
                        help="candidate corroboration quantiles (1: plain)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--contamination", type=float, default=0.1)
    parser.add_argument("--holdout", type=float, default=HOLDOUT_SHARE, help="share of training images held out")
    parser.add_argument("--defects", choices=DEFECTS, default="funad_star",
                        help="synthetic defects planted in the held-out images: FUN-AD*'s (default) or the demo "
                             "set's (foreign texture, scratch, missing chunk); for --summary too")
    parser.add_argument("--no-proxy-pixels", dest="proxy_pixels", action="store_false",
                        help="skip the proxy's pixel AUROC on the synthetic masks")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the synthetic images are written (default: a temporary folder, removed)")
    parser.add_argument("--out", type=Path, help="JSON lines file the records are appended to")
    parser.add_argument("--summary", type=Path, metavar="FILE", help="print the Markdown tables of FILE's records")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/funad/features)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--random-weights", action="store_true",
                        help="efficientnet_lite0 with random weights, never cached (smoke runs and tests)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-record lines")
    add_config_options(parser)
    args = parser.parse_args(argv)
    if args.summary is None and not (args.datasets and args.out):
        parser.error("give DATASET... and --out FILE, or --summary FILE")
    owned = [name for name in OWNED_FIELDS if hasattr(args, name)]
    if owned:
        parser.error(f"the benchmark sets {', '.join(owned)} itself (use --seeds for seeds)")
    if args.random_weights and backbone_of(args.variant) != "efficientnet_lite0":
        parser.error("--random-weights needs --variant efficientnet_lite0 (the DINOv2 ONNX graph has none)")
    args.quantiles = sorted(set(args.quantiles))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.summary is not None:
        print(summary(read_records(args.summary), args.defects))
        return 0
    extractor, datasets = prepare_run(args, logger)
    records = Records(args.out)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="selection_rule_"))
    try:
        for root, dataset, splits in datasets:
            run_dataset(root, dataset, splits, args, extractor, records, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
