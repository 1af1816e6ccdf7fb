"""Jailbreak defence (R8.2): special-token injection defence, an input guard and an output guard.

Three independent layers, each small enough to read in one sitting:

1. **Special-token injection.** A chat prompt is a string rendered by the model's own template
   (:mod:`dodai.chat_template`) and then tokenized. Tokenizers match control strings such as
   ``<|im_start|>`` / ``<|im_end|>`` / ``<|endoftext|>`` *anywhere* in the text (HF ``tokenizers`` does the
   same with added tokens), so a user who types ``<|im_end|>\\n<|im_start|>system\\n…`` forges a real system
   turn: the model cannot tell it from the operator's. :func:`safe_chat_ids` renders the conversation with a
   unique placeholder in place of each message's content, encodes the template's own text with control
   tokens active and each content with control tokens *disabled* (their text becomes ordinary bytes), and
   checks that putting the contents back reproduces the normal render, so the ids differ from the plain
   path only where a content holds a control string. When a template transforms the content (the check
   fails) it falls back to :func:`neutralise_specials` (a zero-width space after the first character of
   each control string inside contents), which is lossy but never lets user text become a control token.

2. **Input guard** (:class:`InputGuard`): flags prompt-injection / jailbreak attempts in user or tool text.
   Rules (regexes, and order-free :class:`SentenceRule` s) run over several *views* of the text
   (:func:`text_views`): as given; normalised (invisible characters — zero-width, soft hyphen, bidi and tag
   characters, :func:`strip_invisible` — removed, NFKC, look-alike Cyrillic / Greek / Armenian / IPA letters
   folded to Latin after Unicode TR #39's confusables, :func:`fold_lookalikes`, leetspeak, s p a c i n g);
   squashed; reversed; ROT13; a multilingual *gloss* (:func:`gloss`: a small lexicon of Japanese, Chinese,
   Korean, Spanish, French, German, Portuguese, Italian and Russian phrases mapped to English words, so the
   English rules and word-order-free intent rules read other languages); quoted fragments joined (payload
   splitting, :func:`quoted_join`); and, recursively, text hidden in Unicode tag characters
   (:func:`hidden_tag_text`, "ASCII smuggling") and in base64 / hex runs. They catch the families the
   literature names — instruction override ("ignore previous instructions", Perez & Ribeiro 2022, "Ignore
   Previous Prompt"), role-play personas ("DAN", developer mode; Shen et al. 2023, "Do Anything Now"),
   system-prompt / secret extraction, goal hijacking (HackAPrompt's "PWNED", Schulhoff et al. 2023),
   instructions addressed to the AI inside documents, fake chat markup, encoded payloads (Wei et al. 2023,
   "Jailbroken: How Does LLM Safety Training Fail?", whose base64 attacks exploit mismatched
   generalisation). A small learned scorer (:class:`NgramScorer`: logistic regression on hashed character
   3–5-grams and word 1–2-grams of the normalised text and its gloss) adds recall on paraphrases the rules
   miss; it is trained on a generated set plus benign technical prose
   (:func:`dodai.safety.guard_data.guard_training_set`). Everything here is built and tuned on the development
   split only; the held-out split (:mod:`dodai.safety.heldout`) is never read by this module.

3. **Output guard** (:class:`OutputGuard`): blocks a reply that leaks a protected secret (a canary
   string placed in the system prompt, after Greshake et al. 2023 "Not what you've signed up for") in
   plain, spaced / dotted, reversed, ROT13, base64 or hex form or as a long fragment, that copies a long run
   of the protected system prompt, or that contains a forbidden marker (the text an injected instruction
   asked for, e.g. "PWNED"). Told the very strings a red-team judge looks for, it blocks every leak that judge
   can see by construction; the R8.2 experiment therefore measures the copy check alone and reports the
   secret-aware configuration as a demonstration (:mod:`dodai.safety.redteam`).

Conventions: a guard returns a :class:`Verdict` (``blocked``, ``score``, ``reasons``); a blocked turn is
answered with :data:`REFUSAL`. Everything here is pure Python + NumPy and runs in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import inspect
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dodai.errors import DodaiError

REFUSAL = "Sorry, I can't help with that request."
ZWSP = "\u200b"  # inserted into control strings found in content (fallback neutralisation)


@dataclass
class Verdict:
    blocked: bool
    score: float = 0.0  # learned scorer probability (input guard) or 1.0 / 0.0 (output guard)
    reasons: list[str] = field(default_factory=list)


# ---- 1. special-token injection -----------------------------------------------------------------

def control_strings(tok) -> list[str]:
    """Every string the tokenizer turns into a control token when it meets it in text, longest first."""
    specials = getattr(tok, "special_tokens_all", None) or getattr(tok, "special_tokens", None) or {}
    return sorted((s for s in specials if s), key=len, reverse=True)


def find_control_strings(text: str, tok_or_strings) -> list[str]:
    """The control strings that occur in ``text`` (in order of appearance, with repeats)."""
    strings = tok_or_strings if isinstance(tok_or_strings, (list, tuple, set)) else control_strings(tok_or_strings)
    if not strings or not text:
        return []
    pat = re.compile("|".join(re.escape(s) for s in sorted(strings, key=len, reverse=True)))
    return pat.findall(text)


def neutralise_specials(text: str, strings: Iterable[str]) -> str:
    """``text`` with a zero-width space after the first character of every control string, so the
    tokenizer no longer matches it (it still reads the same to a human)."""
    strings = sorted((s for s in strings if len(s) > 1), key=len, reverse=True)
    if not strings:
        return text
    pat = re.compile("|".join(re.escape(s) for s in strings))
    return pat.sub(lambda m: m.group(0)[0] + ZWSP + m.group(0)[1:], text)


def _accepts_allowed_special(tok) -> bool:
    try:
        return "allowed_special" in inspect.signature(tok.encode).parameters
    except (TypeError, ValueError):
        return False


def encode_plain(tok, text: str) -> list[int]:
    """Encode ``text`` so that no control string in it becomes a control token."""
    if _accepts_allowed_special(tok):
        return tok.encode(text, allowed_special="none")
    if hasattr(tok, "encode_ordinary"):
        return tok.encode_ordinary(text)
    strings = control_strings(tok)
    return tok.encode(neutralise_specials(text, strings) if strings else text)


def _sentinels(texts: Sequence[str]) -> tuple[str, str]:
    """Two private-use characters that occur in none of ``texts`` (placeholders cannot collide)."""
    for a in range(0xE000, 0xF8FF, 2):
        x, y = chr(a), chr(a + 1)
        if not any(x in t or y in t for t in texts):
            return x, y
    raise DodaiError("cannot find a placeholder character absent from the conversation")


def safe_chat_ids(template, tok, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the chat prompt in which only the template's own control strings are control tokens.

    ``template`` is a :class:`dodai.chat_template.ChatTemplate`. For content without control strings the
    ids equal ``tok.encode(template.render(messages))``: the text between two template control tokens is
    encoded as one run, so pre-tokenization across a content boundary is unchanged.
    """
    strings = control_strings(tok)
    plain = template.render(messages, add_generation_prompt=add_generation_prompt)
    if not strings:
        return tok.encode(plain)
    contents = [m["content"] for m in messages]
    a, b = _sentinels(contents + [plain, template.source])
    marked = [dict(m, content=f"{a}{i}{b}") for i, m in enumerate(messages)]
    parts = re.split(f"{re.escape(a)}(\\d+){re.escape(b)}", template.render(marked, add_generation_prompt))
    # parts = [template text, index, template text, index, ..., template text]
    rebuilt = parts[0] + "".join(contents[int(parts[k])] + parts[k + 1] for k in range(1, len(parts), 2))
    if rebuilt != plain:  # the template looks at or changes the content: neutralise instead
        safe = [dict(m, content=neutralise_specials(m["content"], strings)) for m in messages]
        return tok.encode(template.render(safe, add_generation_prompt=add_generation_prompt))
    # Cut only at the template's own control strings; everything between two of them (template text and
    # contents alike) is encoded as one plain run, exactly as the plain path would see it without injections.
    ctrl = re.compile("|".join(re.escape(x) for x in strings))
    items: list[tuple[bool, str]] = []  # (is control token, text)
    for k, piece in enumerate(parts):
        if k % 2:
            items.append((False, contents[int(piece)]))
            continue
        pos = 0
        for m in ctrl.finditer(piece):
            items += [(False, piece[pos:m.start()]), (True, m.group(0))]
            pos = m.end()
        items.append((False, piece[pos:]))
    ids: list[int] = []
    run = ""
    for is_ctrl, text in items:
        if not is_ctrl:
            run += text
            continue
        if run:
            ids += encode_plain(tok, run)
            run = ""
        ids += tok.encode(text)
    if run:
        ids += encode_plain(tok, run)
    return ids


