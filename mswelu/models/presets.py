"""The named model shapes (``preset`` in configs and on the command line): overrides of
:class:`mswelu.models.configuration.MsweluConfig`'s defaults, which are the seed architecture (``seed-124m``).

True parameter counts (tied head counted once; ``tests/test_presets.py`` holds each to a real build):

    preset           params           k   notes
    seed-124m        100,917,263     15   the seeds' architecture with the real Mamba-1 mixer ("124M": no)
    mamba-130m       129,135,360      0   state-spaces/mamba-130m (24 x 768)
    mamba-1.4b     1,372,178,432      0   state-spaces/mamba-1.4b (48 x 2048)
    mamba2-130m      128,989,632      0   state-spaces/mamba2-130m (24 x 768, N 128, headdim 64)
    mamba2-1.3b    1,343,757,312      0   state-spaces/mamba2-1.3b (48 x 2048)
    seed004-hybrid   206,447,616      0   seed 004's hybrid: 1024 wide, AM x 8, 16 heads, N 48 ("~1B": no)
    small             15,210,507     11   trains visibly in minutes on 2 CPU cores (GPT-2 vocabulary)
    hybrid-small      15,384,585      9
    mamba2-small      15,186,539     11   ``small`` with Mamba-2 blocks (N 64, headdim 64)
    tiny                 139,719      7   tests (vocabulary 512)
    mamba2-tiny          130,079      7
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

_MAMBA_LM = {  # the reference Mamba language model arrangement (state-spaces/mamba-*): what convert maps
    "activation": "silu",
    "post_mixer_act": False,
    "dense_sizes": (),
    "pos_embedding": "none",
    "max_position_embeddings": 2048,
    "norm": "rmsnorm",
    "init_scheme": "mamba",
    "eos_token_id": 0,
    "bos_token_id": 0,
    "pad_token_id": 0,
}

_MAMBA1_REF = {**_MAMBA_LM, "vocab_size": 50277, "pad_vocab_size_multiple": 8}
_MAMBA2_REF = {**_MAMBA1_REF, "pad_vocab_size_multiple": 16, "mixer": "mamba2", "d_state": 128, "headdim": 64}
_SMALL = {"d_model": 256, "layer_pattern": "MMMM", "dense_sizes": (512, 512), "max_position_embeddings": 256}
_TINY = {"vocab_size": 512, "d_model": 64, "layer_pattern": "MM", "dense_sizes": (128, 128), "n_head": 4}
_TINY.update(max_position_embeddings=128, eos_token_id=0)

# Preset values are overrides of the dataclass defaults (which are the seed-124m architecture).
PRESETS: dict[str, dict[str, Any]] = {
    # The seed architecture. True size: 100,917,263 parameters with the real Mamba-1 mixer
    # (the seeds' "124M" is the count of their conv+gate fallback, which had no SSM at all).
    "seed-124m": {},
    # state-spaces/mamba-130m: 24 x 768, vocab 50277 padded to 50280, RMSNorm pre-norm residual.
    "mamba-130m": {**_MAMBA1_REF, "d_model": 768, "layer_pattern": "M" * 24},
    # state-spaces/mamba-1.4b: 48 x 2048 (RESULTS' "test on larger models (1B+)"; python -m mswelu.plan)
    "mamba-1.4b": {**_MAMBA1_REF, "d_model": 2048, "layer_pattern": "M" * 48},
    # state-spaces/mamba2-130m and mamba2-1.3b: Mamba-2 blocks, N 128, headdim 64, vocab padded to 50288
    "mamba2-130m": {**_MAMBA2_REF, "d_model": 768, "layer_pattern": "M" * 24},
    "mamba2-1.3b": {**_MAMBA2_REF, "d_model": 2048, "layer_pattern": "M" * 48},
    # Seed 004's hybrid as its README specifies it: hidden 1024, 16 layers alternating attention and Mamba,
    # 16 heads, d_state 48, sequences of 512, the SmolLM-135M tokenizer (49,152 tokens). The MLP after
    # attention has the usual 4x width and positions are learned (both unstated there).
    "seed004-hybrid": {
        **_MAMBA_LM,
        "vocab_size": 49152,
        "d_model": 1024,
        "layer_pattern": "AM" * 8,
        "n_head": 16,
        "d_state": 48,
        "attn_mlp_expand": 4,
        "pos_embedding": "learned",
        "max_position_embeddings": 512,
    },
    # Trains visibly in minutes on 2 CPU cores (GPT-2 vocab: the embedding is most of the weights).
    "small": {**_SMALL, "n_head": 4},
    # Attention/Mamba hybrid at the size of ``small`` (the seeds' hybrid study).
    "hybrid-small": {**_SMALL, "layer_pattern": "MAMA", "n_head": 4},
    # ``small`` with Mamba-2 blocks: 8 heads of 64 channels, N 64 (a state per head, so more than Mamba-1's)
    "mamba2-small": {**_SMALL, "n_head": 4, "mixer": "mamba2", "d_state": 64, "headdim": 64},
    # For tests: builds and runs in milliseconds; override vocab_size as needed.
    "tiny": {**_TINY},
    "mamba2-tiny": {**_TINY, "mixer": "mamba2", "d_state": 16, "headdim": 32, "chunk_size": 16},
}
