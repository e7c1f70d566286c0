"""Score a folder of generated images with GenEval's rules; one process or under torchrun.

    python -m geneval.evaluate OUTDIR [--outfile OUTDIR/results.jsonl] [--config run.yaml]
                               [--cache-dir DIR] [key=value ...]
    torchrun --nproc_per_node=K -m geneval.evaluate OUTDIR detector=hf

OUTDIR has the official layout (``geneval.layout``). ``key=value`` overrides fields of
``GenEvalConfig`` (e.g. ``detector=shapes threshold=0.5``); ``--config`` reads a YAML file, its
``geneval:`` section if it has one. Writes, beside the outfile:

- ``results.jsonl``: one record per image in evaluate_images.py's format, sorted by folder then
  image name, identical whatever the number of processes;
- ``results.errors.jsonl`` (only when there are errors): images that could not be read and
  folders with missing or malformed metadata. They are left out of the scores, never counted
  as wrong, and a WARNING line says how many there were;
- ``summary.md`` (``<stem>.summary.md`` for other outfile names): summary and markdown table.

Differences from upstream's driver (evaluate_images.py, and ddp_eval.py in Image-Generation-CoT):
runs on CPU; scores every ``samples/<digits>.png`` (ddp_eval scores only ``final.png``); a non-digit
folder is skipped with a warning instead of crashing the int() sort; images are sharded
``[rank::world]`` without padding, so no image is scored twice. Raw detections are cached per image
(``geneval.cache``): a killed run resumes where it stopped, and re-scoring with other rule settings
runs no detector. All outputs are written atomically.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image, ImageOps
from tqdm import tqdm

from distributed import DistInfo, barrier, current_dist_info, destroy, init_distributed, resolve_device
from geneval.cache import DEFAULT_CACHE_DIR, CacheEntry, DetectionCache, color_key, detection_from_json, \
    detection_to_json, detector_key, file_digest
from geneval.config import GenEvalConfig, check_geneval_config
from geneval.detection import ColorClassifier, Detection, Detector
from geneval.detectors import DETECTORS, build_detector, describe_detector
from geneval.layout import SAMPLES_DIR, PromptFolder, atomic_write_text, image_sort_key, scan_outdir
from shapes.world import SHAPES
from geneval.rules import RuleConfig, evaluate_image, filter_detections, result_record
from geneval.summary import Summary, format_summary, load_results, markdown_table, summarize

DEFAULT_OUTFILE = "results.jsonl"
# PIL raises these for unreadable, truncated or malformed images (PngImagePlugin raises SyntaxError).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError)


# ----------------------------------------------------------------------------
# Configuration

RUN_CONFIG_FILE = "config.yaml"
"""What main.py saves in OUTDIR: its ``geneval:`` section says how the run is meant to be scored."""


def _yaml_section(path) -> object:
    if not Path(path).is_file():
        raise ValueError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        section = OmegaConf.load(path)
    except Exception as err:  # yaml's and OmegaConf's parse errors share no base class
        raise ValueError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not OmegaConf.is_dict(section):
        raise ValueError(f"config file {path} must hold a mapping of GenEval settings (or a geneval: section)")
    return section.geneval if "geneval" in section else section


def load_config(config_path: str | None = None, overrides: list[str] = (), outdir=None) -> GenEvalConfig:
    """``GenEvalConfig`` from defaults, then the ``geneval:`` section of ``outdir/config.yaml`` (a main.py
    run: so a shapes-world run is scored by the shapes detector without saying so), then a YAML
    file (its ``geneval:`` section if any), then ``key=value``s. Raises ValueError naming the problem."""
    valid = {f.name for f in dataclasses.fields(GenEvalConfig)}
    merged = OmegaConf.structured(GenEvalConfig)
    layers = []
    if outdir is not None and (Path(outdir) / RUN_CONFIG_FILE).is_file():
        run_config = Path(outdir) / RUN_CONFIG_FILE
        layers.append((str(run_config), _yaml_section(run_config)))
    if config_path is not None:
        layers.append((config_path, _yaml_section(config_path)))
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"expected key=value, got {override!r}; e.g. detector=shapes threshold=0.5")
    if overrides:
        try:
            layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
        except Exception as err:  # a value that is not YAML
            raise ValueError(f"cannot parse {list(overrides)}: {str(err).splitlines()[0]}") from err
    for source, layer in layers:
        unknown = sorted(set(layer.keys()) - valid)
        if unknown:
            raise ValueError(f"{source}: unknown GenEval setting(s) {unknown}; valid keys: {sorted(valid)}")
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise ValueError(f"{source}: bad GenEval setting {key}: {str(err).splitlines()[0]}") from err
    cfg = OmegaConf.to_object(merged)
    check_geneval_config(cfg)
    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown detector {cfg.detector!r}; valid: {sorted(DETECTORS)} (detector=shapes "
                         "for shapes-world runs)")
    return cfg


# ----------------------------------------------------------------------------
# What to score

@dataclass
class ImageItem:
    folder: PromptFolder
    name: str

    @property
    def relpath(self) -> str:
        """Path relative to OUTDIR: the cache and resume key."""
        return f"{self.folder.name}/{SAMPLES_DIR}/{self.name}"

    @property
    def path(self) -> Path:
        return self.folder.image_path(self.name)

    def filename(self, outdir) -> str:
        # Upstream's record: os.path.join(imagedir, subfolder, "samples", imagename), imagedir as given.
        return os.path.join(os.fspath(outdir), self.folder.name, SAMPLES_DIR, self.name)

    def sort_key(self) -> list:
        return [self.folder.index, self.folder.name, *image_sort_key(self.name)]


def _metadata_classes(metadata: dict) -> set[str]:
    return {clause["class"] for clause in metadata.get("include", []) + metadata.get("exclude", [])}


def _decode_image(path: Path) -> np.ndarray:
    # evaluate_images.py reads the image with ImageOps.exif_transpose for colour crops; mmcv's
    # cv2 reader applies EXIF orientation too. Opening by path makes PIL's errors name the file.
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


class _Models:
    """Builds the detector (and colour classifier) on first use: a fully cached run loads nothing."""

    def __init__(self, cfg: GenEvalConfig, device: torch.device, classes: list[str]):
        self.cfg, self.device, self.classes = cfg, device, classes
        self._built: tuple[Detector, ColorClassifier | None] | None = None

    def _get(self) -> tuple[Detector, ColorClassifier | None]:
        if self._built is None:
            self._built = build_detector(self.cfg, self.device, self.classes)
        return self._built

    def detector(self) -> Detector:
        return self._get()[0]

    def color_classifier(self) -> ColorClassifier | None:
        return self._get()[1]


# ----------------------------------------------------------------------------
# Scoring one shard

@dataclass
class ShardResult:
    records: list[tuple[list, dict]] = field(default_factory=list)
    """(sort key, results.jsonl record)."""
    errors: list[tuple[list, dict]] = field(default_factory=list)
    """(sort key, {"filename", "error"})."""
    num_detected: int = 0
    num_cached: int = 0


class _ShardScorer:
    def __init__(self, outdir, cfg: GenEvalConfig, models: _Models, cache: DetectionCache):
        self.outdir, self.cfg, self.models, self.cache = outdir, cfg, models, cache
        self.rule_cfg = RuleConfig.from_geneval(cfg)
        self.color_key = color_key(cfg)
        self.detector_name = describe_detector(cfg)
        self.result = ShardResult()

    def run(self, items: list[ImageItem], show_progress: bool) -> ShardResult:
        pending: list[tuple[ImageItem, str, np.ndarray]] = []
        for item in tqdm(items, desc="geneval", unit="img", disable=not show_progress):
            data = self._read(item)
            if data is None:
                continue
            digest = file_digest(data)
            entry = self.cache.load(item.relpath, digest, self.models.classes)
            if entry is not None:
                self.result.num_cached += 1
                self._score(item, entry)
                continue
            try:
                image = _decode_image(item.path)
            except IMAGE_ERRORS as err:
                self._error(item, err)
                continue
            pending.append((item, digest, image))
            if len(pending) >= self.cfg.batch_size:
                self._detect(pending)
                pending = []
        if pending:
            self._detect(pending)
        return self.result

    def _read(self, item: ImageItem) -> bytes | None:
        try:
            return item.path.read_bytes()
        except OSError as err:
            self._error(item, err)
            return None

    def _error(self, item: ImageItem, err: Exception) -> None:
        self.result.errors.append((item.sort_key(), {"filename": item.filename(self.outdir),
                                                      "error": f"{type(err).__name__}: {err}"}))

    def _detect(self, batch: list[tuple[ImageItem, str, np.ndarray]]) -> None:
        all_detections = self.models.detector().detect([image for *_, image in batch])
        assert len(all_detections) == len(batch), "a detector must return one list per image"
        for (item, digest, image), detections in zip(batch, all_detections):
            # Round-trip through the cache's JSON form so a fresh run and a resumed run score the same values.
            detections = [detection_from_json(detection_to_json(d)) for d in detections]
            entry = CacheEntry(image=item.relpath, digest=digest, classes=self.models.classes, detections=detections)
            self.cache.save(entry)
            self.result.num_detected += 1
            self._score(item, entry, image)

    def _score(self, item: ImageItem, entry: CacheEntry, image: np.ndarray | None = None) -> None:
        metadata = item.folder.metadata
        colors = _CachedColors(entry, self.color_key, self.models, item.path, image)
        detected = filter_detections(metadata, entry.detections, self.rule_cfg)
        correct, reason = evaluate_image(metadata, detected, self.rule_cfg, colors_of=colors)
        if colors.changed:
            self.cache.save(entry)
        record = result_record(item.filename(self.outdir), metadata, correct, reason, detected)
        record["detector"] = self.detector_name  # which weights made this verdict (official or GenEval-style)
        self.result.records.append((item.sort_key(), record))


class _CachedColors:
    """``colors_of`` for the rules: the detector's own colour, else a cached or freshly classified one."""

    def __init__(self, entry: CacheEntry, key: str, models: _Models, path: Path, image: np.ndarray | None):
        self.entry, self.models, self.path, self.image = entry, models, path, image
        self.table = entry.colors.setdefault(key, {})
        self.index = {id(d): i for i, d in enumerate(entry.detections)}
        self.changed = False

    def __call__(self, classname: str, found: list[Detection]) -> list[str]:
        # filter_detections returns the entry's own Detection objects, so identity finds their index.
        keys = [f"{classname}/{self.index[id(d)]}" for d in found]
        missing = [(k, d) for k, d in zip(keys, found) if d.color is None and k not in self.table]
        if missing:
            self._classify(classname, missing)
        return [d.color if d.color is not None else self.table[k] for k, d in zip(keys, found)]

    def _classify(self, classname: str, missing: list[tuple[str, Detection]]) -> None:
        classifier = self.models.color_classifier()
        if classifier is None:
            raise ValueError(f"a colour clause for {classname!r} met detections without a colour, and the "
                             f"{self.models.cfg.detector!r} backend has no colour classifier")
        if self.image is None:
            self.image = _decode_image(self.path)
        colors = classifier.classify(self.image, [d for _, d in missing], classname)
        assert len(colors) == len(missing), "a colour classifier must name one colour per detection"
        for (k, _), color in zip(missing, colors):
            self.table[k] = color
        self.changed = True


