"""A word-level tokenizer over the closed vocabulary.

The procedural world has a few dozen words, so one token per word keeps
sequences short, makes every id readable, and needs no training or download.
It is a real `tokenizers` object wrapped as a `PreTrainedTokenizerFast`, so it
saves with `save_pretrained` and reloads with `AutoTokenizer.from_pretrained`.
It never adds BOS/EOS by itself: `vocolab.layout.assemble` places them.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from vocolab.core.config import Config, DataConfig
from vocolab.core.layout import SpecialIds
from vocolab.data.vocab import words

PAD, BOS, EOS, UNK, IMAGE, VOCO = "<pad>", "<bos>", "<eos>", "<unk>", "<image>", "<voco>"
# ids 0..5, pad = 0. EOS must not be id 2: transformers' CLIP text tower treats
# eos_token_id == 2 as an old OpenAI checkpoint and pools at the largest id instead.
SPECIAL_TOKENS = (PAD, BOS, UNK, EOS, IMAGE, VOCO)


def build_tokenizer(cfg: DataConfig | Config) -> PreTrainedTokenizerFast:
    """Specials first (pad = 0), then `vocab.words(cfg)`; lowercases, splits on
    spaces and punctuation ("circle?" -> "circle", "?"); unknown words -> <unk>."""
    cfg = cfg.data if isinstance(cfg, Config) else cfg
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(words(cfg)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=[IMAGE, VOCO],  # transformers 5 name of additional_special_tokens
        padding_side="right", model_max_length=1 << 20)


def special_ids(tok: PreTrainedTokenizerBase) -> SpecialIds:
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in
           (("bos", BOS), ("eos", EOS), ("pad", PAD), ("image", IMAGE), ("voco", VOCO))}
    unk = tok.convert_tokens_to_ids(UNK)
    missing = [name for name, i in ids.items() if i is None or i == unk]
    if missing:
        raise ValueError(f"special_ids: tokenizer lacks special tokens {missing}")
    return SpecialIds(**ids)


def encode_qa(tok: PreTrainedTokenizerBase, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Question and answer ids, without BOS/EOS."""
    q = tok(question, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    return q, a
