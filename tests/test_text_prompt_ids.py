"""Raw-text prompts start with BOS exactly when the tokenizer says raw text does (``add_bos``: Gemma); the
generate command and the server's /v1/completions build their ids this way (regression: `dodai generate --model
gemma3-270m` fed Gemma a prompt without <bos> and it degenerated into "The The The ...")."""

from __future__ import annotations

from dodai.generate.session import text_prompt_ids


class _Tok:
    def __init__(self, add_bos, bos_id=2):
        self.add_bos, self.bos_id = add_bos, bos_id

    def encode(self, text):
        return [10 + ord(c) % 50 for c in text]


def test_bos_first_only_when_the_tokenizer_asks():
    assert text_prompt_ids(_Tok(True), "ab") == [2] + _Tok(True).encode("ab")
    assert text_prompt_ids(_Tok(False), "ab") == _Tok(False).encode("ab")
    assert text_prompt_ids(_Tok(True, bos_id=None), "ab") == _Tok(True).encode("ab")
    assert text_prompt_ids(_Tok(True), "") == []  # empty stays empty: callers report "encodes to no tokens"


def test_bos_not_doubled_when_the_text_already_has_it():
    tok = _Tok(True)
    tok.encode = lambda text: [2, 5, 6] if text.startswith("<bos>") else [5, 6]
    assert text_prompt_ids(tok, "<bos>hi") == [2, 5, 6]
    assert text_prompt_ids(tok, "hi") == [2, 5, 6]

