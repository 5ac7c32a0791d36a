"""Caption and VQA scores: CIDEr-D (as pycocoevalcap computes it) and VQA accuracy (as the VQA eval does).

CIDEr-D is a pure-Python port of pycocoevalcap 1.2's ``CiderScorer`` (n-grams 1..4, sigma 6,
clipped tf-idf, document frequencies from the references of the evaluated set, x10), checked
against that package on the same tokens in ``tests/adapters/lab/test_captioning_metrics.py``. Its
quirks are kept so scores are comparable with published ones: the length penalty counts
*bigrams*, and an image's score is the mean over n of the summed similarities divided by the
number of references. pycocoevalcap tokenises with Stanford's PTB tokenizer (Java); ``tokenize``
is a Python approximation of it (lowercase, clitics split, punctuation tokens dropped).

VQA accuracy follows the official VQA evaluation (``vqaEval.py``): answers are normalised
(punctuation, number words, articles, contractions) and a prediction scores
``min(#matching human answers / 3, 1)``, averaged over the leave-one-out subsets of the human
answers (for 10 answers: 10 subsets of 9). Here the normalisation applies to the prediction and
the human answers alike, always (the official script skips it when all answers agree).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

NGRAMS = 4
CIDER_SIGMA = 6.0

# tokens pycocoevalcap's PTBTokenizer removes after tokenising
_PTB_DROP = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", "(", ")", "[", "]", "{", "}"}
_TOKEN = re.compile(r"n't|'\w+|\w+(?:[-.,/]\w+)*|\.\.\.|--|\S")


def tokenize(text: str) -> list[str]:
    """PTB-style tokens, lowercased, punctuation dropped: ``"A dog's toy."`` -> ``["a", "dog", "'s", "toy"]``."""
    text = text.lower().replace("\n", " ").replace("\t", " ")
    text = re.sub(r"(\w)n't\b", r"\1 n't", text)
    text = re.sub(r"(\w)'(s|re|ve|ll|d|m)\b", r"\1 '\2", text)
    return [t for t in _TOKEN.findall(text) if t not in _PTB_DROP]


def _ngrams(tokens: Sequence[str], n: int = NGRAMS) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


class CiderD:
    """CIDEr-D of candidates against the references of a fixed set of images.

    ``references[i]``: the reference captions of image ``i`` (raw text, tokenised here, or token
    lists). Document frequencies come from all references, as in pycocoevalcap, so one scorer
    scores any candidate for image ``i`` (``score``) and a corpus score is the mean over images.
    """

    def __init__(self, references: Sequence[Sequence[str | Sequence[str]]], sigma: float = CIDER_SIGMA) -> None:
        if not references or any(len(r) == 0 for r in references):
            raise ValueError("CIDEr needs at least one image and one reference per image")
        self.sigma = sigma
        self.refs = [[_ngrams(_tokens(r)) for r in refs] for refs in references]
        self.df: Counter[tuple[str, ...]] = Counter()
        for refs in self.refs:
            self.df.update(set(g for ref in refs for g in ref))
        self.log_n = math.log(float(len(self.refs)))
        self._ref_vecs = [[self._vec(ref) for ref in refs] for refs in self.refs]

    def _vec(self, counts: Counter[tuple[str, ...]]) -> tuple[list[dict], list[float], int]:
        """tf-idf vectors per n, their norms, and the length (pycocoevalcap counts bigrams)."""
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(NGRAMS)]
        norm = [0.0] * NGRAMS
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            w = float(tf) * (self.log_n - math.log(max(1.0, float(self.df[gram]))))
            vec[n][gram] = w
            norm[n] += w * w
            if n == 1:
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    def score(self, i: int, candidate: str | Sequence[str]) -> float:
        """CIDEr-D of ``candidate`` for image ``i`` (pycocoevalcap's per-image score, x10)."""
        vec, norm, length = self._vec(_ngrams(_tokens(candidate)))
        total = np.zeros(NGRAMS)
        for vec_r, norm_r, length_r in self._ref_vecs[i]:
            penalty = math.exp(-((length - length_r) ** 2) / (2 * self.sigma ** 2))
            for n in range(NGRAMS):
                val = sum(min(w, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, w in vec[n].items())
                if norm[n] != 0 and norm_r[n] != 0:
                    val /= norm[n] * norm_r[n]
                total[n] += val * penalty
        return float(np.mean(total) / len(self._ref_vecs[i]) * 10.0)

    def corpus(self, candidates: Sequence[str | Sequence[str]]) -> float:
        """Mean CIDEr-D over images; ``candidates[i]`` for image ``i``."""
        if len(candidates) != len(self.refs):
            raise ValueError(f"{len(candidates)} candidates for {len(self.refs)} images")
        return float(np.mean([self.score(i, c) for i, c in enumerate(candidates)]))


def _tokens(text: str | Sequence[str]) -> list[str]:
    return tokenize(text) if isinstance(text, str) else list(text)


# --- VQA ---------------------------------------------------------------------------------------

_CONTRACTIONS = dict(pair.split(":") for pair in (
    "aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've "
    "couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've "
    "hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's "
    "howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd "
    "itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't "
    "mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've "
    "neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at "
    "'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've "
    "shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd "
    "somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's "
    "someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll "
    "someones:someone's somethingd:something'd somethingd've:something'd've something'dve:something'd've "
    "somethingll:something'll thats:that's thered:there'd thered've:there'd've there'dve:there'd've "
    "therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll "
    "theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've "
    "werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd "
    "wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's "
    "whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't "
    "wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll "
    "yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've "
    "you'dve:you'd've youll:you'll youre:you're youve:you've"
).split())
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official pattern
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_answer(text: str) -> str:
    """The VQA evaluation's answer normalisation: ``"Two dogs."`` -> ``"2 dogs"``."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """``mean over leave-one-out subsets of min(#matches / 3, 1)`` after normalising both sides."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    matches = sum(g == pred for g in gts)
    # leaving out a matching answer leaves matches - 1; leaving out another leaves matches
    return sum(min(1.0, (matches - (g == pred)) / 3.0) for g in gts) / len(gts)
