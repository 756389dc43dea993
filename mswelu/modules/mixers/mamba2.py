"""Mamba-2 (Dao & Gu 2024) as a registered mixer: the SSD block (the mixer itself is
:class:`mswelu.modules.mamba2_mixer.Mamba2Mixer`; its CPU scan :mod:`mswelu.ops.ssd`, its kernels
:mod:`mswelu.ops.mamba2_kernels`). Chosen with ``mixer: mamba2``; its own settings are the config's
``headdim``, ``n_groups``, ``chunk_size`` and ``dt_limit`` (the rest it shares with every state-space mixer,
:class:`SSMBlock`)."""

from __future__ import annotations

from typing import Any

from mswelu.modules.mamba2_mixer import Mamba2Mixer
from mswelu.modules.mixers.registry import Mixer, register_mixer
from mswelu.modules.mixers.ssm_block import SSMBlock
from mswelu.ops.mamba2_kernels import kernels_available


class Mamba2Block(SSMBlock):
    mixer_name = "mamba2"
    mixer_class = Mamba2Mixer

    mixer_fields = {
        **{f: f for f in ("headdim", "n_groups", "chunk_size", "dt_limit")},
        "norm_eps": "layer_norm_epsilon",
    }

    @staticmethod
    def own_parameter_count(config: Any) -> int:
        return 3 * (config.d_inner // config.headdim) + config.d_inner  # dt_bias, A_log, D; the norm's weight

    @staticmethod
    def own_flops_per_token(config: Any, seq_len: int) -> float:
        """The scan in its recurrent form: 6 per channel and state (dt x B, the per-head decay and add, C h)
        plus the D skip. The chunked algorithm does extra arithmetic within chunks to run as matmuls; that is
        the algorithm's, not the model's, and is not counted (as for Mamba-1's scan:
        :mod:`mswelu.models.flops`)."""
        return float(6 * config.d_inner * config.d_state + 2 * config.d_inner)

    @staticmethod
    def own_activation_bytes(config: Any, autocast_bytes: int) -> float:
        """in_proj's output, the conv's and act_conv's outputs, the scan's fp32 inputs and output, the gated
        norm's inputs, and the chunk-boundary states (chunks of 64) (bf16 autocast, the GPU kernels)."""
        s, di, n = autocast_bytes, config.d_inner, config.d_state
        width, conv_dim = Mamba2Block.widths(config)
        return width * s + 2 * conv_dim * s + conv_dim * 4 + 2 * di * 4 + 2 * di * s + 4 * di * n / 64


MAMBA2 = register_mixer(
    Mixer(
        "mamba2",
        "M",
        Mamba2Block,
        description="Mamba-2 SSD (Dao & Gu 2024): conv -> act on x, B, C -> SSD -> norm(y * act(z))",
        kernels_available=kernels_available,
    )
)