def count_control_tokens(ids: Sequence[int], tok) -> int:
    """How many ids are control tokens (used to show what an injection did to a prompt)."""
    specials = set((getattr(tok, "special_tokens_all", None) or getattr(tok, "special_tokens", None) or {}).values())
    return sum(1 for i in ids if i in specials)


# ---- text views (shared by both guards) ---------------------------------------------------------

# Invisible characters: every format character (Unicode category Cf: zero-width space / joiners, word joiner,
# soft hyphen, BOM, bidi controls, the Mongolian vowel separator, the tag block U+E0000..E007F) plus a few
# invisible letters and marks that are not Cf (combining grapheme joiner, Hangul fillers, variation selectors).
_INVISIBLE_OTHER = frozenset([0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x17B4, 0x17B5, *range(0xFE00, 0xFE10),
                              *range(0xE0100, 0xE01F0)])
_TAG_FIRST, _TAG_LAST, _CANCEL_TAG, _BLACK_FLAG = 0xE0020, 0xE007E, 0xE007F, 0x1F3F4

# Look-alike letters folded to Latin (Cyrillic, Greek, Armenian, Latin IPA / small capitals): the confusable
# pairs of Unicode TR #39 that matter for hiding English keywords, written out by hand (NFKC already folds
# full-width and mathematical letters). Applied in the ``normalised`` view only, so real Russian or Greek
# text is still read as itself by the multilingual lexicon.
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ӏ": "l", "һ": "h",
    "ү": "y", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ѡ": "w", "ь": "b", "г": "r", "п": "n", "и": "u", "л": "n",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Ԁ": "D", "Ӏ": "I", "Һ": "H", "Ԛ": "Q", "Ԝ": "W",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j", "μ": "u",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Armenian, Latin IPA and small capitals, dotless i
    "օ": "o", "ս": "u", "ո": "n", "հ": "h", "ց": "g", "զ": "q", "ı": "i", "ɑ": "a", "ɩ": "i", "ʏ": "y",
    "ɪ": "i", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ᴊ": "j", "ᴋ": "k",
    "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v",
    "ᴡ": "w", "ᴢ": "z",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
_HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){8,}\b")
_SPACED = re.compile(r"\b(?:\w[ .\-_*]){3,}\w\b")  # i g n o r e / p.a.s.s / s-e-c-r-e-t
_QUOTED = re.compile(r"'([^'\n]{1,80})'|\"([^\"\n]{1,80})\"|“([^”\n]{1,80})”|‘([^’\n]{1,80})’|「([^」\n]{1,80})」"
                     r"|『([^』\n]{1,80})』|«\s*([^»\n]{1,80}?)\s*»")


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf" or ord(ch) in _INVISIBLE_OTHER


