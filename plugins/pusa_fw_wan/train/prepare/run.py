"""`prepare_dataset`: encode every item of a dataset folder into the latent cache, resumably.

Per item: the caption is checked, the file hashed (SHA-256), and if every clip file of the item already
carries that hash, the caption and the same settings fingerprint (settings + codec + text-encoder
identity), the item is reused untouched. Otherwise its clips are decoded, resized to their bucket,
encoded and written atomically, and clip files left over from an earlier, longer cut are removed. An item
that fails (missing, corrupt, too short, unreadable caption, an encoder error) is named in the summary and
the run goes on; ``index.json`` is rewritten every ``index_every`` items and at the end.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pusa_fw.io.atomic import atomic_write_bytes
from pusa_fw_wan.train.cache_format import read_clip_metadata, write_clip, write_index
from pusa_fw_wan.train.prepare.buckets import aspect_buckets
from pusa_fw_wan.train.prepare.config import PrepareConfig
from pusa_fw_wan.train.prepare.encoders import TextEmbedder, VideoCodec, identity_of
from pusa_fw_wan.train.prepare.manifest import ManifestItem, read_manifest
from pusa_fw_wan.train.prepare.media import MediaClip, MediaProblem, read_item_clips

__all__ = ["CLIPS_DIR", "PrepareSummary", "SkippedItem", "prepare_dataset"]

CLIPS_DIR = "clips"
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class SkippedItem:
    """An item that produced no clips: `reason` is ``missing``, ``corrupt``, ``too short``,
    ``unreadable caption`` or ``encode failed``; `detail` says what exactly."""

    source: str
    reason: str
    detail: str


@dataclass
class PrepareSummary:
    """What a run did.

    Attributes:
        encoded: items (manifest file names) encoded in this run.
        reused: items already in the cache and unchanged (not touched).
        skipped: items that gave no clips, with the reason.
        clips: clips listed in the index after the run.
        index_path: the written ``index.json``.
    """

    encoded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    clips: int = 0
    index_path: Path | None = None

    def lines(self) -> list[str]:
        """A human summary: one line of counts, then one line per skipped item."""
        head = (
            f"{self.clips} clips in {self.index_path}: {len(self.encoded)} items encoded, "
            f"{len(self.reused)} already prepared, {len(self.skipped)} skipped"
        )
        return [head] + [f"skipped {item.source}: {item.reason} ({item.detail})" for item in self.skipped]


def _item_key(file_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(file_name).stem)[:48] or "item"
    return f"{stem}-{hashlib.sha256(file_name.encode()).hexdigest()[:10]}"


def _clip_path(out: Path, key: str, index: int) -> Path:
    return out / CLIPS_DIR / f"{key}_{index:03d}.safetensors"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry(out: Path, path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "file": path.relative_to(out).as_posix(),
        "source": metadata["source"],
        "clip_index": int(metadata["clip_index"]),
        "latents_shape": json.loads(metadata["latents_shape"]),
        "context_shape": json.loads(metadata["context_shape"]),
        "caption": metadata["caption"],
    }


def _reusable(out: Path, key: str, item: ManifestItem, source_hash: str, settings: str) -> list[dict] | None:
    """Index entries of an item whose cached clips all match, else None."""
    first = read_clip_metadata(_clip_path(out, key, 0))
    if first is None or not first.get("item_clips", "").isdigit():
        return None
    entries = []
    for index in range(int(first["item_clips"])):
        path = _clip_path(out, key, index)
        metadata = first if index == 0 else read_clip_metadata(path)
        if metadata is None or (
            metadata.get("source_sha256"),
            metadata.get("settings"),
            metadata.get("caption"),
            metadata.get("source"),
        ) != (source_hash, settings, item.caption, item.file_name):
            return None
        entries.append(_entry(out, path, metadata))
    return entries


def _remove_stale(out: Path, key: str, count: int) -> None:
    for path in (out / CLIPS_DIR).glob(f"{key}_*.safetensors"):
        suffix = path.stem.rsplit("_", 1)[-1]
        if suffix.isdigit() and int(suffix) >= count:
            path.unlink(missing_ok=True)


def _encode_clip(codec: VideoCodec, clip: MediaClip) -> torch.Tensor:
    from pusa_fw.io.pixels import uint8_to_video

    video = uint8_to_video(clip.frames)[None]
    latents = codec.encode(video)
    expected = (1, *codec.geometry.latent_shape(*video.shape[2:]))
    if tuple(latents.shape) != expected:
        raise RuntimeError(f"the codec returned latents {tuple(latents.shape)}, expected {expected}")
    return latents[0].float().cpu()


class _Run:
    """State of one `prepare_dataset` call."""

    def __init__(self, config: PrepareConfig, codec: VideoCodec, text: TextEmbedder) -> None:
        geometry = codec.geometry
        for count in config.num_frames:
            geometry.num_latent_frames(count)  # raises FrameMapError naming the valid counts
        self.frame_counts = config.num_frames
        if config.aspect_buckets:
            self.buckets = aspect_buckets(config.height, config.width, geometry.spatial_multiple)
        else:
            geometry.check_spatial_size(config.height, config.width)
            self.buckets = [(config.height, config.width)]
        self.config, self.codec, self.text = config, codec, text
        self.out = config.out.expanduser()
        self.codec_identity, self.text_identity = identity_of(codec), identity_of(text)
        identity = f"{config.fingerprint()}|{self.codec_identity}|{self.text_identity}"
        self.settings = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.contexts: dict[str, torch.Tensor] = {}
        self.context_length = getattr(text, "max_length", None)

    def index_extra(self) -> dict[str, Any]:
        return {
            "codec": self.codec_identity,
            "text_encoder": self.text_identity,
            "context_length": self.context_length,
            "settings": self.settings,
            "geometry": self.codec.geometry.model_dump(),
        }

    def context(self, caption: str) -> torch.Tensor:
        if caption not in self.contexts:
            self.contexts = {caption: self.text.encode([caption])[0].float().cpu()}
        return self.contexts[caption]

    def encode_item(self, item: ManifestItem, key: str, source_hash: str) -> list[dict[str, Any]]:
        clips = read_item_clips(item, self.config, self.buckets, self.codec.geometry, self.frame_counts)
        try:
            context = self.context(item.caption)
            encoded = [_encode_clip(self.codec, clip) for clip in clips]
        except (RuntimeError, ValueError) as error:
            raise MediaProblem("encode failed", f"{type(error).__name__}: {error}") from error
        entries = []
        for index, (clip, latents) in enumerate(zip(clips, encoded)):
            metadata = {
                "source": item.file_name,
                "source_sha256": source_hash,
                "kind": clip.kind,
                "caption": item.caption,
                "clip_index": str(index),
                "item_clips": str(len(clips)),
                "frame_indices": list(clip.source_indices),
                "fps": "" if clip.fps is None else str(clip.fps),
                "source_fps": "" if clip.source_fps is None else str(clip.source_fps),
                "source_size": list(clip.source_size),
                "num_frames": str(clip.frames.shape[0]),
                "height": str(clip.frames.shape[1]),
                "width": str(clip.frames.shape[2]),
                "latents_shape": list(latents.shape),
                "context_shape": list(context.shape),
                "codec": self.codec_identity,
                "text_encoder": self.text_identity,
                "context_length": str(self.context_length or ""),
                "settings": self.settings,
                "geometry": self.codec.geometry.model_dump(),
            }
            path = _clip_path(self.out, key, index)
            write_clip(path, latents, context, metadata)
            entries.append(_entry(self.out, path, read_clip_metadata(path) or {}))
        _remove_stale(self.out, key, len(clips))
        return entries


def prepare_dataset(
    config: PrepareConfig, codec: VideoCodec, text: TextEmbedder, *, progress: bool = False
) -> PrepareSummary:
    """Encode a dataset folder into a latent cache (see the module docstring).

    Args:
        config: what to read, how to cut and where to write.
        codec: the video encoder (its ``geometry`` fixes valid frame counts and sizes).
        text: the caption encoder.
        progress: show a tqdm bar on stderr (the CLI turns it on; library callers usually do not).

    Returns:
        The `PrepareSummary` (also written to ``summary.json`` in the cache folder).

    Raises:
        FrameMapError: a frame count or size does not fit the codec's geometry.
        InputError: no dataset folder or manifest.
    """
    from tqdm.auto import tqdm

    run = _Run(config, codec, text)
    items = read_manifest(config.data)
    (run.out / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    summary = PrepareSummary()
    entries: list[dict[str, Any]] = []
    for done, item in enumerate(tqdm(items, desc="prepare", unit="item", disable=not progress), start=1):
        try:
            if item.problem is not None:
                raise MediaProblem("unreadable caption", item.problem)
            if not item.path.is_file():
                raise MediaProblem("missing", f"{str(item.path)!r} does not exist")
            try:
                source_hash = _file_sha256(item.path)
            except OSError as error:
                raise MediaProblem("corrupt", f"cannot read the file: {error}") from error
            key = _item_key(item.file_name)
            reused = _reusable(run.out, key, item, source_hash, run.settings)
            if reused is not None:
                entries.extend(reused)
                summary.reused.append(item.file_name)
            else:
                entries.extend(run.encode_item(item, key, source_hash))
                summary.encoded.append(item.file_name)
        except MediaProblem as problem:
            summary.skipped.append(SkippedItem(item.file_name, problem.reason, problem.detail))
        if done % config.index_every == 0:
            write_index(run.out, entries, run.index_extra())
    summary.index_path = write_index(run.out, entries, run.index_extra())
    summary.clips = len(entries)
    record = {**asdict(summary), "index_path": str(summary.index_path)}
    atomic_write_bytes(run.out / SUMMARY_NAME, json.dumps(record, indent=1).encode())
    return summary
