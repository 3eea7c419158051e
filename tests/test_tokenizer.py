import json
import logging

import pytest
import tiny_tokenizers

from kid.data import prompts
from kid.data import tokenizer as tokenizer_lib


@pytest.fixture(scope="module")
def gold_sql(spider_dir):
    """Every gold SQL of Spider dev and train (train_gold.sql adds train_others), normalised."""
    queries = [
        e["query"]
        for f in ("dev.json", "train_spider.json")
        for e in json.loads((spider_dir / f).read_text())
    ]
    queries += [
        line.rsplit("\t", 1)[0]
        for line in (spider_dir / "train_gold.sql").read_text().splitlines()
        if line.strip()
    ]
    return sorted({prompts.normalize_sql(q) for q in queries})


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, gold_sql):
    return tiny_tokenizers.t5_style(tmp_path_factory.mktemp("t5"), gold_sql)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, gold_sql):
    return tiny_tokenizers.llama_style(tmp_path_factory.mktemp("llama"), gold_sql[::4])


def test_gold_corpus_is_all_of_spider(gold_sql):
    assert len(gold_sql) > 4000 and sum("<" in q for q in gold_sql) > 100


def test_bpe_round_trips_all_gold_sql(tmp_path, gold_sql):
    tok = tokenizer_lib.train_bpe(gold_sql[::8], tmp_path / "bpe", vocab_size=800)
    assert tokenizer_lib.missing_characters(tok, gold_sql) == []
    assert tokenizer_lib.roundtrip_failures(tok, gold_sql) == []
    assert (tok.pad_id, tok.eos_id, tok.mask_id, tok.num_added, len(tok)) == (0, 1, 3, 0, 800)
    again = tokenizer_lib.load_tokenizer(tmp_path / "bpe")
    sample = gold_sql[:50]
    assert again.encode(sample, add_special_tokens=True) == tok.encode(
        sample, add_special_tokens=True
    )
    assert again.mask_token == "<mask>"


def test_t5_style_needs_added_tokens_for_less_than(t5_dir, gold_sql):
    tok = tokenizer_lib.load_tokenizer(t5_dir, mask_token="<extra_id_0>")
    assert tok.num_added == 0  # <extra_id_0> is a reserved T5 token: nothing added
    assert tok.mask_id == tok.hf.convert_tokens_to_ids("<extra_id_0>") < tok.base_size
    assert tokenizer_lib.missing_characters(tok, gold_sql) == ["<"]
    failures = tokenizer_lib.roundtrip_failures(tok, gold_sql)
    assert len(failures) == sum("<" in q for q in gold_sql)
    assert "<unk>" in failures[0][1]

    assert tokenizer_lib.tokens_for_missing(tok, gold_sql) == [" <", " <="]
    assert tokenizer_lib.add_missing_tokens(tok, gold_sql) == 2
    assert tok.num_added == 2 and len(tok) == tok.base_size + 2
    assert tok.hf.convert_tokens_to_ids([" <", " <="]) == [tok.base_size, tok.base_size + 1]
    assert tokenizer_lib.roundtrip_failures(tok, gold_sql) == []


def test_t5_style_cannot_space_a_glued_less_than(t5_dir, gold_sql):
    # T5's pre-tokenizer starts a word after every added token, so `x<3` decodes as
    # `x< 3`: reported, not hidden (Spider's gold SQL always spaces `<`).
    tok = tokenizer_lib.load_tokenizer(t5_dir)
    tokenizer_lib.add_missing_tokens(tok, gold_sql + ["SELECT a FROM t WHERE x<3"])
    failures = tokenizer_lib.roundtrip_failures(tok, ["SELECT a FROM t WHERE x<3", "SELECT 1 < 2"])
    assert [text for text, _ in failures] == ["SELECT a FROM t WHERE x<3"]


