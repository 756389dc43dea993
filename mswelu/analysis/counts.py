"""The seeds' counts (124M parameters, 15 learnable k) on the ``seed-124m`` preset they specify, untrained,
judged by the same evaluator as every claim.
"""

from __future__ import annotations

import pandas as pd

from mswelu.analysis.claims import COUNT_CLAIMS
from mswelu.analysis.verdicts import evaluate_claims

__all__ = ["architecture_claims", "architecture_counts"]


def architecture_counts() -> dict[str, float]:
    """``{"parameters": ..., "learnable_k": ...}`` of ``seed-124m`` as specified (tied head counted once)."""
    import torch

    from mswelu.models.configuration import MsweluConfig
    from mswelu.models.modeling import MsweluForCausalLM, parameter_count

    cfg = MsweluConfig.for_run("seed-124m", 50257, 1024)
    with torch.device("meta"):
        n_k = MsweluForCausalLM(cfg).num_shape_slots(learnable_only=True)
    return {"parameters": float(parameter_count(cfg)), "learnable_k": float(n_k)}


def architecture_claims() -> pd.DataFrame:
    """The count claims judged on :func:`architecture_counts` (rows with the claims table's columns)."""
    return evaluate_claims(COUNT_CLAIMS, counts=architecture_counts())
