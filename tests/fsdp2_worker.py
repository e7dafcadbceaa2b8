"""Worker for tests/test_training.py's FSDP2 check (not a test module): trains the tiny hybrid
model for a few AdamW steps, sharded with torch's FSDP2 (`fully_shard` per decoder layer, then the
root: what configs/accelerate/fsdp.yaml asks accelerate to do) when started by torchrun, plain
otherwise, and prints the losses as JSON.

Accelerate runs FSDP only on accelerators, so on a CPU this is the closest check of the model
under FSDP2: 3-D expert weights sharded on their expert dimension, frozen and trainable
parameters (the paper's recipe) inside one sharded layer, custom autograd functions, and the
balance statistics reduced over the global batch as the trainer does.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from multipl_moe.moe import HybridMoEBlock
from multipl_moe.moe.presets import resolve_preset
from multipl_moe.modeling.tiny import tiny_config
from multipl_moe.training.model_setup import apply_freezing
from multipl_moe.training.trainer import _global_mean
from multipl_moe.modeling.upcycle import upcycle_model

STEPS, BATCH, SEQ = 4, 4, 32


def main() -> None:
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    torch.manual_seed(0)
    dense = AutoModelForCausalLM.from_config(tiny_config("qwen2", num_layers=2))
    model = upcycle_model(dense, resolve_preset("paper-causal", {"segment.segment_length": 8}), noise_std=0.01)
    apply_freezing(model, "paper")
    model.float().train()
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        for block in model.modules():
            if isinstance(block, HybridMoEBlock):
                block.balance_reduce = _global_mean
        assert all(type(p).__name__ == "DTensor" for p in model.parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(1)
    losses, stats_layers = [], []
    for _ in range(STEPS):
        ids = torch.randint(3, 512, (BATCH, SEQ), generator=g)
        mine = ids.chunk(world)[rank]
        out = model(input_ids=mine, labels=mine)
        loss = out.loss
        stats_layers = sorted(out.router_stats)   # per-layer loads, which the trainer logs
        loss.backward()
        opt.step()
        opt.zero_grad()
        loss = loss.detach()
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        losses.append(loss.item())
    if rank == 0:
        json.dump({"world": world, "losses": losses, "stats_layers": stats_layers}, sys.stdout)
        sys.stdout.flush()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