def test_saved_tokenizer_keeps_added_tokens_and_mask(t5_dir, gold_sql, tmp_path):
    tok = tokenizer_lib.load_tokenizer(t5_dir, mask_token="<extra_id_0>")
    tokenizer_lib.add_missing_tokens(tok, gold_sql)
    tokenizer_lib.save_tokenizer(tok, tmp_path / "saved")
    tokenizer_lib.save_tokenizer(tok, tmp_path / "saved")  # replacing a saved one works
    again = tokenizer_lib.load_tokenizer(tmp_path / "saved")
    assert (again.base_size, again.num_added, again.mask_token) == (
        tok.base_size,
        2,
        "<extra_id_0>",
    )
    assert again.mask_id == tok.mask_id
    assert tokenizer_lib.roundtrip_failures(again, gold_sql) == []
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no temporary leftovers


def test_llama_style_round_trips_through_byte_fallback(llama_dir, gold_sql):
    tok = tokenizer_lib.load_tokenizer(llama_dir, mask_token="<mask>")
    vocab = tok.hf.get_vocab()
    assert "<" not in vocab and "%" not in vocab  # such characters are encoded as bytes
    assert tokenizer_lib.missing_characters(tok, gold_sql) == []
    assert tokenizer_lib.roundtrip_failures(tok, gold_sql) == []
    # The mask token is new: one token added, after the vocabulary.
    assert tok.num_added == 1 and tok.mask_id == tok.base_size
    assert tok.pad_id == tok.eos_id  # Llama has no pad token
    ids = tok.encode(["SELECT a FROM t WHERE b < 3"], add_special_tokens=True)[0]
    assert ids[0] == tok.hf.bos_token_id
    assert tok.decode(ids + [tok.mask_id, tok.eos_id] + ids) == "SELECT a FROM t WHERE b < 3"


def test_decode_stops_at_eos(t5_dir):
    tok = tokenizer_lib.load_tokenizer(t5_dir)
    ids = tok.encode(["SELECT name FROM singer"], add_special_tokens=True)[0]
    assert ids[-1] == tok.eos_id  # T5 appends EOS to its inputs
    assert tok.decode(ids + ids) == "SELECT name FROM singer"


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(tokenizer_lib.TokenizerError, match="not found"):
        tokenizer_lib.load_tokenizer(tmp_path / "nope")


def test_kd_pairs_need_one_base_vocabulary(t5_dir, llama_dir, gold_sql):
    student = tokenizer_lib.load_tokenizer(t5_dir, mask_token="<kid_mask>")  # an added mask
    tokenizer_lib.add_missing_tokens(student, gold_sql)
    teacher = tokenizer_lib.load_tokenizer(t5_dir)
    assert len(student) > len(teacher)
    tokenizer_lib.check_same_base_vocabulary(student, teacher)  # added tokens are no reason
    other = tokenizer_lib.load_tokenizer(llama_dir)
    with pytest.raises(tokenizer_lib.TokenizerError, match="differ at id 0"):
        tokenizer_lib.check_same_base_vocabulary(student, other)


def test_bpe_warns_when_the_corpus_gives_fewer_tokens(tmp_path, caplog):
    texts = ["SELECT name FROM singer", "SELECT count(*) FROM concert"] * 3
    with caplog.at_level(logging.WARNING):
        tok = tokenizer_lib.train_bpe(texts, tmp_path / "bpe", vocab_size=4096)
    assert 260 < len(tok) < 4096  # 4 special tokens, 256 bytes, the merges the corpus has
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"vocab_size 4096 requested but the corpus gives {len(tok)} tokens" in m for m in warned
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        small = tokenizer_lib.train_bpe(texts, tmp_path / "small", vocab_size=262)
    assert len(small) == 262 and not caplog.records


def test_bpe_adds_no_special_tokens(tmp_path, gold_sql):
    tok = tokenizer_lib.train_bpe(gold_sql[::8], tmp_path / "bpe", vocab_size=800)
    sample = gold_sql[:20]
    with_special = tok.encode(sample, add_special_tokens=True)
    assert with_special == tok.encode(sample, add_special_tokens=False)
    assert all(tok.eos_id not in ids and tok.pad_id not in ids for ids in with_special)
