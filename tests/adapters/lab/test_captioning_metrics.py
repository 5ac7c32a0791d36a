import math

import pytest

from adapters.lab.captioning_metrics import CiderD, normalize_answer, tokenize, vqa_accuracy

pytestmark = pytest.mark.unit

# Four COCO-like images; the expected scores were computed with pycocoevalcap 1.2's Cider
# (pycocoevalcap.cider.cider.Cider().compute_score) on the same whitespace tokens.
REFS = [
    ["a man riding a wave on top of a surfboard", "a surfer riding a large wave in the ocean",
     "a person on a surfboard riding a wave"],
    ["two dogs playing with a frisbee in the grass", "a couple of dogs running on a field",
     "dogs play with a red frisbee"],
    ["a plate of food with broccoli and rice", "a white plate topped with rice and vegetables"],
    ["a red double decker bus on a city street", "a bus driving down the street next to buildings",
     "a red bus parked by the road", "double decker bus in london"],
]
CANDIDATES = ["a man riding a wave on a surfboard", "two dogs running in the grass", "a plate of rice",
              "a red bus on the street"]
PYCOCOEVALCAP = [4.010307953370484, 1.6848671389481473, 1.9078397832284968, 1.618558750818656]
PYCOCOEVALCAP_CORPUS = 2.305393406591446


def test_cider_matches_pycocoevalcap():
    scorer = CiderD(REFS)
    got = [scorer.score(i, c) for i, c in enumerate(CANDIDATES)]
    assert got == pytest.approx(PYCOCOEVALCAP, abs=1e-12)
    assert scorer.corpus(CANDIDATES) == pytest.approx(PYCOCOEVALCAP_CORPUS, abs=1e-12)
    assert len(set(round(g, 6) for g in got)) == 4


def test_cider_hand_computed():
    # two images, one reference each: every n-gram has df = 1 and idf weight log(2)
    scorer = CiderD([["x y z"], ["p q"]])
    # "x y" vs "x y z": unigram cosine 2/sqrt(6), bigram 1/sqrt(2), no 3/4-grams; 1 vs 2 bigrams
    expected = 10 * math.exp(-1 / 72) * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
    assert scorer.score(0, "x y") == pytest.approx(expected, rel=1e-12)
    assert scorer.score(0, "x y z") == pytest.approx(7.5)  # 1, 1, 1 and no 4-gram: mean 0.75, x10
    assert scorer.score(1, "x y") == 0.0
    assert scorer.corpus(["x y z", "p q"]) == pytest.approx((7.5 + 5.0) / 2)  # "p q": 1, 1, 0, 0


def test_cider_tokenizes_like_ptb():
    assert tokenize("A dog's toy (red), isn't it? 3.5 well-known...") == [
        "a", "dog", "'s", "toy", "red", "is", "n't", "it", "3.5", "well-known"]
    scorer = CiderD([["A man, riding a wave!"], ["p q"]])
    assert scorer.score(0, "a man riding a wave") == scorer.score(0, "A MAN riding a wave.")
    with pytest.raises(ValueError):
        CiderD([["a"], []])


def test_vqa_normalisation():
    assert normalize_answer("Two dogs.") == "2 dogs"
    assert normalize_answer("the Yes!") == "yes"
    assert normalize_answer("dont know") == "don't know"
    assert normalize_answer("1,000") == "1000"


def test_vqa_accuracy_hand_computed():
    # 3 of 10 match: leaving one of them out leaves 2 (2/3), leaving another out leaves 3 (1)
    assert vqa_accuracy("two", ["2"] * 3 + ["3"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("2", ["2"] * 2 + ["3"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert vqa_accuracy("2", ["2"] * 4 + ["3"] * 6) == 1.0
    assert vqa_accuracy("A cat", ["dog"] * 10) == 0.0
    assert vqa_accuracy("yes", ["Yes"]) == 1.0 and vqa_accuracy("no", ["yes"]) == 0.0