def strip_invisible(text: str) -> str:
    """``text`` without invisible characters (zero-width, soft hyphen, bidi controls, tag characters…)."""
    return "".join(ch for ch in text if not _invisible(ch))


def hidden_tag_text(text: str, skip_flags: bool = False) -> str:
    """The ASCII text written in Unicode tag characters (U+E0020..U+E007E mirror ASCII 0x20..0x7E; invisible in
    most renderers, so a message can carry an instruction the user never sees: "ASCII smuggling").
    ``skip_flags`` leaves out the tag runs of emoji flag sequences (U+1F3F4 + tags + cancel tag, e.g. the
    Scotland flag), their only legitimate use. Runs are joined by spaces."""
    runs, cur, flag = [], [], False
    prev = ""
    for ch in text:
        o = ord(ch)
        if _TAG_FIRST <= o <= _TAG_LAST:
            if not cur:
                flag = prev == chr(_BLACK_FLAG)
            cur.append(chr(o - 0xE0000))
            continue
        if cur:
            if not (skip_flags and flag and o == _CANCEL_TAG):
                runs.append("".join(cur))
            cur = []
        prev = ch
    if cur:
        runs.append("".join(cur))
    return " ".join(runs)


def fold_lookalikes(text: str) -> str:
    """Look-alike letters (Cyrillic, Greek, …) to Latin and Latin letters stripped of diacritics ("ïgnörë")."""
    out = []
    for ch in text.translate(_CONFUSABLES):
        if ord(ch) > 0x7F and ch.isalpha():
            base = unicodedata.normalize("NFKD", ch)
            if base[0].isascii() and base[0].isalpha() and all(unicodedata.combining(c) for c in base[1:]):
                ch = base[0]
        out.append(ch)
    return "".join(out)


def strip_accents(text: str) -> str:
    """Latin letters without their diacritics ("código" -> "codigo"); other scripts unchanged."""
    out = []
    for ch in text:
        if ord(ch) > 0x7F and ch.isalpha():
            base = unicodedata.normalize("NFKD", ch)
            if base[0].isascii() and all(unicodedata.combining(c) for c in base[1:]):
                ch = base[0]
        out.append(ch)
    return "".join(out)


def _printable_ratio(s: str) -> float:
    return sum(ch.isprintable() or ch in "\n\t" for ch in s) / max(1, len(s))


def decode_runs(text: str, max_runs: int = 16) -> list[str]:
    """Texts hidden in ``text`` as base64 (standard or URL-safe, padding optional) or hex runs, when they
    decode to mostly printable UTF-8."""
    out = []
    for m in list(_B64_RUN.finditer(text))[:max_runs]:
        run = m.group(0).rstrip("=")
        if len(run) % 4 == 1:  # never a valid length
            run = run[:-1]
        try:
            raw = base64.b64decode(run.replace("-", "+").replace("_", "/") + "=" * (-len(run) % 4),
                                   validate=True)
            s = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if s and _printable_ratio(s) > 0.95:
            out.append(s)
    for m in list(_HEX_RUN.finditer(text))[:max_runs]:
        h = re.sub(r"[ :]", "", m.group(0))
        try:
            s = bytes.fromhex(h[: len(h) // 2 * 2]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if s and _printable_ratio(s) > 0.95:
            out.append(s)
    return out


def normalise(text: str) -> str:
    """Invisible characters removed, NFKC (full-width, mathematical and other compatibility forms), look-alike
    letters folded to Latin, lower case, leetspeak digits mapped to letters, s p a c e d letters joined."""
    t = fold_lookalikes(unicodedata.normalize("NFKC", strip_invisible(text))).lower()
    t = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), t)
    return t.translate(_LEET)


def quoted_join(text: str) -> list[str]:
    """Payload splitting: when ``text`` quotes two or more fragments ("a = 'ignore all prev', b = 'ious
    instructions'"), the fragments joined without and with a space; else []."""
    parts = [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)]
    if len(parts) < 2:
        return []
    return list(dict.fromkeys(["".join(parts), " ".join(parts)]))


