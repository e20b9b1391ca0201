"""Tokenizer: closed vocabulary, special ids, no automatic BOS/EOS, offline round trip."""

from dataclasses import replace

import pytest
from transformers import AutoTokenizer

from vocolab.core.layout import SpecialIds
from vocolab.data.storage import iter_rows
from vocolab.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, encode_qa, special_ids
from vocolab.data.vocab import number_word, words


@pytest.fixture
def tok(nano):
    return build_tokenizer(nano)


def test_special_tokens(tok):
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4, 5]
    assert special_ids(tok) == SpecialIds(bos=1, eos=3, pad=0, image=4, voco=5)
    assert tok.pad_token_id == 0 and tok.unk_token_id == 2
    assert tok.eos_token_id != 2  # CLIP's text tower would pool at the largest id instead
    assert tok.extra_special_tokens == ["<image>", "<voco>"]
    assert len(tok) == len(SPECIAL_TOKENS) + len(words_of(tok))


def words_of(tok):
    return [t for t in tok.get_vocab() if t not in SPECIAL_TOKENS]


def test_vocab_is_deterministic_and_sorted(nano):
    w = words(nano)
    assert w == sorted(set(w)) and w == words(replace(nano))
    assert build_tokenizer(nano).get_vocab() == build_tokenizer(nano).get_vocab()
    bigger = words(replace(nano, shapes=nano.shapes + ("star",), max_objects=12))
    assert {"star", "stars", "twelve"} <= set(bigger)
    with pytest.raises(ValueError):
        words(replace(nano, colors=("red", "mauve")))
    with pytest.raises(ValueError):
        number_word(21)


def test_generated_text_has_no_unknown_words(nano, tok):
    for kind in ("scenes", "clips"):
        for row in iter_rows(nano, kind, "train", n=200, render=False):
            for text in [row["caption"], *row["question"], *row["answer"]]:
                ids = tok(text, add_special_tokens=False)["input_ids"]
                assert tok.unk_token_id not in ids, text
                assert len(ids) == len(text.split())  # one token per word
                assert tok.decode(ids) == text


def test_no_automatic_bos_eos_and_unknowns(tok):
    ids = tok("what color is the circle ?")["input_ids"]
    assert ids[0] != tok.bos_token_id and ids[-1] != tok.eos_token_id and len(ids) == 6
    messy = tok("What COLOR is the circle?,  zebra", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(messy) == ["what", "color", "is", "the", "circle", "?", ",", "<unk>"]
    assert tok("<image><voco> red", add_special_tokens=False)["input_ids"][:2] == [4, 5]
    assert tok("")["input_ids"] == []


def test_encode_qa(tok):
    q, a = encode_qa(tok, "how many red objects are there ?", "two")
    assert tok.convert_ids_to_tokens(q) == "how many red objects are there ?".split()
    assert a == [tok.convert_tokens_to_ids("two")]


def test_save_and_reload_offline(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "where is the red circle relative to the blue square ? <voco> zebra"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.get_vocab() == tok.get_vocab()
    assert special_ids(again) == special_ids(tok)
    assert again.padding_side == "right"
