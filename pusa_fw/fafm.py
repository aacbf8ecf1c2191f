"""FAFM: the Frame-Aware Flow Matching training objective.

Every latent frame has its own sigma (drawn by `pusa_fw.ptss.PTSS`), is noised on its own
(`x_sigma = (1 - sigma) * x0 + sigma * eps` per frame) and contributes its own squared error between the
predicted and the true velocity `v = eps - x0`. The per-frame errors can be weighted per frame (e.g.
`bsmntw_weights`) and masked (e.g. to leave held conditioning frames out of the loss) before they are
averaged over the frames that count.

What the official Pusa trainer does instead (documented in `docs/pusa_reference.md` §4.2): it reduces the
MSE to one scalar over all frames *first* and multiplies that scalar by the per-frame BSMNTW weights,
then takes the mean, so the effective weight is the mean of the weights over frames. With 21 frames
drawn independently that mean is close to 1 for every sample: the loss is effectively unweighted and not
frame-aware. Here the weight multiplies each frame's own error.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Union

import torch
from einops import rearrange, reduce

from .backbone import Backbone
from .errors import InputError
from .ptss import PTSS, training_sigma_grid

__all__ = [
    "FrameWeights",
    "bsmntw_weights",
    "fafm_forward",
    "fafm_loss",
    "fafm_step",
    "frame_losses",
    "law_mean",
    "masked_frame_mean",
    "noise_latents",
    "normalised_frame_weights",
    "velocity_target",
]

FrameWeights = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]
"""Per-frame weights `[B, F]` or `[F]`, or a function of the drawn sigmas `[B, F]` returning them."""


def _check_latents(name: str, tensor: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 5:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InputError(f"{name} must be a [B, C, F, H, W] tensor, got {shape}.")
    if like is not None and tensor.shape != like.shape:
        raise InputError(
            f"{name} has shape {tuple(tensor.shape)} but x0 has {tuple(like.shape)}; they must match."
        )


def _check_sigmas(sigmas: torch.Tensor, x0: torch.Tensor) -> None:
    batch, _, frames = x0.shape[:3]
    if not isinstance(sigmas, torch.Tensor) or tuple(sigmas.shape) != (batch, frames):
        shape = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
        raise InputError(f"sigmas must have shape [B, F] = {(batch, frames)}, got {shape}.")


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The flow-matching velocity `eps - x0` that the network learns to predict.

    Args:
        x0: `[B, C, F, H, W]` clean latents.
        eps: `[B, C, F, H, W]` noise.

    Returns:
        `[B, C, F, H, W]` velocity, in the promoted dtype of the inputs.
    """
    return eps - x0


