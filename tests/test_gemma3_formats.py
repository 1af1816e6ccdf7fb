"""Held-out perplexity of the real Gemma 3 270M per weight format: dodai offers for Gemma exactly the formats
within 1 % of fp32 (dodai.quant.offered_formats("gemma3")), as tests/test_quant.py does for SmolLM2."""

from __future__ import annotations

import pytest

from dodai.quant import FORMATS, MAX_PPL_INCREASE, offered_formats
from dodai.quant.perplexity import format_perplexities, heldout_ids

pytestmark = pytest.mark.models


def test_offered_formats_for_gemma_are_those_within_one_percent(gemma3_gguf):
    from _gemma3_refs import dodai_gemma3

    model, tok = dodai_gemma3(str(gemma3_gguf))
    assert model.config.model_type == "gemma3"
    ids = heldout_ids(tok, 512)
    assert len(ids) == 512 and ids[0] == tok.bos_id  # Gemma's text starts with <bos>
    res = format_perplexities(model, ids, list(FORMATS))
    base = res["fp32"]["ppl"]
    assert 5 < base < 100  # a real model on real prose (uniform would be 262144)
    for fmt in FORMATS:
        within = res[fmt]["ppl"] <= base * (1 + MAX_PPL_INCREASE)
        assert within == (fmt in offered_formats("gemma3")), (fmt, res[fmt]["ppl"], base)
    assert "int4" not in offered_formats("gemma3") and offered_formats("llama") == offered_formats(None)