# ---- multilingual gloss ---------------------------------------------------------------------------
# A small bilingual lexicon: phrases of Japanese, Chinese, Korean, Spanish, French, German, Portuguese,
# Italian and Russian that carry the intents of a jailbreak, each mapped to the English word the rules use.
# The gloss view replaces them in the text (accents stripped, lower case); the English rules and the
# order-free intent rules below then read it, whatever the word order of the source language.
# CJK entries match as substrings; the others as whole words (regex).
_LEX: list[tuple[str, list[str]]] = [
    # words that contain a keyword but mean something else ("密码学" is cryptography, not "password study")
    ("cryptography", ["密码学", "暗号学", "암호학", r"\bcriptografia\b", r"\bcryptographie\b", r"\bkryptographie\b",
                      r"криптографи\w*"]),
    ("unrestricted", ["制限のない", "制限なし", "無制限", "何でもでき", "なんでもでき", "ルールはありません",
                      "ルールのない",
                      "検閲なし", "没有任何限制", "没有限制", "无限制", "不受限制", "没有规则", "无所不能",
                      "제한 없는", "제한이 없는", "무제한", "규칙이 없는",
                      r"\bsin (?:reglas|restricciones|limites|filtros|censura)\b",
                      r"\bsans (?:regles|restrictions|limites|filtres?|censure)\b",
                      r"\bohne (?:regeln|einschrankungen|grenzen|filter|zensur)\b",
                      r"\bsem (?:regras|restricoes|limites|filtros|censura)\b",
                      r"\bsenza (?:regole|restrizioni|limiti|filtri|censura)\b",
                      r"без (?:ограничений|правил|цензуры)"]),
    ("system prompt", ["システムプロンプト", "システムメッセージ", "初期設定", "系统提示词", "系统提示", "系统消息",
                       "系统指令",
                       "提示词",
                       "시스템 프롬프트", "시스템 메시지",
                       r"\b(?:mensaje|prompt|instrucciones) del? sistema\b", r"\b(?:prompt|message) systeme\b",
                       r"\bsystem-?(?:prompt|nachricht)\b", r"\b(?:prompt|mensagem) do sistema\b",
                       r"\b(?:prompt|messaggio) di sistema\b", r"системн\w* (?:промпт\w*|сообщени\w*|подсказк\w*)"]),
    ("access code", ["アクセスコード", "パスコード", "暗証番号", "秘密のコード", "秘密の番号", "認証コード", "合言葉",
                     "访问码",
                     "访问代码",
                     "通行码", "秘密代码", "访问密钥", "접근 코드", "액세스 코드", "비밀 코드",
                     r"\bcodigo (?:de acceso|secreto|de acesso)\b", r"\bcode (?:d'acces|secret)\b",
                     r"\b(?:zugangs|geheim)code\b", r"\bcodice (?:di accesso|segreto)\b",
                     r"\bcodigo de acesso\b", r"код\w* доступа", r"секретн\w* код\w*"]),
    ("password", ["パスワード", "密码", "口令", "비밀번호", "암호", r"\bcontrasena\b", r"\bclave\b",
                  r"\bmot de passe\b", r"\bpasswort\b", r"\bkennwort\b", r"\bsenha\b", r"парол\w*"]),
    ("how", ["方法", "やり方", "作り方", "仕方", "どうやって", "手順", "再設定", "リセット", "変更", "安全な", "如何",
             "怎么",
             "怎样", "重置", "修改", "방법", "어떻게", "재설정", "안전하게", r"\bcomo\b", r"\bcomment\b", r"\bwie\b",
             r"\bcome\b", r"\bcambiar\b", r"\bchanger\b", r"\brestablecer\b", r"\breinitialiser\b",
             r"\bzurucksetzen\b", r"\bredefinir\b", r"\breimpostare\b", r"\bкак\b", r"сбросить", r"изменить"]),
    ("ignore", ["無視", "忘れ", "無効", "従わない", "破棄", "関係ありません", "関係ない", "忽略", "无视", "忘记",
                "忘掉", "不要理会", "无效",
                "不要遵守",
                "무시", "잊어", "잊고", "무효",
                r"\b(?:ignora|ignorar|ignorez|ignorer|ignoriere|ignorieren|ignorate|ignori|ignorem)\b",
                r"\bolvid(?:a|e|en|ar|ate)\b", r"\bomite\b", r"\bdescarta\b", r"\boublie[zr]?\b",
                r"\bvergiss\b", r"\bvergessen\b", r"\bmissachte\b", r"\besquec(?:a|e|er|am)\b",
                r"\bdesconsidere\b", r"\bdimentica(?:re|te)?\b", r"игнорир\w*", r"проигнорир\w*", r"забудь\w*",
                r"\bno (?:sigas|obedezcas)\b", r"\bne suis pas\b", r"не обращай внимания"]),
    ("previous", ["以前の", "これまでの", "今までの", "前の", "上記の", "上の", "先ほどの", "最初の", "之前的",
                  "之前", "以前的",
                  "先前的",
                  "以上", "上面的", "上述", "이전의", "이전", "위의", "앞의", r"\banteriores?\b", r"\bprevi[oa]s\b",
                  r"\bde arriba\b", r"\bprecedentes?\b", r"\bci-dessus\b", r"\banterieures?\b",
                  r"\b(?:vorherig|obig|bisherig)\w*\b", r"\bprecedenti\b", r"предыдущ\w*", r"прежн\w*"]),
    ("instructions", ["指示", "命令", "ルール", "規則", "制約", "指令", "规则", "说明", "지시", "명령", "규칙", "지침",
                      r"\binstrucciones\b", r"\breglas\b", r"\bnormas\b", r"\bindicaciones\b", r"\bconsignes?\b",
                      r"\bregles\b", r"\bdirectives\b", r"\banweisung(?:en)?\b", r"\bregeln\b", r"\bbefehle\b",
                      r"\bvorgaben\b", r"\binstrucoes\b", r"\bregras\b", r"\bistruzioni\b", r"\bregole\b",
                      r"инструкци\w*", r"указани\w*", r"правил\w*"]),
    ("reveal", ["教えて", "表示", "出力", "言って", "書いて", "見せて", "繰り返", "明かして", "公開", "答えて",
                "告诉", "显示",
                "输出", "说出", "透露", "写出", "给我", "重复", "打印", "展示", "알려", "보여", "출력", "말해", "공개",
                "반복", r"\bdime\b", r"\bmuestra(?:me)?\b", r"\brevela(?:me)?\b", r"\bescribe\b", r"\bimprime\b",
                r"\bdame\b", r"\brepite\b", r"\bdis-moi\b", r"\bdonne(?:-moi)?\b", r"\bmontre(?:-moi)?\b",
                r"\brevele\b", r"\becris\b", r"\baffiche\b", r"\brepete\b", r"\bgib\b", r"\bnenne\b", r"\bzeige?\b",
                r"\bverrate?\b", r"\bschreibe?\b", r"\bsage?\b", r"\bwiederhole\b", r"\bdiga\b", r"\bmostre\b",
                r"\brevele\b", r"\bescreva\b", r"\bimprima\b", r"\brepita\b", r"\bdimmi\b", r"\bmostra\b",
                r"\brivela\b", r"\bscrivi\b", r"\bstampa\b", r"\bripeti\b", r"\bdammi\b", r"скажи", r"покажи",
                r"напиши", r"раскрой", r"выведи", r"сообщи", r"назови", r"повтори"]),
    ("what is", ["何ですか", "は何", "什么", "是啥", "뭐", "무엇", r"\bcual\b", r"\bquel(?:le)?\b", r"\bwas ist\b",
                 r"\bwie lautet\b", r"\bwelche[rs]?\b", r"\bqual\b", r"\bche cos\w*", r"какой", r"какая", r"каков\w*"]),
    ("pretend you are", ["ふりをして", "になりきって", "として振る舞", "假装", "扮演", "척해", r"\bfinge\b",
                         r"\bactua como\b", r"\bfais semblant\b", r"\btu so als\b", r"\bfinja\b", r"\bfingi\b",
                         r"притворись"]),
    ("you", ["あなた", "君", "お前", "你", "您", "너", "당신", r"\beres\b", r"\bes-tu\b", r"\bты\b", r"\bвы\b"]),
    ("follow", ["従って", "実行", "その通りに", "执行", "照做", "遵循", "服从", "따라", "실행", r"\bsigue\b",
                r"\bobedece\b", r"\bejecuta\b", r"\bexecute[zr]?\b", r"\bobeis\b", r"\bbefolge\b", r"\bsiga\b",
                r"\besegui\b", r"\bвыполни\b"]),
    ("only", ["だけ", "のみ", "只", "만", r"\bsolo\b", r"\buniquement\b", r"\bnur\b", r"\bapenas\b", r"\bтолько\b"]),
    ("say", ["と書いて", "と言って", "回复", "回答", "返答", "返事"]),
]