def noise_latents(x0: torch.Tensor, eps: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Noise every frame to its own level: `x_sigma = (1 - sigma_f) * x0 + sigma_f * eps`.

    Computed in fp32 (fp64 if `x0` is fp64) and returned in `x0`'s dtype. A frame with sigma 0 comes back
    bit-exact (for finite `eps`), a frame with sigma 1 is `eps`.

    Args:
        x0: `[B, C, F, H, W]` clean latents.
        eps: `[B, C, F, H, W]` noise.
        sigmas: `[B, F]` per-frame noise levels in [0, 1].

    Returns:
        `[B, C, F, H, W]` noised latents, dtype of `x0`.
    """
    _check_latents("x0", x0)
    _check_latents("eps", eps, like=x0)
    _check_sigmas(sigmas, x0)
    compute_dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
    sigma = rearrange(sigmas.to(device=x0.device, dtype=compute_dtype), "b f -> b 1 f 1 1")
    noised = (1.0 - sigma) * x0.to(compute_dtype) + sigma * eps.to(compute_dtype)
    return noised.to(x0.dtype)


def frame_losses(velocity_pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE between predicted and true velocity, unweighted (for logging and for `fafm_loss`).

    Args:
        velocity_pred: `[B, C, F, H, W]` network output.
        x0: `[B, C, F, H, W]` clean latents.
        eps: `[B, C, F, H, W]` the noise used to noise them.

    Returns:
        `[B, F]` float32: mean over C, H, W of `(velocity_pred - (eps - x0))**2`, computed in fp32.
    """
    _check_latents("velocity_pred", velocity_pred)
    _check_latents("x0", x0, like=velocity_pred)
    _check_latents("eps", eps, like=velocity_pred)
    target = velocity_target(x0.float(), eps.float())
    squared_error = (velocity_pred.float() - target).square()
    return reduce(squared_error, "b c f h w -> b f", "mean")


def _broadcast_frame_tensor(name: str, value: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Accept `[B, F]` or `[F]` and return `[B, F]`."""
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{name} must be a tensor of shape [B, F] or [F], got {type(value).__name__}.")
    if tuple(value.shape) == (frames,):
        return rearrange(value, "f -> 1 f").expand(batch, frames)
    if tuple(value.shape) != (batch, frames):
        raise InputError(
            f"{name} must have shape [B, F] = {(batch, frames)} or [F] = {(frames,)}, "
            f"got {tuple(value.shape)}."
        )
    return value


def fafm_loss(
    velocity_pred: torch.Tensor,
    x0: torch.Tensor,
    eps: torch.Tensor,
    *,
    frame_weights: torch.Tensor | None = None,
    frame_mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """The FAFM loss: per-frame velocity MSE, weighted and masked per frame, averaged over counted frames.

    With `l[b, f]` the per-frame MSE (`frame_losses`), `w` the weights (1 if None) and `m` the mask
    (all True if None), the loss is `sum(w * l * m) / sum(m)`.

    Args:
        velocity_pred: `[B, C, F, H, W]` network output.
        x0: `[B, C, F, H, W]` clean latents.
        eps: `[B, C, F, H, W]` noise.
        frame_weights: `[B, F]` or `[F]` finite weights >= 0 (e.g. `bsmntw_weights(sigmas)`).
        frame_mask: `[B, F]` or `[F]` bool, True for frames that count (False e.g. for held
            conditioning frames). At least one frame must count.
        reduction: "mean" for the scalar loss; "none" for the `[B, F]` terms `w * l * m` (zero where
            masked), whose sum divided by the number of counted frames is the "mean" loss.

    Returns:
        float32 scalar, or `[B, F]` float32 if `reduction="none"`. Differentiable in `velocity_pred`.

    Raises:
        InputError: shapes that do not match, negative or non-finite weights, a non-bool mask, a mask
            that excludes every frame, or an unknown reduction.
    """
    if reduction not in ("mean", "none"):
        raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    losses = frame_losses(velocity_pred, x0, eps)
    batch, frames = losses.shape
    if frame_weights is not None:
        weights = _broadcast_frame_tensor("frame_weights", frame_weights, batch, frames)
        weights = weights.to(device=losses.device, dtype=torch.float32)
        if not bool(torch.all(torch.isfinite(weights) & (weights >= 0))):
            raise InputError(
                "frame_weights must be finite and >= 0 (a negative weight would maximise that frame's "
                "error); "
                f"got min {weights.min().item()!r}, max {weights.max().item()!r}."
            )
        losses = losses * weights
    counted = torch.ones_like(losses, dtype=torch.bool)
    if frame_mask is not None:
        if not isinstance(frame_mask, torch.Tensor) or frame_mask.dtype != torch.bool:
            got = frame_mask.dtype if isinstance(frame_mask, torch.Tensor) else type(frame_mask).__name__
            raise InputError(f"frame_mask must be a bool tensor (True = frame counts), got {got}.")
        counted = _broadcast_frame_tensor("frame_mask", frame_mask, batch, frames).to(losses.device)
        if not bool(counted.any()):
            raise InputError(
                "frame_mask excludes every frame, so there is no loss to average; keep >= 1 frame."
            )
        losses = torch.where(counted, losses, torch.zeros_like(losses))
    if reduction == "none":
        return losses
    return losses.sum() / counted.sum().to(torch.float32)


def masked_frame_mean(
    losses: torch.Tensor, frame_weights: torch.Tensor | None, frame_mask: torch.Tensor | None
) -> torch.Tensor:
    """`sum(w * l * m) / max(sum(m), 1)` with no checks and no host synchronisation (the training hot path).

    `fafm_loss` validates its inputs and then computes the same value; a trainer whose weights and masks
    come from its own sampler can call this directly.

    Args:
        losses: `[B, F]` per-frame losses (`frame_losses`).
        frame_weights: `[B, F]` weights >= 0, or None for 1.
        frame_mask: `[B, F]` bool, True where a frame counts, or None for all.

    Returns:
        float32 scalar (0 when no frame counts).
    """
    if frame_weights is not None:
        losses = losses * frame_weights.to(losses.dtype)
    if frame_mask is None:
        return losses.mean()
    counted = frame_mask.to(losses.dtype)
    return (losses * counted).sum() / counted.sum().clamp_min(1.0)


def bsmntw_weights(sigmas: torch.Tensor, *, num_train_steps: int = 1000, shift: float = 5.0) -> torch.Tensor:
    """The official "BSMNTW" timestep weight, evaluated per frame.

    A Gaussian bump in the network timestep `1000 * sigma` centred at 500: `exp(-2 * (sigma - 0.5)**2)`,
    minus its minimum over the training grid, divided by its mean over the grid
    (`training_sigma_grid(num_train_steps, shift)`). So the weight is 0 at sigma 1, peaks near sigma 0.5
    (about 2.08 for the official 1000-step shift-5 grid) and has mean exactly 1 under discrete PTSS on
    that grid. For N = 1000 this is the official table; the official code centres the bump at N/2 in
    timestep units, which for other N moves it: here it stays at sigma 0.5.

    Use it per frame (`fafm_loss(..., frame_weights=bsmntw_weights(sigmas))`). The official trainer
    averages these weights over frames before applying them to a frame-averaged MSE, which makes them
    almost constant (about 1) and the loss effectively unweighted.

    Args:
        sigmas: `[B, F]` (or any shape) sigmas in [0, 1].
        num_train_steps: N of the training grid the weights are normalised over.
        shift: the shift of that grid.

    Returns:
        float32 weights >= 0, same shape as `sigmas`.
    """
    grid = training_sigma_grid(num_train_steps, shift)
    bump_on_grid = torch.exp(-2.0 * (grid - 0.5).square())
    floor = bump_on_grid.min()
    scale = (bump_on_grid - floor).mean()
    bump = torch.exp(-2.0 * (sigmas.to(torch.float64) - 0.5).square())
    return ((bump - floor.to(sigmas.device)) / scale.to(sigmas.device)).to(torch.float32)


def law_mean(function: Callable[[torch.Tensor], torch.Tensor], ptss: PTSS, *, points: int = 1 << 14) -> float:
    """The mean of `function(sigma)` when sigma follows `ptss`'s marginal law of a frame that is not held.

    The discrete official grid (``num_train_steps``) is averaged exactly over its points; a continuous law
    by midpoint quadrature against ``ptss.cdf`` on `points` equal cells of [0, 1].

    Args:
        function: maps sigmas (float64, any shape) to values of the same shape.
        ptss: the sampler whose law is averaged over.
        points: quadrature cells of a continuous law.

    Returns:
        The mean as a float.
    """
    if ptss.num_train_steps is not None:
        grid = training_sigma_grid(ptss.num_train_steps, ptss.shift)
        return float(function(grid).double().mean())
    edges = torch.linspace(0.0, 1.0, points + 1, dtype=torch.float64)
    mass = ptss.cdf(edges).diff()
    centres = (edges[:-1] + edges[1:]) / 2
    return float((function(centres).double() * mass).sum() / mass.sum())


def normalised_frame_weights(
    weights: Callable[[torch.Tensor], torch.Tensor], ptss: PTSS
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`weights` divided by its mean under the run's own sigma law (`law_mean`), so its mean is 1.

    `bsmntw_weights` is normalised on the official shift-5, 1000-step grid; under another law its mean is
    not 1 (1.31 under the uniform law without shift, 1.66 under SD3's logit-normal without shift), which
    would also scale the effective learning rate. This keeps the shape of the weighting, fixing its mean.

    Raises:
        InputError: the weights average to zero or a non-finite value under the law.
    """
    mean = law_mean(weights, ptss)
    if not math.isfinite(mean) or mean <= 0:
        raise InputError(f"the frame weights average to {mean!r} under the PTSS law; they cannot be normalised")

    def normalised(sigmas: torch.Tensor) -> torch.Tensor:
        return weights(sigmas) / mean

    return normalised


VelocityFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""``velocity(x_sigma [B, C, F, H, W], sigmas [B, F], context) -> [B, C, F, H, W]``: a backbone's
``velocity`` method, or a (DDP/FSDP2-wrapped) module called as ``model(x_sigma, sigmas, context)``."""


def fafm_forward(
    velocity: VelocityFn,
    x0: torch.Tensor,
    eps: torch.Tensor,
    sigmas: torch.Tensor,
    context: Any,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Noise every frame to its own sigma and predict its velocity: the one FAFM forward of the project.

    `fafm_step`, the trainer's loss and its held-out validation all come through here, so latents are
    noised in exactly one place (`noise_latents`). Nothing here synchronises with the host.

    Args:
        velocity: the model, called as ``velocity(x_sigma, sigmas, context)`` (a plain callable, so a
            DDP/FSDP2 wrapper's forward, and with it the gradient synchronisation, is never bypassed).
        x0: `[B, C, F, H, W]` clean latents.
        eps: `[B, C, F, H, W]` noise.
        sigmas: `[B, F]` per-frame noise levels in [0, 1], on `x0`'s device.
        context: passed through to the model (e.g. text embeddings `[B, L, D]`).
        autocast_dtype: run the forward under autocast to this dtype (e.g. bf16, weights staying fp32);
            None runs it as is.

    Returns:
        `[B, C, F, H, W]` predicted velocity (differentiable in the model's parameters).

    Raises:
        InputError: inputs of the wrong shape, or a model output that is not the latents' shape.
    """
    noised = noise_latents(x0, eps, sigmas)
    with torch.autocast(
        x0.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
    ):
        velocity_pred = velocity(noised, sigmas, context)
    if not isinstance(velocity_pred, torch.Tensor) or velocity_pred.shape != x0.shape:
        got = (
            tuple(velocity_pred.shape)
            if isinstance(velocity_pred, torch.Tensor)
            else type(velocity_pred).__name__
        )
        raise InputError(f"backbone.velocity returned {got}, expected the latents' shape {tuple(x0.shape)}.")
    return velocity_pred


def fafm_step(
    backbone: Backbone,
    x0: torch.Tensor,
    context: Any,
    ptss: PTSS,
    generator: torch.Generator,
    *,
    frame_weights: FrameWeights | None = None,
    frame_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One FAFM training loss: draw sigmas and noise, noise the latents, predict, compare.

    Randomness comes only from `generator` (a CPU generator), in this order: the sigmas (`ptss.draw`),
    then the noise `eps` (standard normal, fp32), both moved to `x0`'s device afterwards, so a seed gives
    the same draw on every device. Frames held clean by the PTSS held-frames law are left out of the loss
    (on top of `frame_mask`).

    Args:
        backbone: the velocity model; called as `backbone.velocity(x_sigma, sigmas, context)`.
        x0: `[B, C, F, H, W]` clean latents (e.g. VAE latents of a training clip).
        context: passed through to the backbone (e.g. text embeddings `[B, L, D]`).
        ptss: the per-frame sigma sampler.
        generator: CPU `torch.Generator`.
        frame_weights: `[B, F]` or `[F]` weights, or a function `sigmas [B, F] -> [B, F]` of the drawn
            sigmas (e.g. `bsmntw_weights`).
        frame_mask: `[B, F]` or `[F]` bool, True for frames that count in the loss.

    Returns:
        float32 scalar loss, differentiable in the backbone's parameters.
    """
    _check_latents("x0", x0)
    batch, channels, frames, height, width = x0.shape
    drawn = ptss.draw(batch, frames, generator)
    sigmas_cpu = drawn.sigmas
    eps_cpu = torch.randn((batch, channels, frames, height, width), generator=generator, dtype=torch.float32)
    sigmas = sigmas_cpu.to(x0.device)
    eps = eps_cpu.to(device=x0.device, dtype=x0.dtype)
    velocity_pred = fafm_forward(backbone.velocity, x0, eps, sigmas, context)
    weights = frame_weights(sigmas) if callable(frame_weights) else frame_weights
    if ptss.held_probability > 0:
        held_mask = drawn.loss_mask.to(x0.device)
        if frame_mask is not None:
            frame_mask = _broadcast_frame_tensor("frame_mask", frame_mask, batch, frames).to(x0.device)
            held_mask = held_mask & frame_mask
        frame_mask = held_mask
    return fafm_loss(velocity_pred, x0, eps, frame_weights=weights, frame_mask=frame_mask)

