"""`prepare_dataset`: encode every item of a dataset folder into the latent cache, resumably.

Per item: the caption is checked, the file hashed (SHA-256; skipped when its size and modification time
are those recorded with its clips, unless ``rehash``), and if every clip file of the item already
carries that hash, the caption and the same settings fingerprint (settings + codec + text-encoder
identity), the item is reused untouched. Otherwise its clips are decoded, resized to their bucket,
encoded and written atomically, and clip files left over from an earlier, longer cut are removed. An item
that fails (missing, corrupt, too short, unreadable caption, an encoder error) is named in the summary and
the run goes on. ``index.json`` is rewritten every ``index_every`` items, when the run is interrupted, and
at the end; until the end it also keeps the earlier run's entries of the items not visited yet, so a
stopped run never hides clips that were already prepared.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pusa_fw.io.atomic import atomic_write_bytes
from pusa_fw_wan.pipeline.sidecar import file_sha256
from pusa_fw_wan.train.cache_format import read_clip_metadata, write_clip, write_empty_context, write_index
from pusa_fw_wan.train.prepare.buckets import aspect_buckets
from pusa_fw_wan.train.prepare.config import PrepareConfig
from pusa_fw_wan.train.prepare.encoders import TextEmbedder, VideoCodec, identity_of
from pusa_fw_wan.train.prepare.manifest import ManifestItem, read_manifest
from pusa_fw_wan.train.prepare.media import MediaClip, MediaProblem, read_item_clips
from pusa_fw_wan.train.prepare.stored import (
    CLIPS_DIR,
    clip_path,
    index_entry,
    item_key,
    previous_entries,
    recorded_hash,
    remove_stale_clips,
    reusable_entries,
    source_stamp,
)

__all__ = ["CLIPS_DIR", "PrepareSummary", "SkippedItem", "prepare_dataset"]

SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class SkippedItem:
    """An item that produced no clips: `reason` is ``missing``, ``corrupt``, ``too short``,
    ``unreadable caption``, ``duplicate`` or ``encode failed``; `detail` says what exactly."""

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

    def encode_item(self, item: ManifestItem, key: str, source_hash: str, stamp: str) -> list[dict[str, Any]]:
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
                "source_stamp": stamp,
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
            path = clip_path(self.out, key, index)
            write_clip(path, latents, context, metadata)
            entries.append(index_entry(self.out, path, read_clip_metadata(path) or {}))
        remove_stale_clips(self.out, key, len(clips))
        return entries


def _prepare_item(run: _Run, item: ManifestItem, summary: PrepareSummary) -> list[dict[str, Any]]:
    """Index entries of one item: reused when its cached clips match, else freshly encoded."""
    if item.problem is not None:
        raise MediaProblem("unreadable caption", item.problem)
    if not item.path.is_file():
        raise MediaProblem("missing", f"{str(item.path)!r} does not exist")
    key = item_key(item.file_name)
    try:
        stamp = source_stamp(item.path)
        source_hash = None if run.config.rehash else recorded_hash(run.out, key, stamp)
        source_hash = source_hash or file_sha256(item.path, use_cache=False)
    except OSError as error:
        raise MediaProblem("corrupt", f"cannot read the file: {error}") from error
    reused = reusable_entries(run.out, key, item, source_hash, run.settings)
    if reused is not None:
        summary.reused.append(item.file_name)
        return reused
    encoded = run.encode_item(item, key, source_hash, stamp)
    summary.encoded.append(item.file_name)
    return encoded


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
    previous = previous_entries(run.out)
    summary = PrepareSummary()
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()

    def partial_index() -> (
        None
    ):  # this run's entries so far, plus the earlier run's for items not yet visited
        pending = [entry for source, listed in previous.items() if source not in seen for entry in listed]
        write_index(run.out, entries + pending, run.index_extra())

    try:
        for done, item in enumerate(tqdm(items, desc="prepare", unit="item", disable=not progress), start=1):
            try:
                if item.file_name in seen:
                    raise MediaProblem("duplicate", "listed again in the manifest; the first row was used")
                seen.add(item.file_name)
                entries.extend(_prepare_item(run, item, summary))
            except MediaProblem as problem:
                summary.skipped.append(SkippedItem(item.file_name, problem.reason, problem.detail))
            if done % config.index_every == 0:
                partial_index()
    except BaseException:
        partial_index()
        raise
    summary.index_path = write_index(run.out, entries, run.index_extra())
    summary.clips = len(entries)
    write_empty_context(run.out, run.context(""))  # for caption dropout (data.caption_dropout)
    record = {**asdict(summary), "index_path": str(summary.index_path)}
    atomic_write_bytes(run.out / SUMMARY_NAME, json.dumps(record, indent=1).encode())
    return summary
