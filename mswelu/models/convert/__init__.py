"""Conversion of Mamba-1 and Mamba-2 language-model weights to and from transformers and mamba-ssm (one
module per mixer; :mod:`.common` holds the shared renaming and strict load)."""

from mswelu.models.convert.mamba1 import (
    config_from_hf_mamba,
    config_from_mamba_ssm,
    from_hf_mamba,
    from_mamba_ssm,
    load_mamba_ssm_checkpoint,
    to_hf_mamba,
)
from mswelu.models.convert.mamba2 import (
    config_from_hf_mamba2,
    config_from_mamba_ssm2,
    from_hf_mamba2,
    from_mamba_ssm2,
    to_hf_mamba2,
)

__all__ = [
    "config_from_hf_mamba",
    "config_from_hf_mamba2",
    "config_from_mamba_ssm",
    "config_from_mamba_ssm2",
    "from_hf_mamba",
    "from_hf_mamba2",
    "from_mamba_ssm",
    "from_mamba_ssm2",
    "load_mamba_ssm_checkpoint",
    "to_hf_mamba",
    "to_hf_mamba2",
]
