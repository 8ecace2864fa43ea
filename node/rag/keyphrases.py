"""Entity/keyphrase extraction without a model: a stopword-split candidate-phrase heuristic (RAKE-like).

A sentence is split into candidate phrases at stopwords and punctuation. Each phrase of 1 to
:data:`MAX_PHRASE_WORDS` words yields its full form and its word bigrams; single words are kept when they carry
signal: an acronym (``TNF``, ``HIV``), a token with digits (``p53``, ``IL-6``, ``CD4``), a hyphenated term
(``T-cell``), a capitalised word not at the start of the sentence, or a content word of at least
:data:`MIN_WORD_CHARS` letters. Keys are normalised: lowercase, hyphens kept, a light English stemmer on the last
word of each phrase (plural and -ing/-ed endings) — so ``T-cells`` and ``T-cell`` are one entity.

Output per text: the distinct entity keys with counts, and per sentence the keys found there (for co-occurrence
relations). Everything is pure Python, deterministic, and linear in the text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

MAX_PHRASE_WORDS = 4  # longer stopword-free runs are split into their bigrams only
MIN_WORD_CHARS = 4  # a plain lowercase word shorter than this is not an entity on its own
MAX_KEY_CHARS = 80

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n{2,}")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-+/']*[A-Za-z0-9+]|[A-Za-z0-9]|[,:()\[\]\"“”]")

_STOPWORDS_TEXT = """a about above across after afterwards again against all almost alone along already also
    although always am
    among an and another any anyhow anyone anything anyway anywhere are around as at be became because become
    becomes been before beforehand being below beside besides between beyond both but by can cannot could did do
    does doing done down due during each either else elsewhere enough etc even ever every everyone everything
    everywhere except few for former formerly from further had has have having he hence her here hereafter hereby
    herein hers herself him himself his how however i ie if in indeed into is it its itself just last latter least
    less made many may me meanwhile might more moreover most mostly much must my myself namely neither never
    nevertheless next no nobody none nor not nothing now nowhere of off often on once one only onto or other others
    otherwise our ours ourselves out over own per perhaps please rather same several she should since so some
    somehow someone something sometime sometimes somewhere still such than that the their theirs them themselves
    then thence there thereafter thereby therefore therein thereupon these they this those though through
    throughout thus to together too toward towards under until up upon us very via was we well were what whatever
    when whence whenever where whereas whereby wherein whether which while whither who whoever whole whom whose why
    will with within without would yet you your yours yourself yourselves using used use based show shows shown
    showed found find finds suggest suggests suggested associated compared including include includes increase
    increased increases decrease decreased decreases reduced reduce reduces effect effects result results study
    studies data analysis method methods however significant significantly high higher low lower level levels
    among within potential role new may also two three first second non related patients"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


@dataclass(frozen=True, slots=True)
class Extraction:
    counts: dict[str, int]  # entity key -> occurrences in the text
    sentences: list[list[str]]  # per sentence, the distinct keys found there (in order of first appearance)


def _stem(word: str) -> str:
    """A light, deterministic English suffix stripper for the last word of a phrase (the last part of a
    hyphenated word)."""
    if "-" in word:
        head, _, tail = word.rpartition("-")
        return f"{head}-{_stem(tail)}" if tail else word
    if len(word) <= 4 or not word.isalpha():
        return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            return word[: len(word) - len(suffix)] + repl
    return word


def normalise(words: list[str]) -> str:
    low = [w.lower() for w in words]
    low[-1] = _stem(low[-1])
    return " ".join(low)[:MAX_KEY_CHARS]


def _signal_word(word: str, first_in_sentence: bool) -> bool:
    if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
        return True
    if "-" in word and len(word) >= 3:
        return True
    letters = [c for c in word if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        return True  # acronym
    if word[:1].isupper() and not first_in_sentence and len(word) >= 3:
        return True
    return len(word) >= MIN_WORD_CHARS and word.isalpha()


def _phrases(sentence: str) -> list[list[tuple[str, bool]]]:
    """Stopword/punctuation-free runs of words, each word with whether it opened the sentence."""
    runs: list[list[tuple[str, bool]]] = []
    run: list[tuple[str, bool]] = []
    for i, m in enumerate(_TOKEN.finditer(sentence)):
        tok = m.group(0)
        is_word = tok[0].isalnum()
        if not is_word or tok.lower() in _STOPWORDS or tok.isdigit():
            if run:
                runs.append(run)
            run = []
            continue
        run.append((tok, i == 0))
    if run:
        runs.append(run)
    return runs


def extract(text: str, *, max_entities: int = 64) -> Extraction:
    """Entity keys of ``text``: at most ``max_entities`` distinct keys (multi-word and marked terms first)."""
    counts: Counter[str] = Counter()
    weight: dict[str, float] = {}
    sentences: list[list[str]] = []
    for sentence in _SENTENCE.split(text):
        found: dict[str, None] = {}
        for run in _phrases(sentence):
            words = [w for w, _ in run]
            keys: dict[str, float] = {}
            if len(words) >= 2:
                for i in range(len(words) - 1):
                    keys[normalise(words[i : i + 2])] = 1.5
            if 3 <= len(words) <= MAX_PHRASE_WORDS:
                keys[normalise(words)] = 1.0 + 0.5 * len(words)
            for w, first in run:
                if _signal_word(w, first):
                    marked = not w.isalpha() or not w.islower()
                    keys.setdefault(normalise([w]), 1.25 if marked else 1.0)
            for key, wt in keys.items():
                if len(key) < 2:
                    continue
                counts[key] += 1
                weight[key] = max(weight.get(key, 0.0), wt)
                found[key] = None
        if found:
            sentences.append(list(found))
    if len(counts) > max_entities:
        keep = sorted(counts, key=lambda k: (-counts[k] * weight[k], k))[:max_entities]
        kept = set(keep)
        counts = Counter({k: counts[k] for k in keep})
        sentences = [[k for k in s if k in kept] for s in sentences]
    return Extraction(dict(counts), [s for s in sentences if s])


__all__ = ["Extraction", "extract", "normalise"]