def _lex_pattern(entry: str) -> str:
    return entry if any(c in entry for c in "\\[]()|?*") else re.escape(entry)


_LEX_RE = [(eng, re.compile("|".join(_lex_pattern(e) for e in sorted(entries, key=len, reverse=True))))
           for eng, entries in _LEX]


def gloss(text: str) -> str | None:
    """``text`` (invisibles removed, NFKC, lower case, accents stripped) with the lexicon's foreign phrases
    replaced by their English words, or None when no foreign phrase occurs (an English text has no gloss)."""
    t = strip_accents(unicodedata.normalize("NFKC", strip_invisible(text))).lower()
    changed = False
    for eng, pat in _LEX_RE:
        def sub(m, eng=eng):
            nonlocal changed
            changed = changed or m.group(0) != eng
            return f" {eng} "
        t = pat.sub(sub, t)
    return t if changed else None


def text_views(text: str, depth: int = 2) -> list[tuple[str, str]]:
    """(name, text) views in which hidden instructions become plain: as given, normalised, squashed (letters
    and digits only, for s p a c e d text without word gaps), reversed, ROT13, the multilingual gloss, the
    quoted fragments joined (payload splitting), and, recursively (``depth`` levels), text hidden in tag
    characters and decoded base64 / hex runs."""
    visible = unicodedata.normalize("NFKC", strip_invisible(text))
    norm = normalise(text)
    views = [("text", text), ("normalised", norm), ("squashed", re.sub(r"[^0-9a-z]", "", norm)),
             ("reversed", visible[::-1]), ("rot13", codecs.decode(visible, "rot13"))]
    g = gloss(text)
    if g is not None:
        views.append(("gloss", g))
    views += [(f"joined{k}", j) for k, j in enumerate(quoted_join(visible))]
    if depth > 0:
        hidden = [("tags", hidden_tag_text(text, skip_flags=True))]
        hidden += [(f"decoded{k}", s) for k, s in enumerate(decode_runs(strip_invisible(text)))]
        for prefix, s in hidden:
            if s.strip():
                views += [(f"{prefix}:{name}", v) for name, v in text_views(s, depth - 1) if name != "reversed"]
    return views


# ---- 2. input guard -----------------------------------------------------------------------------

_V = r"(?:ignore|disregard|forget|skip|bypass|override|drop|abandon|discard|set aside|throw out|stop following)"
_PRIOR = r"(?:previous|prior|above|earlier|preceding|original|initial|old|existing|system|developer|your|all|any)"
_RULES_NOUN = r"(?:instructions?|rules|prompts?|directions|guidelines|constraints|directives|orders|programming|policy)"
_SECRETS = r"(?:secret|password|passcode|pass code|access code|api key|canary|hidden (?:word|code|key)|private key)"
_ROLE_WORDS = r"(?:unfiltered|uncensored|unrestricted|jailbroken|evil|rogue|amoral|unaligned|lawless|unchained)"

_NOT_POLICY = r"(?!\s*(?:of|policy|policies|manager|strength|requirements?|reset|hash|generator|rules|santa))"
_EXTRACT_VERBS = (r"(?:reveal|repeat|print|show|output|tell|give|spell|leak|say|type|write|dump|share|disclose|"
                  r"recite|list|translate|encode|copy|paste|quote)")
_EXTRACT_OBJECTS = (r"(?:your (?:system |initial |original |hidden |secret |first )?"
                    r"(?:prompt|instructions|message|rules|guidelines|configuration)"
                    r"|the (?:system prompt|system message) (?:above|you)"
                    r"|the (?:initial|original|hidden|secret|first) (?:prompt|instructions)"
                    r"|(?:text|words|everything|lines|content|instructions) (?:above|before)"
                    rf"|(?:the|your|this) {_SECRETS}\b{_NOT_POLICY})")
