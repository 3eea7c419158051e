"""Tokenizers: Hugging Face tokenizer directories, loaded offline, and a trained BPE.

Every tokenizer kid uses is an HF tokenizer directory loaded by `load_tokenizer`: a
model's own (T5, Llama, Qwen2, read with local_files_only) or the byte-level BPE that
`train_bpe` fits for the embedded benchmark. Gold SQL must survive encode -> decode.
T5's sentencepiece vocabulary has no `<`, so `add_missing_tokens` finds characters a
vocabulary cannot represent and adds tokens for them; tokens kid adds get the ids
after the loaded vocabulary, so a model's embedding needs `len(tokenizer)` rows:
`num_added` more than the tokenizer had (T5 checkpoints already carry 28 spare rows:
32128 embeddings for 32100 pieces). `save_tokenizer` writes the result (and
kid_tokenizer.json with the base size and mask token) next to a checkpoint, so
training and evaluation see the same ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence

import tokenizers
import transformers
from absl import logging
from tokenizers import decoders, models, pre_tokenizers, trainers

KID_FILE = "kid_tokenizer.json"  # base vocabulary size and mask token, beside the HF files


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded or lacks a token kid needs."""


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """An HF tokenizer with the ids kid needs.

    `hf` is shared, not copied: `add_tokens` grows it in place.
    """

    hf: transformers.PreTrainedTokenizerBase
    base_size: int  # len(hf) before kid added tokens
    mask_token: str | None  # KID's mask token (None: not configured)

    def __len__(self) -> int:
        return len(self.hf)

    @property
    def num_added(self) -> int:
        """Tokens kid added; their ids are base_size .. len(self) - 1."""
        return len(self) - self.base_size

    @property
    def eos_id(self) -> int:
        if self.hf.eos_token_id is None:
            raise TokenizerError(f"{self.hf.name_or_path}: tokenizer has no EOS token")
        return self.hf.eos_token_id

    @property
    def pad_id(self) -> int:
        """The pad token, else EOS (Llama has no pad token; padding is masked anyway)."""
        return self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id

    @property
    def mask_id(self) -> int:
        if self.mask_token is None:
            raise TokenizerError(f"{self.hf.name_or_path}: no mask token configured")
        return self.hf.convert_tokens_to_ids(self.mask_token)

    def encode(self, texts: Sequence[str], *, add_special_tokens: bool) -> list[list[int]]:
        """Token ids of each text; special tokens are the model's own (Llama's BOS, T5's
        EOS). kid's BPE (`train_bpe`) adds none: encoder inputs get their EOS from the
        pipeline (`kid.data.encoding.encode_split`)."""
        if not texts:
            return []
        out = self.hf(
            list(texts),
            add_special_tokens=add_special_tokens,
            return_attention_mask=False,
            verbose=False,
        )
        return out["input_ids"]

    def count_tokens(self, text: str) -> int:
        """Length of a prompt with the tokenizer's special tokens (the pipeline's encoder
        inputs also end with an EOS that kid's BPE does not add: see `encode_split`)."""
        return len(self.encode([text], add_special_tokens=True)[0])

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first EOS; special tokens dropped, spaces as encoded."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add_tokens(self, tokens: Sequence[str], *, special: bool = False) -> int:
        """Adds the tokens not yet in the vocabulary (new ids at the end); returns how many."""
        vocab = self.hf.get_vocab()
        new = [t for t in dict.fromkeys(tokens) if t not in vocab]
        if new:
            added = [tokenizers.AddedToken(t, special=special, normalized=False) for t in new]
            if special:
                self.hf.add_special_tokens(
                    {"extra_special_tokens": added}, replace_extra_special_tokens=False
                )
            else:
                self.hf.add_tokens(added)
        return len(new)


def with_mask_token(tok: Tokenizer, mask_token: str | None) -> Tokenizer:
    """`tok` with KID's mask token: an existing token, else added as a special token at the
    end of the vocabulary. None: `tok` as it is (keeping any mask token it has)."""
    if mask_token is None:
        return tok
    tok = dataclasses.replace(tok, mask_token=mask_token)
    tok.add_tokens([mask_token], special=True)
    return tok


