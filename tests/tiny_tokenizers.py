"""Tiny tokenizers of the T5 and Llama families, built locally (no downloads).

They keep what matters for round trips: T5's Unigram model with a whitespace-splitting
Metaspace pre-tokenizer and a vocabulary without `<`; Llama's BPE with byte fallback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import tokenizers
import transformers
from tokenizers import models, pre_tokenizers, trainers


def t5_style(path: str | os.PathLike, texts: Sequence[str], *, vocab_size: int = 600) -> str:
    """A T5Tokenizer whose Unigram vocabulary, like T5's, cannot represent `<`."""
    model = tokenizers.Tokenizer(models.Unigram())
    model.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
    )
    texts = [t.replace("<", "") for t in texts]
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=sorted({c for t in texts for c in t if not c.isspace()}),
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer)
    vocab = [tuple(v) for v in json.loads(model.to_str())["model"]["vocab"]]
    hf = transformers.T5Tokenizer(vocab=vocab, extra_ids=8)
    hf.save_pretrained(path)
    return os.fspath(path)


def llama_style(
    path: str | os.PathLike, texts: Sequence[str], *, vocab_size: int = 600, unseen: str = "<%"
) -> str:
    """A LlamaTokenizer (BPE, byte fallback); characters in `unseen` go through bytes."""
    model = tokenizers.Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    table = str.maketrans("", "", unseen)
    model.train_from_iterator((t.translate(table) for t in texts), trainer)
    trained = json.loads(model.to_str())["model"]
    vocab = dict(trained["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    hf = transformers.LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    hf.save_pretrained(path)
    return os.fspath(path)
