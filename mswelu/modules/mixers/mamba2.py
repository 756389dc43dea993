"""Mamba-2 (Dao & Gu 2024) as a registered mixer: the SSD block (the mixer itself is
:class:`mswelu.modules.mamba2_mixer.Mamba2Mixer`; its CPU scan :mod:`mswelu.ops.ssd`, its kernels
:mod:`mswelu.ops.mamba2_kernels`). Chosen with ``mixer: mamba2``; its own settings are the config's
``headdim``, ``n_groups``, ``chunk_size`` and ``dt_limit`` (the rest it shares with Mamba-1)."""

from __future__ import annotations

from typing import Any

from torch import nn

from mswelu.modules.mamba2_mixer import Mamba2Mixer
from mswelu.modules.mixers.registry import Mixer, register_mixer
from mswelu.modules.mixers.ssm_block import SSMBlock
from mswelu.ops.mamba2_kernels import kernels_available


class Mamba2Block(SSMBlock):
    mixer_name = "mamba2"

    @staticmethod
    def build_mixer(config: Any, layer_idx: int, act_conv: nn.Module, act_gate: nn.Module) -> Mamba2Mixer:
        return Mamba2Mixer(
            config.d_model,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            headdim=config.headdim,
            n_groups=config.n_groups,
            chunk_size=config.chunk_size,
            dt_min=config.dt_min,
            dt_max=config.dt_max,
            dt_init_floor=config.dt_init_floor,
            dt_limit=tuple(config.dt_limit),
            conv_bias=config.conv_bias,
            bias=config.proj_bias,
            norm_eps=config.layer_norm_epsilon,
            act_conv=act_conv,
            act_gate=act_gate,
            backend=config.backend,
            layer_idx=layer_idx,
        )

    @staticmethod
    def mixer_parameter_count(config: Any) -> int:
        d, n, di, g = config.d_model, config.d_state, config.d_inner, config.n_groups
        heads, bias = di // config.headdim, int(config.proj_bias)
        conv_dim = di + 2 * g * n
        width = di + conv_dim + heads  # in_proj rows: z, xBC, dt
        count = width * d + width * bias
        count += conv_dim * config.d_conv + conv_dim * int(config.conv_bias)
        count += 3 * heads + di  # dt_bias, A_log, D; the gated norm's weight
        return count + d * di + d * bias  # out_proj

    @staticmethod
    def mixer_flops_per_token(config: Any, seq_len: int) -> float:
        """in_proj, depthwise conv, out_proj (2 per multiply-add) and the scan in its recurrent form: 6 per
        channel and state (dt x B, the per-head decay and add, C h) plus the D skip. The chunked algorithm
        does extra arithmetic within chunks to run as matmuls; that is the algorithm's, not the model's, and
        is not counted (as for Mamba-1's scan, see :mod:`mswelu.flops`)."""
        d, n, di, g = config.d_model, config.d_state, config.d_inner, config.n_groups
        conv_dim = di + 2 * g * n
        width = di + conv_dim + di // config.headdim
        matmuls = 2 * d * width + 2 * conv_dim * config.d_conv + 2 * di * d
        return float(matmuls + 6 * di * n + 2 * di)


MAMBA2 = register_mixer(
    Mixer(
        "mamba2",
        "M",
        Mamba2Block,
        description="Mamba-2 SSD (Dao & Gu 2024): conv -> act on x, B, C -> SSD -> norm(y * act(z))",
        kernels_available=kernels_available,
    )
)
