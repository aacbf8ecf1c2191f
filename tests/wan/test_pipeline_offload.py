"""CPU offload (per model, per DiT block): same result as no offload, weights moved and restored as designed.

On the CPU an onload still makes a fresh copy of every weight (the device copy) and an offload points the
weights back at their CPU masters, so the moves are visible as changing storage pointers.
"""

from __future__ import annotations

import pytest
import torch

from pusa_fw.guidance import Guidance
from pusa_fw.registry_lookup import lookup
from pusa_fw_wan.pipeline.media import ConditioningMedia
from pusa_fw_wan.pipeline.loading import load_models, resolve_model_paths
from pusa_fw_wan.pipeline.offload import BlockOffload, ModelOffload, Resident
from pusa_fw_wan.pipeline.wan import WanPipeline
from pusa_fw_wan.testing.tiny import TinyWan, build_tiny_wan

HEIGHT, WIDTH = 32, 48


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyWan:
    return build_tiny_wan(tmp_path_factory.mktemp("tiny_wan_offload"), seed=5)


def make_pipeline(tiny: TinyWan, offload: str) -> WanPipeline:
    paths = resolve_model_paths(tiny.root, None, None, None)
    models = load_models(paths, loras=[], dtype=torch.float32, device=torch.device("cpu"), offload=offload,
                         prompt_cache=False)
    return WanPipeline(models.dit, models.vae, models.text_encoder, device="cpu", offload=offload)


def run(pipeline: WanPipeline):
    image = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)) * 2 - 1
    task = lookup("tasks", "i2v")()
    return pipeline.generate(task, prompt="a dog runs", negative_prompt="blur",
                             media=ConditioningMedia(image=image), num_frames=9, height=HEIGHT, width=WIDTH,
                             num_steps=2, guidance=Guidance(cfg_scale=3.0), seed=7)


def pointers(module: torch.nn.Module) -> dict[str, int]:
    return {name: tensor.data_ptr() for name, tensor in module.state_dict(keep_vars=True).items()}


def test_offloaded_runs_equal_the_resident_run(tiny: TinyWan) -> None:
    reference = run(make_pipeline(tiny, "none"))
    for mode in ("model", "block"):
        result = run(make_pipeline(tiny, mode))
        assert torch.equal(result.latents, reference.latents), mode
        assert torch.equal(result.video, reference.video), mode


def test_model_offload_moves_each_model_only_while_it_is_used(tiny: TinyWan) -> None:
    pipeline = make_pipeline(tiny, "model")
    placements = {"dit": pipeline.dit_placement, "vae": pipeline.vae_placement,
                  "text": pipeline.text_placement}
    assert all(isinstance(placement, ModelOffload) for placement in placements.values())
    masters = {name: pointers(placement.module) for name, placement in placements.items()}
    seen_during_forward: list[bool] = []

    def check(_module, _inputs):  # runs inside the DiT forward: DiT weights are copies, the others masters
        seen_during_forward.append(
            all(pointers(pipeline.dit)[key] != value for key, value in masters["dit"].items())
            and pointers(pipeline.vae) == masters["vae"]
            and pointers(pipeline.text_encoder.model) == masters["text"]
        )

    handle = pipeline.dit.register_forward_pre_hook(check)
    run(pipeline)
    handle.remove()
    assert seen_during_forward and all(seen_during_forward)
    assert {name: pointers(placement.module) for name, placement in placements.items()} == masters  # restored
    counts = {name: placement.residency.onload_count for name, placement in placements.items()}
    assert counts == {"dit": 1, "vae": 2, "text": 1}  # vae: encode the image, decode the video


def _watch_blocks(pipeline: WanPipeline, placement: BlockOffload):
    """Record, at each block's forward, which blocks hold device copies and whether the rest does."""
    blocks = list(pipeline.dit.blocks)
    masters = [pointers(block) for block in blocks]
    rest_masters = [tensor.data_ptr() for tensor in placement.rest.masters]
    observations: list[tuple[int, frozenset[int], bool]] = []

    def watcher(index: int):
        def check(_block, _inputs):
            copied = frozenset(j for j, other in enumerate(blocks)
                               if all(pointers(other)[key] != value for key, value in masters[j].items()))
            rest_copied = all(t.data_ptr() != m for t, m in zip(placement.rest.tensors, rest_masters))
            observations.append((index, copied, rest_copied))

        return check

    handles = [block.register_forward_pre_hook(watcher(index)) for index, block in enumerate(blocks)]
    return blocks, masters, rest_masters, observations, handles


@pytest.mark.parametrize("prefetch", [True, False])
def test_block_offload_holds_the_running_block_and_prefetches_the_next(tiny: TinyWan, prefetch: bool) -> None:
    pipeline = make_pipeline(tiny, "block")
    placement = pipeline.dit_placement
    assert isinstance(placement, BlockOffload) and placement.prefetch
    placement.prefetch = prefetch
    blocks, masters, rest_masters, observations, handles = _watch_blocks(pipeline, placement)
    result = run(pipeline)
    for handle in handles:
        handle.remove()
    forwards = result.plan.model_calls() * 2  # cfg 3: conditional and negative pass
    assert len(observations) == forwards * len(blocks)
    for index, copied, rest_copied in observations:
        # the running block, plus (with prefetch) the next one, already copied before it runs
        expected = {index, (index + 1) % len(blocks)} if prefetch else {index}
        assert copied == expected and rest_copied, (index, copied)
    assert [pointers(block) for block in blocks] == masters  # every block back on its CPU master
    assert [t.data_ptr() for t in placement.rest.tensors] == rest_masters
    counts = [residency.onload_count for residency in placement.blocks]
    # each block once per forward; with prefetch block 0 is also fetched for the forward after the last
    assert counts == [forwards + (1 if prefetch else 0)] + [forwards] * (len(blocks) - 1)
    assert isinstance(pipeline.vae_placement, ModelOffload)  # the other models: model offload


def test_prefetching_block_offload_is_exact_on_the_cpu(tiny: TinyWan) -> None:
    reference = run(make_pipeline(tiny, "none"))
    pipeline = make_pipeline(tiny, "block")
    pipeline.dit_placement.prefetch = False
    plain = run(pipeline)
    prefetched = run(make_pipeline(tiny, "block"))
    assert torch.equal(prefetched.latents, reference.latents)
    assert torch.equal(prefetched.latents, plain.latents)


def test_resident_placement_is_a_plain_move(tiny: TinyWan) -> None:
    pipeline = make_pipeline(tiny, "none")
    assert isinstance(pipeline.dit_placement, Resident)
    before = pointers(pipeline.dit)
    with pipeline.dit_placement.active():
        assert pointers(pipeline.dit) == before