# ----------------------------------------------------------------------------
# Part files and merging

def _part_path(outfile: Path, info: DistInfo) -> Path:
    return outfile.parent / f".{outfile.name}.part-{info.rank:04d}-of-{info.world_size:04d}"


def _write_part(path: Path, result: ShardResult) -> None:
    lines = [json.dumps({"kind": "record", "sort": k, "data": r}) for k, r in result.records]
    lines += [json.dumps({"kind": "error", "sort": k, "data": e}) for k, e in result.errors]
    lines.append(json.dumps({"kind": "stats", "detected": result.num_detected, "cached": result.num_cached}))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _read_parts(paths: list[Path]) -> ShardResult:
    merged = ShardResult()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            if obj["kind"] == "record":
                merged.records.append((obj["sort"], obj["data"]))
            elif obj["kind"] == "error":
                merged.errors.append((obj["sort"], obj["data"]))
            else:
                merged.num_detected += obj["detected"]
                merged.num_cached += obj["cached"]
    merged.records.sort(key=lambda pair: pair[0])
    merged.errors.sort(key=lambda pair: pair[0])
    return merged


def _jsonl(objects: list[dict]) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def errors_path(outfile) -> Path:
    outfile = Path(outfile)
    return outfile.with_name(f"{outfile.stem}.errors{outfile.suffix}")


