"""Mamba-1 (Gu & Dao 2023) as a registered mixer: the selective-SSM block (the mixer itself is
:class:`mswelu.modules.mamba_mixer.MambaMixer`; its kernels :mod:`mswelu.ops.mamba_kernels`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.mixers.registry import Mixer, register_mixer
from mswelu.modules.mixers.ssm_block import SSMBlock
from mswelu.ops.backends import kernels_available


class Mamba1Block(SSMBlock):
    mixer_name = "mamba1"

    @staticmethod
    def build_mixer(config: Any, layer_idx: int, act_conv: nn.Module, act_gate: nn.Module) -> MambaMixer:
        return MambaMixer(
            config.d_model,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            dt_rank=config.dt_rank,
            dt_min=config.dt_min,
            dt_max=config.dt_max,
            dt_init_floor=config.dt_init_floor,
            conv_bias=config.conv_bias,
            bias=config.proj_bias,
            act_conv=act_conv,
            act_gate=act_gate,
            backend=config.backend,
            layer_idx=layer_idx,
            conv_mode=config.conv_mode,
        )

    @staticmethod
    def mixer_parameter_count(config: Any) -> int:
        d, n, di, r = config.d_model, config.d_state, config.d_inner, config.resolved_dt_rank
        bias = int(config.proj_bias)
        count = 2 * di * d + 2 * di * bias  # in_proj
        count += di * config.d_conv + di * int(config.conv_bias)  # conv1d
        count += (r + 2 * n) * di  # x_proj
        count += di * r + di  # dt_proj (+ bias)
        count += di * n + di  # A_log, D
        return count + d * di + d * bias  # out_proj

    @staticmethod
    def mixer_flops_per_token(config: Any, seq_len: int) -> float:
        """in_proj, depthwise conv, x_proj, dt_proj, out_proj (2 per multiply-add) and the selective scan:
        8 per channel and state (exp(delta A), delta B u, the state update, C h) plus the D skip."""
        d, n, di, r = config.d_model, config.d_state, config.d_inner, config.resolved_dt_rank
        matmuls = 2 * d * 2 * di + 2 * di * config.d_conv + 2 * di * (r + 2 * n) + 2 * r * di + 2 * di * d
        return float(matmuls + 8 * di * n + 2 * di)


MAMBA1 = register_mixer(
    Mixer(
        "mamba1",
        "M",
        Mamba1Block,
        description="Mamba-1 selective SSM (Gu & Dao 2023): conv -> act -> selective scan -> y * act(z)",
        kernels_available=kernels_available,
    )
)
