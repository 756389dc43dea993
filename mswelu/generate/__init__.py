"""Text generation on top of a trained model: ``decoding`` (sampling filters, the decode loop with
recurrent state or full recomputation, batches of prompts, the decode-speed comparison, loading a run's
model) and ``cli`` (``python -m mswelu.generate``: prompts, the interactive loop, ``--bench``)."""

from mswelu.generate.cli import HELP, Session, apply_command, build_parser, main, repl, run_command
from mswelu.generate.decoding import (
    DECODE_MODES,
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
    "DECODE_MODES",
    "HELP",
    "SamplingConfig",
    "Session",
    "apply_command",
    "build_parser",
    "decode",
    "decode_benchmark",
    "decode_speed",
    "describe_benchmark",
    "generate_text",
    "load_model",
    "main",
    "max_context",
    "repl",
    "run_command",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]
