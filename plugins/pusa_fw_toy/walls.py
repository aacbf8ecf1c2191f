"""Walls of the toy world: a square that bounces, and the inverse (unfolding) for tracks.

With ``walls="bounce"`` the square's centre lives on ``[low, high]`` per axis (``low = square / 2``,
``high = size - square / 2``: the whole square inside the frame). Each frame it moves ``speed`` pixels
along its heading; a move that would take it past a wall is folded back: the part of the move beyond
the wall is mirrored about the wall, and that axis of the heading (so the nose) turns around in the same
frame. A move that ends exactly on a wall is not a contact (it is not past the edge); the next move
then folds at once. Axes fold independently, so a diagonal heading that reaches a corner flips both.

The world allows at most one fold per axis per frame (``speed <= size - square``), so every frame is
one straight move, or one move in and one move out of a wall, and the distance travelled is ``speed``.

`unfold_centres` undoes the folds of a tracked path, and `unfold_words` of its nose words: every time the
nose turns around on an axis (`turns_back`), the later positions on that axis are mirrored about the wall
the nose pointed at, so a clean bounce clip becomes a straight constant-speed path again (its first
heading) that the straight-line fit of `pusa_fw_toy.metrics` can score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["AXIS", "OPPOSITE", "WALL_SIDE", "bounce_path", "fold_step", "turns_back", "unfold_centres", "unfold_words", "wall_limits"]


def wall_limits(size: int, square: float) -> tuple[float, float]:
    """``(low, high)``: the least and greatest centre coordinate that keep the square inside the frame."""
    return square / 2, size - square / 2


def fold_step(position: torch.Tensor, heading: torch.Tensor, speed: float, low: float,
              high: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame of motion with walls.

    Args:
        position: `[2]` float64 centre ``(x, y)`` inside ``[low, high]``.
        heading: `[2]` float64 heading (unit length for a world move).
        speed: pixels moved per frame (at most ``high - low``).
        low: least centre coordinate.
        high: greatest centre coordinate.

    Returns:
        ``(position [2], heading [2], contact [2] bool)``: the new centre, the heading after the move
        (flipped on each axis that folded), and which axes touched a wall.
    """
    moved = position + heading * speed
    past_high, past_low = moved > high, moved < low
    folded = torch.where(past_high, 2 * high - moved, torch.where(past_low, 2 * low - moved, moved))
    contact = past_high | past_low
    return folded.clamp(low, high), torch.where(contact, -heading, heading), contact


def bounce_path(start: torch.Tensor, heading: torch.Tensor, speed: float, low: float, high: float,
                num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres and headings of a square bouncing between the walls.

    Args:
        start: `[2]` float64 centre in frame 0.
        heading: `[2]` float64 heading in frame 0.
        speed: pixels per frame (at most ``high - low``).
        low: least centre coordinate.
        high: greatest centre coordinate.
        num_frames: frames T.

    Returns:
        ``(centres [T, 2], headings [T, 2])`` float64; ``headings[t]`` is where the nose points in frame t.
    """
    if speed > high - low:
        raise ValueError(
            f"speed={speed} exceeds the room between the walls ({high - low}); lower it (one fold per frame)"
        )
    position, direction = start.to(torch.float64), heading.to(torch.float64)
    centres, headings = [position], [direction]
    for _ in range(num_frames - 1):
        position, direction, _ = fold_step(position, direction, speed, low, high)
        centres.append(position)
        headings.append(direction)
    return torch.stack(centres), torch.stack(headings)


OPPOSITE = {"right": "left", "left": "right", "down": "up", "up": "down"}
"""The direction word a nose shows after turning around."""
AXIS = {"right": 0, "left": 0, "down": 1, "up": 1}
"""The axis a direction word moves along: 0 for x, 1 for y."""
WALL_SIDE = {"right": 1, "left": 0, "down": 1, "up": 0}
"""Which wall a direction word points at on its axis: 1 for the high one, 0 for the low one."""


def turns_back(words: Sequence[str | None]) -> dict[int, str]:
    """Where a tracked nose turns around: frame -> the word it showed before (the wall it pointed at).

    A turn is a readable frame whose word is the opposite of the previous readable frame's word; turns to
    a perpendicular word, and unreadable frames, are not turns.
    """
    turns: dict[int, str] = {}
    previous: str | None = None
    for frame, word in enumerate(words):
        if word is None:
            continue
        if previous is not None and OPPOSITE[previous] == word:
            turns[frame] = previous
        previous = word
    return turns


def unfold_centres(centres: torch.Tensor, words: Sequence[str | None], low: float,
                   high: float) -> torch.Tensor:
    """Undo the wall folds of a tracked path, reading the turns from the nose.

    At each turn back (`turns_back`) the centres from then on, on that axis, are mirrored about the wall
    the earlier nose pointed at.

    Args:
        centres: `[T, 2]` tracked centres (NaN where unreadable).
        words: per frame, the direction word the nose shows, or None.
        low: least centre coordinate.
        high: greatest centre coordinate.

    Returns:
        `[T, 2]` float64 unfolded centres (NaN where the input is).
    """
    sign = [1.0, 1.0]
    offset = [0.0, 0.0]
    unfolded = centres.to(torch.float64).clone()
    turns = turns_back(words)
    for frame in range(len(words)):
        if frame in turns:
            before = turns[frame]
            axis = AXIS[before]
            wall = high if WALL_SIDE[before] else low
            offset[axis] += 2 * sign[axis] * wall
            sign[axis] = -sign[axis]
        for axis in range(2):
            unfolded[frame, axis] = sign[axis] * unfolded[frame, axis] + offset[axis]
    return unfolded


def unfold_words(words: Sequence[str | None]) -> list[str | None]:
    """The nose words of a tracked path read in its unfolded frame (the one `unfold_centres` makes).

    Each turn back (`turns_back`) mirrors its axis from then on, so every later word on a mirrored axis
    reads as its opposite: a clean bounce clip shows its first heading in every frame, and a nose that points
    another way than the clip's law stays visible as another word.

    Args:
        words: per frame, the direction word the nose shows, or None.

    Returns:
        Per frame, the unfolded word (None where the input is).
    """
    mirrored = [False, False]
    turns = turns_back(words)
    unfolded: list[str | None] = []
    for frame, word in enumerate(words):
        if frame in turns:
            mirrored[AXIS[turns[frame]]] ^= True
        unfolded.append(None if word is None else OPPOSITE[word] if mirrored[AXIS[word]] else word)
    return unfolded