# a protected object named with any possessive or definite determiner ("its secret access code", "the password")
_GUARDED = (r"(?:the|your|its|this|that|his|her|their|our|my|real|actual|exact|current)\s+(?:\w+\s+){0,2}?"
            r"(?:(?:access|secret|admin|master|vault|login|pass|security) ?codes?|passwords?|passcodes?|passphrase"
            r"|pin|system prompt|system message|hidden instructions|secret key|api key|credentials)\b")
_DISCLOSE = (r"\b(?:reveal|repeat|print|show|output|tell|give|spell|leak|say|type|write|dump|share|disclose|recite"
             r"|announce|read|display|divulge|expose|hand|send|whisper|shout|utter|quote|paste|complete|finish"
             r"|continue|fill)(?:s|ed|ing|d)?\b")
# what makes a question about secrets benign: how to make, reset, choose or protect one
_HOWTO = (r"\b(?:how|ways? to|tips?|strong|secure|safe|policy|policies|reset|forg[eo]t(?:ten)?|recover|change|create"
          r"|choose|generate|manager|requirements?|rules for|hash(?:ing|ed)?)\b")
_MODES = r"(?:developer|god|debug|sudo|admin|unrestricted|jailbreak)"
_LIMITS = (r"(?:rules|restrictions|filters|limits|guidelines|censorship|ethical (?:guidelines|constraints)|"
           r"content policy)")
_MARKUP = (r"<\|[a-z_]+\|>\s*(?:system|assistant|user|tool|developer)\b|\[/?INST\]|<</?SYS>>|<start_of_turn>|</?s>"
           r"|^\s*#{2,}\s*(?:system|instruction)\b|^\s*(?:system|assistant)\s*:")


class SentenceRule:
    """A rule that fires when, within one sentence, every ``require`` pattern matches and no ``unless`` pattern
    does (word order free: for the gloss of SOV languages and for intents spread over a sentence)."""

    flags = re.I
    _SPLIT = re.compile(r"[.!?;。．！？；\n]+")

    def __init__(self, require: Sequence[str], unless: Sequence[str] = (), view: str | None = None):
        self.require = [re.compile(p, re.I) for p in require]
        self.unless = [re.compile(p, re.I) for p in unless]
        self.view = view  # only this view (by its name's last part), or every view

    def search(self, text: str) -> bool:
        for s in self._SPLIT.split(text):
            if all(p.search(s) for p in self.require) and not any(p.search(s) for p in self.unless):
                return True
        return False


_G_IGNORE = r"\b(?:ignore|disregard|forget|bypass|override)\b"
_G_RULES = r"\b(?:instructions|rules|guidelines|system prompt)\b"
_G_OBJECT = r"\b(?:access code|password|system prompt)\b"

INPUT_RULES: list[tuple[str, re.Pattern | SentenceRule]] = [
    ("override", re.compile(rf"\b{_V}\b(?:\W+\w+){{0,3}}?\W+{_PRIOR}\b(?:\W+\w+){{0,2}}?\W+{_RULES_NOUN}\b", re.I)),
    ("override", re.compile(r"\b(?:new|updated|real|actual|revised) (?:system )?(?:instructions?|rules|policy|prompt)"
                            r"\s*(?::|are|is)", re.I)),
    ("override", re.compile(r"\bfrom now on,? (?:you (?:will|are|must|shall)|ignore|respond|answer)\b", re.I)),
    ("override", re.compile(r"\byou (?:are|were) no longer (?:bound|restricted|limited|required)\b", re.I)),
    # s p a c e d text loses its word gaps in the squashed view; only this rule reads that view
    ("override", re.compile(r"^squashed:.*(?:ignore|disregard|forget|bypass)(?:all|any|the|your)?(?:previous|prior|"
                            r"above|earlier|preceding)(?:instructions|rules|prompts?|directions|guidelines)")),
    ("roleplay", re.compile(r"\bDAN\b", 0)),  # "Do Anything Now" persona; case-sensitive so "Dan" passes
    ("roleplay", re.compile(r"\bdo anything now\b", re.I)),
    ("roleplay", re.compile(rf"\b(?:you|assistant|ai|model|chatbot)\b[^.\n]{{0,30}}\b{_MODES} mode\b"
                            r"|\b(?:developer|god|jailbreak) mode (?:enabled|activated)\b|\bjailbr(?:ea|o)ken\b",
                            re.I)),
    ("roleplay", re.compile(rf"\b(?:you are|you're|act as|pretend (?:to be|you are)|play|become|roleplay as)\b"
                            rf"(?:\W+\w+){{0,4}}?\W+{_ROLE_WORDS}\b", re.I)),
    ("roleplay", re.compile(rf"\b(?:you|ai|assistant|model|chatbot|bot)\b[^.\n]{{0,30}}"
                            rf"\b(?:no|without|free of|free from|zero) {_LIMITS}\b", re.I)),
    ("extraction", re.compile(rf"\b{_EXTRACT_VERBS}\b[^.?!\n]{{0,40}}?\b{_EXTRACT_OBJECTS}", re.I)),
    ("extraction", re.compile(rf"\bwhat(?:'s| is| was| are)\b[^.?!\n]{{0,20}}\b(?:the|your) {_SECRETS}\b{_NOT_POLICY}",
                              re.I)),
    ("extraction", re.compile(r"\b(?:above|previous|preceding) (?:text|prompt|message|conversation)\b.{0,30}\b"
                              r"(?:verbatim|word for word|exactly)\b", re.I)),
    # a disclosure verb and a guarded object in one sentence, unless the sentence asks how to make / reset one
    ("extraction", SentenceRule([_DISCLOSE, _GUARDED], [_HOWTO])),
    ("extraction", SentenceRule([r"\b(?:which|what)\b", r"\b(?:access|secret|pass) ?codes?\b|\bpasswords?\b"
                                 r"|\bsystem prompt\b"], [_HOWTO, r"\bis an?\b", r"\bwhat (?:is )?an?\b"])),
    # goal hijacking: make the assistant emit an attacker's marker word (HackAPrompt's "I have been PWNED")
    ("hijack", re.compile(r"\b(?:say|said|says|write|print|output|reply|replies|respond|answer|type|repeat|shouts?"
                          r"|begins?|starts?|ends?|with)\b[^.\n]{0,40}\b(?:pwned|pwn3d|hacked|h4cked|owned)\b", re.I)),
    # an instruction addressed to the AI inside a document or tool output (indirect injection)
    ("indirect", re.compile(r"\b(?:note|message|instructions?|p\.?s\.?) (?:to|for) (?:the |any |all )?"
                            r"(?:ai|assistant|bot|model|llm|chatbot)s?\b"
                            r"|\b(?:ai|assistant|bot|model|llm|chatbot)s? (?:reading|processing|summari[sz]ing|parsing"
                            r"|seeing) this\b", re.I)),
    ("markup", re.compile(_MARKUP, re.I | re.M)),
    ("encoding", re.compile(r"\b(?:decode|decipher|decrypt|translate|render|execute|run)\b[^.\n]{0,40}"
                            r"\b(?:and|then)\b[^.\n]{0,20}\b(?:follow|obey|execute|do|run|carry out|comply|act)\b",
                            re.I)),
    ("encoding", re.compile(r"\b(?:execute|run|obey|follow) (?:the|this) (?:base64|rot13|hex|encoded)\b", re.I)),
    # intents in the gloss of another language, in any word order
    ("override", SentenceRule([_G_IGNORE, _G_RULES], view="gloss")),
    ("extraction", SentenceRule([r"\b(?:reveal|what is|say|follow)\b", _G_OBJECT], [r"\bhow\b"], view="gloss")),
    ("roleplay", SentenceRule([r"\bunrestricted\b", r"\b(?:you|ai|pretend you are)\b"], view="gloss")),
]


