"""Mamba-1 (Gu & Dao 2023) as a registered mixer: the selective-SSM block (the mixer itself is
:class:`mswelu.modules.mamba_mixer.MambaMixer`; its kernels :mod:`mswelu.ops.mamba_kernels`). Its own
setting is the config's ``dt_rank``; the rest it shares with every state-space mixer (:class:`SSMBlock`)."""

from __future__ import annotations

from typing import Any

from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.modules.mixers.registry import Mixer, register_mixer
from mswelu.modules.mixers.ssm_block import SSMBlock
from mswelu.ops.mamba_kernels import kernels_available


class Mamba1Block(SSMBlock):
    mixer_name = "mamba1"
    mixer_class = MambaMixer

    mixer_fields = {"dt_rank": "dt_rank", "conv_mode": "conv_mode"}

    @staticmethod
    def own_parameter_count(config: Any) -> int:
        n, di, r = config.d_state, config.d_inner, config.resolved_dt_rank
        return (r + 2 * n) * di + di * r + di + di * n + di  # x_proj, dt_proj (+ bias), A_log, D

    @staticmethod
    def own_flops_per_token(config: Any, seq_len: int) -> float:
        """x_proj, dt_proj (2 per multiply-add) and the selective scan: 8 per channel and state (exp(delta A),
        delta B u, the state update, C h) plus the D skip."""
        n, di, r = config.d_state, config.d_inner, config.resolved_dt_rank
        return float(2 * di * (r + 2 * n) + 2 * r * di + 8 * di * n + 2 * di)

    @staticmethod
    def own_activation_bytes(config: Any, autocast_bytes: int) -> float:
        """x and z, the conv's and act_conv's outputs, x_proj's output, the scan's fp32 inputs and its output,
        the gate's input and output, the product out_proj reads (bf16 autocast, the GPU kernels)."""
        s, di, n, r = autocast_bytes, config.d_inner, config.d_state, config.resolved_dt_rank
        return 2 * di * s + 2 * di * s + (r + 2 * n) * s + 2 * di * 4 + 3 * di * s


MAMBA1 = register_mixer(
    Mixer(
        "mamba1",
        "M",
        Mamba1Block,
        description="Mamba-1 selective SSM (Gu & Dao 2023): conv -> act -> selective scan -> y * act(z)",
        kernels_available=kernels_available,
    )
)