def summary_path(outfile) -> Path:
    outfile = Path(outfile)
    return outfile.with_name("summary.md" if outfile.name == DEFAULT_OUTFILE else f"{outfile.stem}.summary.md")


# ----------------------------------------------------------------------------
# The evaluation

@dataclass
class EvalReport:
    summary: Summary
    outfile: Path
    num_images: int
    """Images scored (records in the outfile)."""
    num_detected: int
    """Images the detector ran on in this run; the rest came from the cache."""
    num_cached: int
    errors: list[dict]


def _folder_errors(folders: list[PromptFolder]) -> list[tuple[list, dict]]:
    return [([f.index, f.name, -1, ""], {"filename": str(f.path), "error": f.error}) for f in folders if f.error]


def _scan(outdir, info: DistInfo) -> list[PromptFolder]:
    if info.is_main:
        return scan_outdir(outdir)
    with warnings.catch_warnings():  # rank 0 already warned about skipped folders
        warnings.simplefilter("ignore")
        return scan_outdir(outdir)


def run_evaluation(outdir, cfg: GenEvalConfig, dist_info: DistInfo | None = None, outfile=None,
                   cache_dir=None) -> EvalReport:
    """Score ``outdir`` and write the outfile, errors file and summary; see ``evaluate_outdir``."""
    info = dist_info or current_dist_info()
    outfile = Path(outfile) if outfile is not None else Path(outdir) / DEFAULT_OUTFILE
    folders = _scan(outdir, info)
    items = [ImageItem(f, name) for f in folders if f.error is None for name in f.images]
    if not items:
        raise ValueError(f"{outdir}: no images to score; expected <digits>/{SAMPLES_DIR}/<digits>.png files "
                         f"and <digits>/metadata.jsonl ({sum(1 for f in folders if f.error)} folders had errors)")
    classes = sorted(set().union(*(_metadata_classes(f.metadata) for f in folders if f.error is None)))
    if cfg.detector != "shapes" and set(classes) <= set(SHAPES):
        raise ValueError(f"{outdir} holds shapes-world prompts ({', '.join(classes)}), which the {cfg.detector!r} "
                         "detector does not know; score them with detector=shapes")
    cache = DetectionCache(Path(cache_dir) if cache_dir is not None else Path(outdir) / DEFAULT_CACHE_DIR,
                           detector_key(cfg))
    models = _Models(cfg, resolve_device(cfg.device, info.local_rank), classes)
    shard = _ShardScorer(outdir, cfg, models, cache).run(items[info.rank::info.world_size], info.is_main)
    if info.is_main:
        shard.errors += _folder_errors(folders)
    part = _part_path(outfile, info)
    _write_part(part, shard)
    barrier(info)
    if info.is_main:
        _merge_and_report(outdir, outfile, info, cfg)
    barrier(info)
    return _report_from_outputs(outfile, info)


