"""Child of ``tests/test_plan.py`` under ``torchrun --nproc_per_node 2``: shard a model with the trainer's own
FSDP2 wrapping, take one optimizer step, and print rank 0's bytes of parameters, gradients and optimizer state
as JSON (what the planner must predict exactly)."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from mswelu.base import distributed as du
from mswelu.models.build import build_model
from mswelu.training import parallel
from mswelu.training.optim import build_optimizer


def local(t: torch.Tensor) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def main() -> None:
    preset, optimizer = sys.argv[1], sys.argv[2]
    info = du.setup("cpu")
    torch.manual_seed(0)
    model = parallel.wrap(build_model(preset, 300, 32), info, "fsdp")
    opt = build_optimizer(model, optimizer, lr=1e-3)
    ids = torch.randint(0, 300, (2, 33))
    model(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss.backward()
    parallel.sync_replicated_grads(model, info)
    opt.step()
    params = {id(p): p for p in model.parameters()}.values()
    state = [t for o in opt.optimizers for st in o.state.values() for t in st.values() if torch.is_tensor(t)]
    out = {
        "params": sum(local(p) for p in params),
        "grads": sum(local(p.grad) for p in params if p.grad is not None),
        "optimizer": sum(local(t) for t in state),
    }
    if info.is_main:
        print("STATE " + json.dumps(out))
    du.cleanup()
    dist.destroy_process_group() if dist.is_initialized() else None


if __name__ == "__main__":
    main()
