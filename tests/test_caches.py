"""Step caches (issue 23): registration, the loop's contract with a cache, work accounting, partial backbones."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pusa_fw import sample
from pusa_fw.api import get_cache, list_components
from pusa_fw.backbone import supports_partial
from pusa_fw.caches import CachedBackbone, WorkStats
from pusa_fw.caches.work import DiTShape, call_flops
from pusa_fw.errors import InputError, UnknownComponentError
from pusa_fw.guidance import Guidance
from pusa_fw.registry_lookup import lookup
from pusa_fw.seeding import draw_noise, make_generator
from pusa_fw.testing.contracts import PartialBackboneContract
from pusa_fw.testing.fakes import PartialToyBackbone, ToyVelocityBackbone

SHAPE = (1, 4, 5, 4, 4)  # 17 pixel frames -> 5 latent frames (Wan2.1 geometry)


def _plan(task: str, steps: int = 8, **params):
    frames = params.pop("num_frames", 17)
    return lookup("tasks", task)(**params).plan(num_frames=frames, num_steps=steps)


def _run(backbone, plan, *, cache=None, work=None, cfg=1.0, seed=0):
    shape = (1, 4, plan.num_latent_frames, 4, 4)
    noise = draw_noise(shape, make_generator(seed))
    source = draw_noise(shape, make_generator(seed + 1000))
    context = torch.full((1, 4, 1, 1, 1), 0.5)
    negative = torch.full((1, 4, 1, 1, 1), -0.5) if cfg != 1.0 else None
    return sample(backbone, plan, noise, source=source, context=context, negative_context=negative,
                  guidance=Guidance(cfg_scale=cfg), cache=cache, work=work), source


class TestPartialToyBackbone(PartialBackboneContract):
    def make_backbone(self):
        return PartialToyBackbone()

    def make_inputs(self):
        latents = torch.randn(2, 3, 5, 2, 2, generator=torch.Generator().manual_seed(0))
        sigmas = torch.tensor([[1.0, 0.7, 0.5, 0.2, 0.0], [0.9, 0.9, 0.4, 0.1, 0.0]], dtype=torch.float64)
        return latents, sigmas, torch.ones(1, 3, 1, 1, 1)


def test_caches_are_registered_components_with_validated_params():
    assert set(list_components("caches")) >= {"none", "teacache", "framecache"}
    assert get_cache("framecache", threshold=0.1).threshold == 0.1
    with pytest.raises(ValidationError):
        get_cache("teacache", threshold=-1)
    with pytest.raises(ValidationError):
        get_cache("framecache", tresh=0.1)
    with pytest.raises(UnknownComponentError, match="framecache"):
        get_cache("framecach")


def test_framecache_refuses_a_backbone_without_partial_computation_in_one_line():
    backbone = ToyVelocityBackbone()
    assert not supports_partial(backbone) and supports_partial(PartialToyBackbone())
    with pytest.raises(InputError) as error:
        _run(backbone, _plan("t2v"), cache="framecache")
    message = str(error.value)
    assert "\n" not in message and "ToyVelocityBackbone" in message and "--cache teacache" in message


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_no_cache_and_zero_threshold_teacache_are_bit_identical_to_the_plain_loop(cfg):
    plan = _plan("i2v")
    plain, _ = _run(ToyVelocityBackbone(), plan, cfg=cfg)
    for cache in ("none", get_cache("teacache", threshold=0.0)):
        work = WorkStats()
        out, _ = _run(ToyVelocityBackbone(), plan, cache=cache, work=work, cfg=cfg)
        assert torch.equal(out, plain)
        assert work.token_block_fraction == 1.0 and work.flop_fraction == 1.0
        assert work.calls == work.calls_reference == plan.model_calls() * (2 if cfg != 1 else 1)


def test_framecache_that_never_reuses_equals_no_cache_on_t2v():
    plan = _plan("t2v")  # every frame moves in every step: nothing idle, nothing reused
    plain, _ = _run(PartialToyBackbone(), plan)
    out, _ = _run(PartialToyBackbone(), plan, cache=get_cache("framecache", max_skips=0))
    assert torch.equal(out, plain)


@pytest.mark.parametrize("cache", ["none", "teacache", "framecache",
                                   {"name": "framecache", "threshold": 10.0, "clean_threshold": 10.0,
                                    "max_skips": 5}])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_held_frames_stay_bit_exact_under_every_cache(cache, cfg):
    plan = _plan("start-end", policy="clean")
    out, source = _run(PartialToyBackbone(), plan, cache=cache, cfg=cfg)
    held = plan.held
    assert bool(held.any())
    assert torch.equal(out[:, :, held], source[:, :, held])
    assert torch.isfinite(out).all()


def test_framecache_never_computes_idle_frames_and_saves_real_work():
    plan = _plan("t2v", steps=6, num_frames=25, schedule={"name": "pyramid", "ar_step": 2})
    backbone = PartialToyBackbone()
    work = WorkStats()
    _run(backbone, plan, cache=get_cache("framecache", max_skips=0), work=work)
    moving = plan.update_mask()
    active = [step for step in range(plan.num_steps) if bool(moving[step].any())]
    assert len(backbone.compute_log) == len(active)
    assert bool(backbone.compute_log[0].all())  # first call: nothing cached yet
    for step, compute in zip(active[1:], backbone.compute_log[1:]):
        assert torch.equal(compute, moving[step]), step  # exactly the moving frames, never an idle one
    expected = sum(int(moving[step].sum()) for step in active[1:]) + plan.num_latent_frames
    assert work.frames_computed == expected == sum(backbone.frames_computed)
    assert work.token_block_fraction == pytest.approx(expected / (len(active) * plan.num_latent_frames))
    assert work.token_block_fraction < 0.8 and work.flop_fraction < work.token_block_fraction + 0.05


def test_teacache_skips_whole_steps_and_counts_them():
    plan = _plan("t2v", steps=10)
    backbone = PartialToyBackbone()
    work = WorkStats()
    _run(backbone, plan, cache=get_cache("teacache", threshold=1e9), work=work)
    assert work.calls == 2 and work.calls_reference == 10  # the first and the last step only
    assert backbone.frames_computed == [5, 5] and work.token_block_fraction == pytest.approx(0.2)
    assert work.per_step[0][0] > 0 and work.per_step[1][0] == 0 and work.per_step[9][0] > 0


def test_framecache_reuses_and_refreshes_within_max_skips():
    plan = _plan("t2v", steps=10)
    backbone = PartialToyBackbone()
    work = WorkStats()
    out, _ = _run(backbone, plan, cache=get_cache("framecache", threshold=1e9, clean_threshold=1e9,
                                                  max_skips=2, final_update=False), work=work)
    assert backbone.frames_computed == [5, 5, 5, 5]  # steps 0, 3, 6, 9: refreshed every max_skips + 1 steps
    assert work.token_block_fraction == pytest.approx(0.4)
    plain, _ = _run(PartialToyBackbone(), plan)
    assert 0 < float((out - plain).abs().max()) < 1.0  # an approximation, not garbage


def test_cfg_branches_keep_separate_state_and_memory():
    plan = _plan("i2v")
    work = WorkStats()
    backbone = PartialToyBackbone()
    out, _ = _run(backbone, plan, cache=get_cache("framecache", max_skips=0), work=work, cfg=3.0)
    assert work.calls_reference == 2 * plan.model_calls()
    plain, _ = _run(PartialToyBackbone(), plan, cfg=3.0)
    # i2v: only the held frame is idle; with two branches each keeping its own memory the result stays
    # close to the full computation (the held frame's keys are the only stale ones).
    assert float((out - plain).abs().max()) < 0.1


def test_a_cached_backbone_binding_is_unpacked_by_the_loop():
    plan = _plan("i2v")
    work_direct, work_bound = WorkStats(), WorkStats()
    direct, _ = _run(PartialToyBackbone(), plan, cache="teacache", work=work_direct)
    bound, _ = _run(CachedBackbone(PartialToyBackbone(), "teacache", work=work_bound), plan)
    assert torch.equal(direct, bound) and work_direct.summary() == work_bound.summary()
    with pytest.raises(InputError, match="ToyVelocityBackbone"):
        CachedBackbone(ToyVelocityBackbone(), "framecache")


def test_flop_estimate_counts_attention_queries_against_all_keys():
    shape = DiTShape(blocks=2, dim=64, ffn_dim=256, text_tokens=8, tokens_per_frame=16)
    full, half = call_flops(shape, 1, 10, 10), call_flops(shape, 1, 5, 10)
    assert call_flops(shape, 1, 0, 10) == 0.0
    # Linears and FFN scale with the queries; self-attention with queries x keys; text k/v stays whole.
    d, q, k, x = 64, 16 * 5, 16 * 10, 8
    expected = 2 * (8 * q * d * d + 4 * q * k * d + 4 * q * d * d + 4 * x * d * d + 4 * q * x * d + 4 * q * d * 256)
    assert half == expected and 0.5 < half / full < 0.51


def test_a_full_call_does_not_hold_the_old_memory_beside_the_new_one():
    """At 14B a branch's K/V memory is ~27 GB: a full refresh must drop the old one before it builds anew."""
    import gc
    import weakref

    class Tracking(PartialToyBackbone):
        def __init__(self) -> None:
            super().__init__()
            self.old: list[weakref.ref] = []
            self.alive_at_full_call: list[bool] = []

        def velocity_partial(self, latents, sigmas, context, *, compute, memory):
            if bool(compute.all()):
                gc.collect()
                self.alive_at_full_call += [ref() is not None for ref in self.old]
            out, new = super().velocity_partial(latents, sigmas, context, compute=compute, memory=memory)
            self.old.append(weakref.ref(new))
            return out, new

    backbone = Tracking()
    # rolling: every new window starts with a full call while the branch still has the last window's memory
    _run(backbone, _plan("rolling", num_frames=33, window=17, overlap=5), cache=get_cache("framecache"))
    assert len(backbone.alive_at_full_call) > 2 and not any(backbone.alive_at_full_call)
