"""The one key report of weight loading: which keys a checkpoint misses, adds, or has in the wrong shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pusa_fw.errors import CheckpointError

__all__ = ["KeyReport", "compare_keys", "format_key_list"]

_MAX_LISTED = 20
Shape = Sequence[int]


def format_key_list(names: Sequence[str], limit: int = _MAX_LISTED) -> str:
    """The first `limit` names joined by commas, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@dataclass(frozen=True)
class KeyReport:
    """How the keys of a checkpoint fit a model.

    Attributes:
        missing: keys the model has and the checkpoint lacks (sorted).
        unexpected: keys the checkpoint has and the model lacks (sorted).
        mismatched: ``(key, checkpoint shape, model shape)`` for keys in both with different shapes.
    """

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        """True when every key is present, none is extra, and every shape fits."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, unexpected_hint: str = "") -> str:
        """One line naming every problem, e.g. ``missing keys (2): a, b; shape mismatches (1): ...``."""
        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {format_key_list(self.missing)}")
        if self.unexpected:
            listing = format_key_list(self.unexpected)
            parts.append(f"unexpected keys ({len(self.unexpected)}){unexpected_hint}: {listing}")
        if self.mismatched:
            shapes = [
                f"{name} (checkpoint {list(found)}, model {list(wanted)})"
                for name, found, wanted in self.mismatched
            ]
            parts.append(f"shape mismatches ({len(shapes)}): {format_key_list(shapes)}")
        return "; ".join(parts)

    def raise_if_bad(self, source: object, model: str, fix: str, unexpected_hint: str = "") -> None:
        """Raise one `CheckpointError` listing every problem, unless the keys fit.

        Args:
            source: the checkpoint (path or description).
            model: what it was loaded into ("the Wan DiT config").
            fix: the sentence that tells the user what to do.
            unexpected_hint: text placed after the unexpected-key count (e.g. why such keys appear).
        """
        if not self.ok:
            problems = self.describe(unexpected_hint)
            raise CheckpointError(f"checkpoint {source} does not fit {model}; {problems}. {fix}")


def compare_keys(found: Mapping[str, Shape], expected: Mapping[str, Shape]) -> KeyReport:
    """Compare the key -> shape map of a checkpoint with the one a model expects.

    Args:
        found: key -> shape read from the checkpoint.
        expected: key -> shape of every tensor the model has.

    Returns:
        The `KeyReport` (missing, unexpected and mis-shaped keys, each sorted).
    """
    mismatched = tuple(
        (name, tuple(found[name]), tuple(expected[name]))
        for name in sorted(set(found) & set(expected))
        if tuple(found[name]) != tuple(expected[name])
    )
    return KeyReport(
        missing=tuple(sorted(set(expected) - set(found))),
        unexpected=tuple(sorted(set(found) - set(expected))),
        mismatched=mismatched,
    )
