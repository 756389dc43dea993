"""MsweluConfig: one Hugging Face config for every model the workbook trains.

The defaults describe the seed architecture (``seed-124m``): token + learned positional embedding,
6 pre-norm Mamba blocks ``x + dropout(act(mixer(norm(x))))``, a final norm, a non-residual dense
stack ``d -> 2048 -> 2048 -> d`` with an activation after each layer, and a tied LM head.
``mamba-130m`` is the reference Mamba-1 language model (RMSNorm, no positions, no post-mixer
activation, no dense stack), which converts to and from ``transformers.MambaForCausalLM``.

Activation slots (all follow ``activation``, with its shape parameters' settings in ``shape``):
- in each Mamba mixer, after the causal conv and on the gate: one shared module by default (every shape
  parameter's ``sharing`` ``shared``, the reading under which the seeds count 15 k), or one each. Mamba-2
  (``mixer="mamba2"``) has the same two slots: after the conv, on x, B and C together (as upstream; an
  activation bounded to (-1, 1) such as SWELU therefore bounds B and C as well), and on the gate inside the
  gated RMSNorm; the same settings and the same default apply, so a Mamba-1 and a Mamba-2 model of one config
  have the same number of k;
- after each mixer, before the residual add (``post_mixer_act``);
- after each of the 3 dense layers;
- in the MLP of an attention block (``attn_mlp_expand > 0``).

An ``A`` block is pre-norm causal self-attention plus, by default, a pre-norm MLP ``d -> 2d -> d``:
a Mamba block mixes channels itself (gate + projections, ~6.3 d^2 weights), attention alone does
not (4 d^2), so attention + MLP(expand 2) (8 d^2) is the closer like-for-like hybrid layer.

The named shapes (``from_preset``) and their true parameter counts: :mod:`mswelu.models.presets`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

from mswelu.base.errors import unknown_choice
from mswelu.models.presets import PRESETS
from mswelu.modules.activations import ACTIVATIONS, ShapeSetting, migrate_shape_settings, resolve_shape
from mswelu.modules.mixers import layer_mixers, mixer_spec, pattern_letters, sequence_mixers
from mswelu.modules.norms import NORMS
from mswelu.ops.backends import BACKENDS

POS_EMBEDDINGS = ("learned", "none")
INIT_SCHEMES = ("gpt2", "mamba")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(unknown_choice(name, value, allowed))


@strict(accept_kwargs=True)
class MsweluConfig(PretrainedConfig):
    """Configuration of :class:`mswelu.models.modeling.MsweluForCausalLM` (see the module docstring).

    Args:
        vocab_size: token vocabulary (rounded up to ``pad_vocab_size_multiple``).
        d_model: width of the residual stream.
        layer_pattern: one letter per block: ``M`` a block of the sequence mixer ``mixer``, ``A`` causal
            self-attention (:data:`mswelu.modules.mixers.MIXERS`).
        mixer: the sequence mixer of the ``M`` blocks: ``mamba1`` (the default) or another registered one.
            The fields below up to ``conv_bias`` and ``n_head`` / ``attn_mlp_expand`` are mixers' settings:
            each registered mixer's block reads the ones it uses and checks them itself (``check_config``,
            the mixer's own checks); they stay flat fields so that saved ``config.json`` files load.
        d_state: SSM state size N per channel (Mamba-1) or per head (Mamba-2).
        d_conv: causal convolution width.
        expand: ``d_inner = expand * d_model``.
        headdim: Mamba-2: channels per head (``nheads = d_inner / headdim``).
        n_groups: Mamba-2: groups sharing B and C (and the gated norm's groups).
        chunk_size: Mamba-2: the GPU kernel's chunk length (the CPU scan picks its own; results agree).
        dt_limit: Mamba-2: the range the timestep is clamped to (``time_step_limit``).
        dt_rank: Mamba-1: rank of the timestep projection; ``"auto"`` = ceil(d_model / 16).
        dt_min: smallest initial timestep (log-uniform init between ``dt_min`` and ``dt_max``).
        dt_max: largest initial timestep.
        dt_init_floor: floor of the initial timesteps.
        conv_bias: bias in the causal convolution.
        conv_mode: Mamba-1's causal convolution: ``learned`` (the default), ``ones`` (its weights fixed to
            one and frozen: a symmetric sum of the last ``d_conv`` tokens) or ``residual`` (its input added
            to its output, before the activation): the two controls of "Achilles' heel of Mamba" (Chen et
            al. 2025) that remove the conv's asymmetric fusion of tokens.
        proj_bias: biases in the in/out projections (and attention / MLP projections).
        n_head: attention heads of ``A`` blocks.
        attn_mlp_expand: MLP expansion after attention in ``A`` blocks; 0 = no MLP.
        activation: the activation of every slot, one of ``mswelu.ACTIVATIONS``.
        shape: settings of the activation's shape parameters, by name: ``{k: {init: 0.8, learnable: true,
            lr_scale: 2.0, sharing: separate}}``, each optional (``sharing``: ``shared``, one value for both
            in-mixer slots, the seeds' 15 k; ``separate``: one each); checked against what the activation
            registered (:mod:`mswelu.modules.activations.settings`). Configs that still say ``k_init``,
            ``learnable_lambda``, ``mixer_k_sharing`` or ``k_lr_scale`` are migrated on load.
        post_mixer_act: an activation after each mixer, before the residual add.
        dense_sizes: hidden sizes ``(h1, h2)`` of the dense stack d -> h1 -> h2 -> d; ``()`` = none.
        dense_residual: add the dense stack's output to the hidden state instead of replacing it.
        pos_embedding: ``learned`` (a position table) or ``none``.
        max_position_embeddings: length of the position table (and of attention's context).
        norm: ``layernorm`` or ``rmsnorm``.
        layer_norm_epsilon: epsilon of every norm.
        dropout: dropout after embeddings, blocks and between dense layers.
        tie_word_embeddings: the LM head shares the token embedding.
        backend: mixer path: ``auto`` (CUDA kernels when available), ``torch`` or ``cuda``.
        initializer_range: std of the ``gpt2`` init.
        init_scheme: ``gpt2`` or ``mamba`` (mamba-ssm's ``_init_weights``).
        pad_vocab_size_multiple: round the vocabulary up to a multiple of this.
        use_cache: return the decoding cache by default.
        eos_token_id: end-of-text token.
        bos_token_id: start token, if any.
        pad_token_id: padding token, if any.
    """

    model_type: ClassVar[str] = "mamba_swelu"
    attribute_map: ClassVar[dict[str, str]] = {"hidden_size": "d_model", "num_attention_heads": "n_head"}

    vocab_size: int = 50257
    d_model: int = 1024
    layer_pattern: str = "MMMMMM"
    mixer: str = "mamba1"
    d_state: int = 16
    d_conv: int = 4
    headdim: int = 64
    n_groups: int = 1
    chunk_size: int = 256
    dt_limit: list[float] | tuple[float, ...] = (0.0, math.inf)
    expand: int = 2
    dt_rank: str | int = "auto"
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    conv_mode: str = "learned"
    proj_bias: bool = False
    n_head: int = 16
    attn_mlp_expand: int = 2
    activation: str = "swelu"
    shape: dict[str, Any] | None = None
    post_mixer_act: bool = True
    dense_sizes: list[int] | tuple[int, ...] = (2048, 2048)
    dense_residual: bool = False
    pos_embedding: str = "learned"
    max_position_embeddings: int = 1024
    norm: str = "layernorm"
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    backend: str = "auto"
    initializer_range: float = 0.02
    init_scheme: str = "gpt2"
    pad_vocab_size_multiple: int = 1
    use_cache: bool = True
    eos_token_id: int | None = 50256
    bos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        migrated = migrate_shape_settings({**kwargs, "shape": self.shape or {}}, self.activation)
        self.shape = migrated.pop("shape")
        kwargs = migrated
        if isinstance(self.dense_sizes, list):
            self.dense_sizes = tuple(self.dense_sizes)
        self.dt_limit = tuple(float(v) for v in self.dt_limit)
        if self.pad_vocab_size_multiple < 1:
            raise ValueError(f"pad_vocab_size_multiple must be >= 1, got {self.pad_vocab_size_multiple}")
        if self.vocab_size % self.pad_vocab_size_multiple:
            m = self.pad_vocab_size_multiple
            self.vocab_size += m - self.vocab_size % m
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        _check_choice("mixer", self.mixer, sequence_mixers())
        _check_choice("norm", self.norm, NORMS)
        _check_choice("pos_embedding", self.pos_embedding, POS_EMBEDDINGS)
        self.shape_settings()
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("init_scheme", self.init_scheme, INIT_SCHEMES)
        letters = pattern_letters()
        if (
            not isinstance(self.layer_pattern, str)
            or not self.layer_pattern
            or set(self.layer_pattern) - set(letters)
        ):
            raise ValueError(
                f"invalid layer_pattern {self.layer_pattern!r}: use a non-empty string of {letters} ('M': a "
                "block of the config's mixer, 'A': causal self-attention), e.g. 'MMMMMM' or 'MAMA'"
            )
        for name in ("vocab_size", "d_model", "expand", "n_head", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for mixer in dict.fromkeys(self.layer_mixers()):  # each mixer checks the settings it reads
            mixer_spec(mixer).block.check_config(self)
        if self.conv_mode != "learned" and "mamba1" not in self.layer_mixers():
            raise ValueError(f"conv_mode={self.conv_mode!r} applies to Mamba-1 blocks; this model has none")
        if any(not isinstance(h, int) or h <= 0 for h in self.dense_sizes):
            raise ValueError(f"dense_sizes must be positive integers, got {self.dense_sizes!r}")
        if len(self.dense_sizes) not in (0, 2):
            raise ValueError(
                f"dense_sizes must be () (no dense stack) or (h1, h2) for the 3-layer stack d->h1->h2->d, "
                f"got {self.dense_sizes!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range}")

    def layer_mixers(self) -> list[str]:
        """The mixer of each block (``mamba1``, ``attention``, ...), in order."""
        return layer_mixers(self.layer_pattern, self.mixer)

    def shape_settings(self) -> dict[str, ShapeSetting]:
        """Every shape parameter of the activation with its settings resolved (``shape`` over the registered
        defaults); ValueError for a parameter the activation lacks or a bad setting."""
        return resolve_shape(self.activation, self.shape)

    @property
    def n_layer(self) -> int:
        """Number of blocks (``len(layer_pattern)``)."""
        return len(self.layer_pattern)

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MsweluConfig:
        """A config from one of :data:`PRESETS`, with keyword overrides (e.g. ``activation="silu"``)."""
        if name not in PRESETS:
            raise ValueError(unknown_choice("preset", name, sorted(PRESETS)))
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def for_run(
        cls, preset: str, vocab_size: int, max_seq_len: int, activation: str | None = None, **overrides: Any
    ) -> MsweluConfig:
        """The config a training run of ``preset`` uses: the run's vocabulary, a context of at least
        ``max_seq_len``, the run's activation, then ``overrides``."""
        if preset not in PRESETS:
            raise ValueError(unknown_choice("preset", preset, sorted(PRESETS)))
        pos = {**PRESETS[preset], **overrides}.get("max_position_embeddings", 1024)
        kwargs: dict[str, Any] = {
            "vocab_size": vocab_size,
            "max_position_embeddings": max(int(pos), max_seq_len),
        }
        if activation is not None:
            kwargs["activation"] = activation
        cfg = cls.from_preset(preset, **{**kwargs, **overrides})
        if cfg.pos_embedding == "learned" and cfg.max_position_embeddings < max_seq_len:
            raise ValueError(
                f"max_position_embeddings={cfg.max_position_embeddings} is shorter than seq_len={max_seq_len}"
            )
        return cfg


__all__ = ["MsweluConfig", "PRESETS"]