def _merge_and_report(outdir, outfile: Path, info: DistInfo, cfg: GenEvalConfig) -> None:
    parts = [_part_path(outfile, DistInfo(rank=r, world_size=info.world_size)) for r in range(info.world_size)]
    merged = _read_parts(parts)
    atomic_write_text(outfile, _jsonl([r for _, r in merged.records]))
    errors = [e for _, e in merged.errors]
    if errors:
        atomic_write_text(errors_path(outfile), _jsonl(errors))
    else:
        errors_path(outfile).unlink(missing_ok=True)  # a stale errors file would describe another run
    # Keep the counts until every rank has read them (_report_from_outputs), then clean parts of other world sizes.
    atomic_write_text(_stats_path(outfile), json.dumps({"detected": merged.num_detected, "cached": merged.num_cached}))
    for part in parts + sorted(outfile.parent.glob(f".{outfile.name}.part-*")):
        part.unlink(missing_ok=True)
    if not merged.records:
        return
    summary = summarize([r for _, r in merged.records])
    text = format_summary(summary)
    table = markdown_table([(Path(outdir).name or os.fspath(outdir), summary)])
    error_line = _error_line(errors, outfile)
    print(text)
    print()
    print(table)
    print(f"geneval: {len(merged.records)} images scored ({merged.num_detected} detected, {merged.num_cached} "
          f"from cache) -> {outfile}")
    if error_line:
        print(error_line, file=sys.stderr)
    atomic_write_text(summary_path(outfile), _summary_markdown(outdir, cfg, text, table, error_line))


def _stats_path(outfile: Path) -> Path:
    return outfile.parent / f".{outfile.name}.stats"


def _error_line(errors: list[dict], outfile: Path) -> str:
    if not errors:
        return ""
    return (f"WARNING: {len(errors)} image(s)/folder(s) could not be scored and are LEFT OUT of the scores "
            f"(not counted as wrong); see {errors_path(outfile)}")


def _summary_markdown(outdir, cfg: GenEvalConfig, text: str, table: str, error_line: str) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items())
    parts = [f"# GenEval: {os.fspath(outdir)}", "", "```", text, "```", "", table, "",
             f"Detector: {describe_detector(cfg)}", "", f"Settings: {settings}"]
    if error_line:
        parts += ["", f"**{error_line}**"]
    return "\n".join(parts) + "\n"


