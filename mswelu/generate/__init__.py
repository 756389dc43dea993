"""Text generation from a trained model: ``decoding`` (filters, the decode loop, prompts, speed, loading a
run's model) and ``cli`` (``python -m mswelu.generate``).
"""

from mswelu.generate.cli import main, repl
from mswelu.generate.decoding import (
    SamplingConfig,
    decode,
    decode_benchmark,
    decode_speed,
    describe_benchmark,
    generate_text,
    load_model,
    max_context,
    sample_next,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "SamplingConfig",
    "decode",
    "decode_benchmark",
    "decode_speed",
    "describe_benchmark",
    "generate_text",
    "load_model",
    "main",
    "max_context",
    "repl",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]