def rule_hits(text: str, rules: Sequence[tuple[str, re.Pattern | SentenceRule]] = INPUT_RULES) -> list[str]:
    """Names of the rules that fire on any view of ``text`` (``name@view``; a view's first hit only), plus
    ``hidden@tags`` when the text carries an invisible tag-character message outside an emoji flag."""
    hits: list[str] = []
    if len(hidden_tag_text(text, skip_flags=True).strip()) >= 4:
        hits.append("hidden@tags")
    for view, v in text_views(text):
        if view.endswith("squashed"):
            v = "squashed:" + v  # only the rules written for squashed text (anchored on this tag) can match
        for name, pat in rules:
            if name == "markup" and view != "text":
                continue  # markup is literal; decoding views turn random text into false markup
            if name == "roleplay" and not (pat.flags & re.I) and view != "text":
                continue  # case-sensitive acronyms only on the raw text
            if isinstance(pat, SentenceRule) and pat.view is not None and view.rsplit(":", 1)[-1] != pat.view:
                continue
            if pat.search(v):
                hits.append(f"{name}@{view}")
                break
    return list(dict.fromkeys(hits))


def _features(text: str, dim: int) -> dict[int, float]:
    """Hashed bag of character 3–5-grams (of the normalised text, word-boundary padded) and word
    unigrams + bigrams of the normalised text and of its multilingual gloss (so a Japanese or Spanish
    paraphrase shares the English words' weights); crc32 hashing so the features are the same in every process."""
    t = " " + re.sub(r"\s+", " ", normalise(text)).strip() + " "
    counts: dict[int, float] = {}
    for n in (3, 4, 5):
        for i in range(len(t) - n + 1):
            h = zlib.crc32(t[i:i + n].encode()) % dim
            counts[h] = counts.get(h, 0.0) + 1.0
    g = gloss(text)
    for source in (t, g) if g is not None else (t,):
        words = re.findall(r"\w+", source)
        for k, w in enumerate(words):
            for gram in (w, " ".join(words[k:k + 2]) if k + 1 < len(words) else None):
                if gram:
                    h = zlib.crc32(b"w:" + gram.encode()) % dim
                    counts[h] = counts.get(h, 0.0) + 1.0
    # log-scaled term frequency, L2-normalised: long prompts do not get larger scores just for length
    vals = {h: 1.0 + np.log(c) for h, c in counts.items()}
    norm = float(np.sqrt(sum(v * v for v in vals.values()))) or 1.0
    return {h: v / norm for h, v in vals.items()}


class NgramScorer:
    """Logistic regression ``p(attack | x) = σ(w·φ(x) + b)`` on hashed n-gram features φ (see
    :func:`_features`), trained by full-batch gradient descent on the class-balanced mean log-loss + ``l2/2 ‖w‖²``."""

    def __init__(self, dim: int = 1 << 16):
        self.dim = dim
        self.w = np.zeros(dim)
        self.b = 0.0

    def _matrix(self, texts: Sequence[str]):
        cols, vals, rows = [], [], []
        for r, t in enumerate(texts):
            f = _features(t, self.dim)
            cols += f.keys()
            vals += f.values()
            rows += [r] * len(f)
        return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), np.array(vals)

    def fit(self, texts: Sequence[str], labels: Sequence[int], steps: int = 300, lr: float = 2.0,
            l2: float = 1e-4) -> NgramScorer:
        """Class-balanced: each class carries half of the loss, so the prior is 50/50 whatever the mix."""
        if len(texts) != len(labels) or not texts:
            raise DodaiError("the scorer needs as many labels as texts, and at least one")
        y = np.asarray(labels, dtype=float)
        if not ((y == 0) | (y == 1)).all() or y.min() == y.max():
            raise DodaiError("the scorer needs labels 0 and 1, both present")
        weight = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum())
        rows, cols, vals = self._matrix(texts)
        n = len(texts)
        for _ in range(steps):
            z = np.bincount(rows, weights=vals * self.w[cols], minlength=n) + self.b
            p = 1.0 / (1.0 + np.exp(-z))
            r = (p - y) * weight  # d(weighted mean log-loss)/dz
            self.w -= lr * (np.bincount(cols, weights=vals * r[rows], minlength=self.dim) + l2 * self.w)
            self.b -= lr * float(r.sum())
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        rows, cols, vals = self._matrix(texts)
        z = np.bincount(rows, weights=vals * self.w[cols], minlength=len(texts)) + self.b
        return 1.0 / (1.0 + np.exp(-z))