def _report_from_outputs(outfile: Path, info: DistInfo) -> EvalReport:
    records = load_results(outfile)
    errors_file = errors_path(outfile)
    errors = [json.loads(line) for line in errors_file.read_text().splitlines()] if errors_file.is_file() else []
    stats = json.loads(_stats_path(outfile).read_text())
    barrier(info)  # every rank has read the counts
    if info.is_main:
        _stats_path(outfile).unlink()
    if not records:
        raise ValueError(f"none of the {len(errors)} images could be scored; see {errors_file}")
    return EvalReport(summary=summarize(records), outfile=outfile, num_images=len(records),
                      num_detected=stats["detected"], num_cached=stats["cached"], errors=errors)


def evaluate_outdir(outdir, cfg: GenEvalConfig, dist_info: DistInfo | None = None, outfile=None,
                    cache_dir=None) -> Summary:
    """Score every image of ``outdir``; writes the outfile (default ``outdir/results.jsonl``) and returns the Summary.

    Distributed use: call it on every rank of an initialized process group (``dist_info``
    describes it; None means "the running process group, if any, else one process"). Each rank
    scores ``images[rank::world]``, rank 0 merges, prints the summary and writes the files, and
    every rank returns the same Summary. Calling it on rank 0 only is wrong when a process
    group of several ranks exists (the barriers would wait forever); pass
    ``DistInfo()`` explicitly to score everything on one rank instead.
    """
    return run_evaluation(outdir, cfg, dist_info, outfile, cache_dir).summary


# ----------------------------------------------------------------------------
# CLI

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m geneval.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("outdir", help="folder with <digits>/metadata.jsonl and <digits>/samples/<digits>.png")
    parser.add_argument("overrides", nargs="*", help="GenEvalConfig overrides, e.g. detector=shapes threshold=0.5")
    parser.add_argument("--outfile", default=None, help="results file (default: OUTDIR/results.jsonl)")
    parser.add_argument("--config", default=None, help="YAML with GenEval settings (its geneval: section if any)")
    parser.add_argument("--cache-dir", default=None, help=f"detection cache (default: OUTDIR/{DEFAULT_CACHE_DIR})")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when an image or folder could not be scored (default: score the rest, "
                             "say so in the summary, exit 0)")
    return parser.parse_intermixed_args(argv)


def _user_error(err: Exception, info: DistInfo | None = None) -> int:
    """One line on the first process of each node (every process meets the same bad input); exit 2."""
    local_rank = info.local_rank if info is not None else int(os.environ.get("LOCAL_RANK", 0))
    if local_rank == 0:
        print(f"python -m geneval.evaluate: error: {err}", file=sys.stderr)
    return 2


def _check_outdir(outdir: str) -> None:
    if not Path(outdir).exists():
        raise ValueError(f"{outdir} does not exist; pass the --outdir of a main.py run")
    if not Path(outdir).is_dir():
        raise ValueError(f"{outdir} is not a folder; pass the --outdir of a main.py run")


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 scored; 2 bad input (one line says what to fix); 1 with ``--strict`` when some
    image or folder could not be scored."""
    args = parse_args(argv)
    try:
        _check_outdir(args.outdir)
        cfg = load_config(args.config, args.overrides, outdir=args.outdir)
        resolve_device(cfg.device)  # a bad device name is a user error too
    except ValueError as err:
        return _user_error(err)
    own_group = not (dist.is_available() and dist.is_initialized())  # a caller's group is left alone
    info = init_distributed(cfg.device)
    try:
        start = time.perf_counter()
        report = run_evaluation(args.outdir, cfg, info, args.outfile, args.cache_dir)
    except (ValueError, FileNotFoundError) as err:  # bad settings, or detector weights that are not here
        return _user_error(err, info)
    finally:
        if own_group:
            destroy(info)
    if info.is_main:
        unscored = (f"; {len(report.errors)} image(s)/folder(s) could NOT be scored, see {errors_path(report.outfile)}"
                    if report.errors else "")
        print(f"geneval: done in {time.perf_counter() - start:.1f} s; GenEval score {report.summary.overall:.5f}"
              f"{unscored}")
    if args.strict and report.errors:
        if info.is_main:
            print(f"python -m geneval.evaluate: error: --strict: {len(report.errors)} image(s)/folder(s) could not "
                  f"be scored; see {errors_path(report.outfile)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