def load_tokenizer(path: str | os.PathLike[str], *, mask_token: str | None = None) -> Tokenizer:
    """Loads an HF tokenizer directory offline.

    Args:
      path: a directory with tokenizer.json (and tokenizer_config.json).
      mask_token: KID's mask token: an existing reserved token (T5 `<extra_id_0>`, a
        Qwen reserved token) or a new one, added as a special token. Default: the one
        saved in kid_tokenizer.json, if any.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise TokenizerError(f"{path}: tokenizer directory not found")
    try:
        hf = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{path}: cannot load tokenizer: {e}") from e
    meta = {}
    if os.path.exists(os.path.join(path, KID_FILE)):
        with open(os.path.join(path, KID_FILE), encoding="utf-8") as f:
            meta = json.load(f)
    tok = Tokenizer(hf, meta.get("base_size", len(hf)), meta.get("mask_token"))
    return with_mask_token(tok, mask_token)


def write_tokenizer_files(tok: Tokenizer, directory: str | os.PathLike[str]) -> None:
    """The HF tokenizer files and kid_tokenizer.json, into an existing directory (a model
    export keeps them beside its weights)."""
    tok.hf.save_pretrained(directory)
    with open(os.path.join(directory, KID_FILE), "w", encoding="utf-8") as f:
        json.dump({"base_size": tok.base_size, "mask_token": tok.mask_token}, f, indent=1)


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike[str]) -> None:
    """Writes an HF tokenizer directory plus kid_tokenizer.json, atomically."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tokenizer-", dir=parent)
    write_tokenizer_files(tok, tmp)
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=".tokenizer-old-", dir=parent)
        os.replace(path, os.path.join(old, "t"))
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def check_same_base_vocabulary(student: Tokenizer, teacher: Tokenizer) -> None:
    """Refuses a student / teacher pair whose base vocabularies map ids to different pieces.

    KD compares the two distributions id by id, so such a pair would give wrong numbers
    silently. Tokens past the shorter base vocabulary (added or reserved tokens, KID's mask
    token, kid's missing-character tokens) are not compared: they are no reason to refuse a
    pair, and the mask token is never a KD target.
    """
    shared = min(student.base_size, teacher.base_size)
    pieces = [
        {i: piece for piece, i in tok.hf.get_vocab().items() if i < shared}
        for tok in (student, teacher)
    ]
    for i in range(shared):
        if pieces[0].get(i) != pieces[1].get(i):
            raise TokenizerError(
                f"student tokenizer {student.hf.name_or_path} and teacher tokenizer "
                f"{teacher.hf.name_or_path} differ at id {i} ({pieces[0].get(i)!r} vs "
                f"{pieces[1].get(i)!r}): KD needs one base vocabulary"
            )


def roundtrip_failures(tok: Tokenizer, texts: Sequence[str]) -> list[tuple[str, str]]:
    """(text, decoded) for every text that decode(encode(text)) does not reproduce."""
    ids = tok.encode(texts, add_special_tokens=False)
    out = []
    for text, seq in zip(texts, ids, strict=True):
        back = tok.hf.decode(seq, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if back != text:
            out.append((text, back))
    return out


def missing_characters(tok: Tokenizer, texts: Iterable[str]) -> list[str]:
    """Non-space characters of `texts` the vocabulary cannot encode and decode back."""
    chars = sorted({c for text in texts for c in text if not c.isspace()})
    return [c for c, _ in roundtrip_failures(tok, chars)]


def tokens_for_missing(tok: Tokenizer, texts: Iterable[str]) -> list[str]:
    """Tokens to add so that texts with unrepresentable characters round-trip.

    Each maximal run of punctuation around a missing character (`<`, `<=`, `{{`)
    becomes one token, with the space before it when the text has one (` <=`): a
    sentencepiece decoder (T5's Metaspace) puts spaces only before its own pieces, so
    a bare `<` after a word would decode as `x< 3`. This is PICARD's ` <`, ` <=`.
    """
    texts = list(texts)
    missing = missing_characters(tok, texts)
    if not missing:
        return []
    chars = "".join(re.escape(c) for c in missing)
    run = re.compile(rf"( ?)([^\w\s]*[{chars}][^\w\s]*)")
    found = {}
    for text in texts:
        for m in run.finditer(text):
            found.setdefault(m.group(1) + m.group(2), None)
    return sorted(found)


def add_missing_tokens(tok: Tokenizer, texts: Iterable[str]) -> int:
    """Adds `tokens_for_missing(texts)`; returns how many (see `Tokenizer.num_added`)."""
    return tok.add_tokens(tokens_for_missing(tok, texts))


BPE_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<mask>")


def train_bpe(
    texts: Iterable[str],
    path: str | os.PathLike[str],
    *,
    vocab_size: int = 4096,
    min_frequency: int = 2,
    split_digits: bool = True,
) -> Tokenizer:
    """Trains a byte-level BPE (lossless on any text) and saves it as an HF directory.

    With `split_digits` every digit is its own token (as Llama's tokenizer does), so a
    number in the question is copied digit by digit into the SQL instead of through one
    rare token per number; text-to-SQL literals are mostly numbers.

    Special tokens: <pad> (0), </s> (EOS, 1), <unk> (2), <mask> (3, KID's mask). The
    tokenizer adds none of them when encoding, whatever `add_special_tokens` says; the
    pipeline appends EOS to targets and to encoder inputs.

    `vocab_size` is an upper bound: a corpus with too few pairs seen `min_frequency` times
    runs out of merges first, and the tokenizer is then smaller (4 special tokens + 256
    bytes + the merges found). That tokenizer is used as it is, with a warning naming both
    sizes; size models by ``len(tokenizer)``, not by `vocab_size`.
    """
    model = tokenizers.Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer)
    pad, eos, unk, mask = BPE_SPECIAL_TOKENS
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=model,
        pad_token=pad,
        eos_token=eos,
        unk_token=unk,
        mask_token=mask,
        clean_up_tokenization_spaces=False,
    )
    if len(hf) < vocab_size:
        logging.warning(
            "BPE: vocab_size %d requested but the corpus gives %d tokens (no more pairs seen "
            "at least min_frequency=%d times); using %d",
            vocab_size,
            len(hf),
            min_frequency,
            len(hf),
        )
    tok = Tokenizer(hf, len(hf), mask)
    save_tokenizer(tok, path)
    return load_tokenizer(path)
