"""Lower-precision weights and their measured quality (issue 4, item 3).

- :mod:`dodai.quant.int8`: weight-only int8 with one absmax scale per output channel, an
  ``Int8Linear`` module, and :func:`dodai.quant.int8.quantize_model` for the formats below.
- :mod:`dodai.quant.int4`: weight-only 4-bit in groups of 32 (the Q4_1 scheme) on PyTorch's CPU
  4-bit kernel, an ``Int4Linear`` module; ``quantize_model(model, "int4")``.
- :mod:`dodai.quant.perplexity`: perplexity on held-out text, the measure that decides which formats
  dodai offers.

The constants live here (no torch import) so that CLI flag definitions can use them cheaply.
"""

FORMATS = ("fp32", "bf16", "int8", "int4")
# The formats dodai offers to users (`dodai generate --format`, `dodai ppl`): each one's perplexity on
# held-out text is within 1 % of fp32 on SmolLM2-135M, asserted by
# tests/test_quant.py::test_offered_formats_within_one_percent_of_fp32 (measured table:
# benchmarks/results/formats.md). A format failing that test is to be removed from this tuple.
OFFERED_FORMATS = ("fp32", "bf16", "int8", "int4")
# The bound itself: relative perplexity increase over fp32 a format may have to be offered.
MAX_PPL_INCREASE = 0.01
# The same rule per model family (``model.config.model_type``), measured on that family's real model: Gemma 3
# 270M's int4 is +25 % perplexity (held-out python-docs text; int8 and bf16 within 1 %), so it is not offered
# there. Asserted by tests/test_gemma3_formats.py; figures in benchmarks/results/gemma3_formats.md. A family not
# listed gets OFFERED_FORMATS.
OFFERED_BY_MODEL_TYPE = {
    "llama": OFFERED_FORMATS,  # SmolLM2-135M
    "gemma3": ("fp32", "bf16", "int8"),  # Gemma 3 270M
}


def offered_formats(model_type: str | None) -> tuple[str, ...]:
    """The weight formats dodai offers for a model family (``model.config.model_type``)."""
    return OFFERED_BY_MODEL_TYPE.get(model_type, OFFERED_FORMATS)