class InputGuard:
    """Blocks a prompt when a rule fires or the learned score reaches ``threshold``.

    ``check(text)`` looks at one text; ``check_messages(messages)`` at every user / tool message and at the
    user turns joined (an instruction split over several turns)."""

    def __init__(self, scorer: NgramScorer | None = None, threshold: float = 0.5, use_rules: bool = True):
        self.scorer = scorer
        self.threshold = threshold
        self.use_rules = use_rules

    @classmethod
    def trained(cls, threshold: float = 0.5, seed: int = 0) -> InputGuard:
        """A guard whose scorer is trained on :func:`dodai.safety.guard_data.guard_training_set`."""
        from dodai.safety.guard_data import guard_training_set

        data = guard_training_set(seed)
        scorer = NgramScorer().fit([t for t, _ in data], [y for _, y in data])
        return cls(scorer, threshold)

    def check(self, text: str) -> Verdict:
        if not isinstance(text, str):
            raise DodaiError("the input guard checks text")
        reasons = rule_hits(text) if self.use_rules else []
        score = 0.0
        if self.scorer is not None:
            # the scorer also reads decoded payloads: base64 noise says nothing, its plaintext does
            hidden = [h for h in [hidden_tag_text(text, skip_flags=True)] if h.strip()]
            score = float(max(self.scorer.score([text] + hidden + decode_runs(strip_invisible(text)))))
            if score >= self.threshold:
                reasons.append(f"scorer={score:.2f}")
        return Verdict(bool(reasons), score, reasons)

    def check_messages(self, messages: list[dict]) -> Verdict:
        texts = [m["content"] for m in messages if m.get("role") not in ("system", "assistant")]
        users = [m["content"] for m in messages if m.get("role") == "user"]
        if len(users) > 1:
            texts.append("\n".join(users))
        best = Verdict(False)
        for t in texts:
            v = self.check(t)
            best = Verdict(best.blocked or v.blocked, max(best.score, v.score),
                           best.reasons + [r for r in v.reasons if r not in best.reasons])
        return best


# ---- 3. output guard ----------------------------------------------------------------------------

def _alnum(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", fold_lookalikes(unicodedata.normalize("NFKC", strip_invisible(text))).lower())


class OutputGuard:
    """Blocks replies that leak ``secrets`` (in any of the forms :meth:`leaks` knows), copy ``min_copy``
    or more consecutive words of ``protected`` text (the system prompt), or contain a ``forbidden`` marker.

    ``fragment``: a run of at least this fraction of a secret's letters and digits (and ≥ 6 of them) also
    counts as a leak (a model that prints "ZEBRA-4417" has leaked most of "QX7-ZEBRA-4417")."""

    def __init__(self, secrets: Sequence[str] = (), forbidden: Sequence[str] = (), protected: str = "",
                 min_copy: int = 8, fragment: float = 0.6):
        self.secrets = [s for s in secrets if _alnum(s)]
        self.forbidden = [s for s in forbidden if _alnum(s)]
        self.protected_words = re.findall(r"\w+", protected.lower())
        self.min_copy = min_copy
        self.fragment = fragment

    def _views(self, reply: str) -> list[tuple[str, str]]:
        views = [("text", _alnum(reply)), ("reversed", _alnum(reply)[::-1]),
                 ("rot13", _alnum(codecs.decode(reply, "rot13")))]
        views += [(f"decoded{k}", _alnum(s)) for k, s in enumerate(decode_runs(reply))]
        return views

    def leaks(self, reply: str) -> list[str]:
        reasons = []
        views = self._views(reply)
        for kind, targets in (("secret", self.secrets), ("forbidden", self.forbidden)):
            for s in targets:
                a = _alnum(s)
                hit = next((name for name, v in views if a in v), None)
                if hit is None and kind == "secret":
                    n = max(6, int(np.ceil(self.fragment * len(a))))
                    frags = {a[i:i + n] for i in range(len(a) - n + 1)} if len(a) > n else set()
                    hit = next((f"{name}-fragment" for name, v in views if any(f in v for f in frags)), None)
                if hit is not None:
                    reasons.append(f"{kind}@{hit}")
        if self.protected_words and len(self.protected_words) >= self.min_copy:
            k = self.min_copy
            grams = {tuple(self.protected_words[i:i + k]) for i in range(len(self.protected_words) - k + 1)}
            words = re.findall(r"\w+", reply.lower())
            if any(tuple(words[i:i + k]) in grams for i in range(len(words) - k + 1)):
                reasons.append(f"copies {k}+ words of the system prompt")
        return reasons

    def check(self, reply: str) -> Verdict:
        if not isinstance(reply, str):
            raise DodaiError("the output guard checks text")
        reasons = self.leaks(reply)
        return Verdict(bool(reasons), 1.0 if reasons else 0.0, reasons)
