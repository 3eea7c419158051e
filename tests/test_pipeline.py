import json
import logging

import numpy as np
import pytest
import tiny_tokenizers

from kid.data import batching, encoding, grouping, pipeline, prompts, spider
from kid.data import tokenizer as tokenizer_lib

PROMPT_BUCKETS, TARGET_BUCKETS = (128, 256, 512), (32, 64, 128)


@pytest.fixture(scope="module")
def dev(spider_dir):
    full = spider.load_dataset(spider_dir / "dev.json")
    wta = [e for e in full.examples if e.db_id == "wta_1"][:4]  # missing database
    examples = full.examples[:96] + tuple(wta)
    return spider.Dataset(examples, full.schemas, full.db_dir, ())


@pytest.fixture(scope="module")
def tok(tmp_path_factory, dev):
    texts = [e.question for e in dev.examples] + [
        prompts.normalize_sql(e.query) for e in dev.examples
    ]
    return tokenizer_lib.train_bpe(texts, tmp_path_factory.mktemp("bpe"), vocab_size=600)


def _config(**overrides):
    """T5 prompts (their lengths vary more than CodeS ones with this small vocabulary)."""
    c = pipeline.default_config()
    c.prompt_style = "t5"
    c.layout = batching.ENCODER_DECODER
    c.prompt_buckets = PROMPT_BUCKETS
    c.target_buckets = TARGET_BUCKETS
    c.batch_size = 8
    c.eval_batch_size = 12
    c.read_threads = 1
    c.update(overrides)
    return c


def _build(dev, tok, *, train, host=0, hosts=1, **overrides):
    batches, _ = pipeline.build(
        _config(**overrides), dev, tok, train=train, process_index=host, process_count=hosts
    )
    return batches


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _shape(batch) -> tuple[int, int]:
    """(prompt_len, target_len) of a batch of either layout."""
    p = batching.prompt_arrays(batch)[0].shape[1]
    return p, batch["targets"].shape[1] - (0 if "decoder_input_ids" in batch else p)


def _padding(batches) -> float:
    """Share of the prompt + target slots of the batches that are padding."""
    real = slots = 0
    for b in batches:
        p, t = _shape(b)
        real += batching.prompt_arrays(b)[1].sum()
        real += b["decoder_attention_mask"].sum() if "decoder_input_ids" in b else 0
        real += 0 if "decoder_input_ids" in b else b["attention_mask"][:, p:].sum()
        slots += len(b["weights"]) * (p + t)
    return 1 - real / slots


def test_batches_hold_the_prompts_and_targets(dev, tok):
    config = _config(prompt_style="codes", layout=batching.DECODER_ONLY)
    batches, split = pipeline.build(config, dev, tok, train=True, process_index=0, process_count=1)
    assert split.report["schema_only"] == 4 and split.report["examples"] == 100
    prompter = prompts.Prompter(
        dev.schemas,
        dev.db_dir,
        pipeline.prompt_options(config),
        count_tokens=tok.count_tokens,
        budget=512,
    )
    batch = batches[0]
    for row, i in enumerate(batch["example_index"]):
        e = dev.examples[i]
        prompt = batch["prompt_ids"][row][batch["prompt_mask"][row] == 1]
        assert tok.decode(prompt) == prompter(e).text
        assert tok.eos_id not in prompt  # decoder-only prompts get no EOS
        p = batch["prompt_ids"].shape[1]
        target = batch["input_ids"][row, p:][batch["attention_mask"][row, p:] == 1]
        assert target[-1] == tok.eos_id
        assert tok.decode(target) == prompts.normalize_sql(e.query)
        assert batch["loss_mask"][row].sum() == len(target)


def _steps_per_epoch(dev, tok, **overrides):
    config = _config(**overrides)
    _, split = pipeline.build(config, dev, tok, train=True, process_index=0, process_count=1)
    options = pipeline.batch_options(config, tok, train=True)
    groups = grouping.length_groups(split, options)
    return sum(len(g.indices) // config.batch_size for g in groups), groups, split


def _natural_shape(split, i):
    return (
        batching.bucket(len(split.prompts[i]), PROMPT_BUCKETS),
        batching.bucket(len(split.targets[i]), TARGET_BUCKETS),
    )


def test_length_groups_partition_the_split_by_shape(dev, tok):
    steps, groups, split = _steps_per_epoch(dev, tok)
    assert sorted(np.concatenate([g.indices for g in groups]).tolist()) == list(range(100))
    assert len(groups) > 1 and all(len(g.indices) >= 8 for g in groups)
    assert [g.shape for g in groups] == sorted({g.shape for g in groups})  # one group per shape
    for g in groups:  # every member fits its group's shape; most have that very shape
        natural = [_natural_shape(split, i) for i in g.indices]
        assert all(p <= g.shape[0] and t <= g.shape[1] for p, t in natural)
        assert g.shape == (max(p for p, _ in natural), max(t for _, t in natural))
    assert 100 - 8 * len(groups) < steps * 8 <= 100  # each group drops less than a batch
    (single,) = grouping.length_groups(
        split, pipeline.batch_options(_config(), tok, train=True), by_length=False
    )
    assert single.shape == (512, 128) and len(single.indices) == 100


def test_min_group_batches_trades_padding_for_fewer_shapes(dev, tok):
    _, split = pipeline.build(_config(), dev, tok, train=True, process_index=0, process_count=1)
    shapes = {}
    for m in (1, 3):
        options = pipeline.batch_options(_config(min_group_batches=m), tok, train=True)
        groups = grouping.length_groups(split, options)
        assert all(len(g.indices) >= 8 * m for g in groups)
        shapes[m] = grouping.split_shapes(split, options, train=True)
    assert len(shapes[3]) < len(shapes[1])


def _epoch(dev, tok, grouped, **overrides):
    """One epoch of training batches, checking each has its group's shape."""
    config = _config(num_epochs=1, group_by_length=grouped, **overrides)
    batches, split = pipeline.build(config, dev, tok, train=True, process_index=0, process_count=1)
    options = pipeline.batch_options(config, tok, train=True)
    group_of = {int(i): g.shape for g in grouping.length_groups(split, options) for i in g.indices}
    shapes = grouping.split_shapes(split, options, train=True)
    out = list(batches)
    for batch in out:
        shape = _shape(batch)
        assert batch["weights"].shape[0] == 8 and shape in shapes
        assert {group_of[int(i)] for i in batch["example_index"]} == {shape}
    assert {_shape(b) for b in out} == set(shapes)
    assert len(out) == _steps_per_epoch(dev, tok, group_by_length=grouped)[0]
    return out, shapes


def test_groups_cut_padding_and_bound_the_shapes(dev, tok):
    grouped, grouped_shapes = _epoch(dev, tok, True)
    mixed, mixed_shapes = _epoch(dev, tok, False)
    assert mixed_shapes == [(512, 128)]  # one group: the split's largest shape
    assert 1 < len(grouped_shapes) <= len(PROMPT_BUCKETS) * len(TARGET_BUCKETS)
    assert _padding(grouped) < 0.5 < _padding(mixed)


def test_eval_shapes_are_those_of_its_batches(dev, tok):
    config = _config()
    batches, split = pipeline.build(config, dev, tok, train=False, process_index=0, process_count=1)
    options = pipeline.batch_options(config, tok, train=False)
    seen = sorted({_shape(b) for b in batches})
    assert grouping.split_shapes(split, options, train=False) == seen
    assert len(seen) > 1


def test_max_new_tokens_is_the_largest_target_bucket(tok):
    assert pipeline.max_new_tokens(pipeline.batch_options(_config(), tok, train=False)) == 128


def test_same_seed_same_batches(dev, tok):
    a, b = _build(dev, tok, train=True), _build(dev, tok, train=True)
    assert all(_equal(a[i], b[i]) for i in range(5))
    c = _build(dev, tok, train=True, seed=1)
    assert not np.array_equal(a[0]["example_index"], c[0]["example_index"])


def test_each_epoch_is_reshuffled(dev, tok):
    batches = _build(dev, tok, train=True)
    steps = _steps_per_epoch(dev, tok)[0]
    epochs = [
        np.concatenate([batches[s]["example_index"] for s in range(e * steps, (e + 1) * steps)])
        for e in range(2)
    ]
    assert len(set(epochs[0])) == len(epochs[0]) == steps * 8
    assert len(set(epochs[1])) == len(epochs[1]) == steps * 8
    assert not np.array_equal(epochs[0], epochs[1])


def test_two_hosts_disjoint_with_equal_batch_counts(dev, tok):
    hosts = [_build(dev, tok, train=True, host=h, hosts=2, num_epochs=1) for h in range(2)]
    steps = _steps_per_epoch(dev, tok)[0]
    assert len(hosts[0]) == len(hosts[1]) == steps
    seen = [np.concatenate([b["example_index"] for b in h]) for h in hosts]
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == steps * 8
    single = _build(dev, tok, train=True, num_epochs=1)
    for step in range(len(single)):
        local = [h[step] for h in hosts]
        # The hosts' rows are the halves of the single-host batch, with the same shapes.
        for key in single[step]:
            np.testing.assert_array_equal(
                np.concatenate([b[key] for b in local]), single[step][key]
            )


def test_eval_scores_every_example_once(dev, tok):
    hosts = [_build(dev, tok, train=False, host=h, hosts=2) for h in range(2)]
    assert len(hosts[0]) == len(hosts[1]) == 9  # ceil(100 / 12)
    rows = [
        (i, w)
        for h in hosts
        for b in h
        for i, w in zip(b["example_index"], b["weights"], strict=True)
    ]
    real = sorted(i for i, w in rows if w == 1)
    assert real == list(range(100))
    assert all(i == -1 for i, w in rows if w == 0) and len(rows) == 108
    last = hosts[1][-1]  # all padding: copies of a real row, weight 0, nothing empty
    prompt_mask = batching.prompt_arrays(last)[1]
    assert (last["weights"] == 0).all() and (prompt_mask.sum(axis=1) > 0).all()
    assert last["loss_mask"].sum() == 0


def test_restored_iterator_resumes_with_the_next_batch(dev, tok):
    config = _config()
    batches = _build(dev, tok, train=True)
    it = pipeline.iterator(batches, config)
    for _ in range(15):  # past the first epoch boundary
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
    expected = [next(it) for _ in range(2)]
    restored = pipeline.iterator(batches, config)
    restored.set_state(state)
    assert all(_equal(next(restored), e) for e in expected)
    assert _equal(expected[0], batches[15])


def test_encoder_decoder_layout(dev, tok):
    batch = _build(dev, tok, train=True)[0]
    assert batch["input_ids"].shape[1] in (128, 256, 512)
    assert (batch["decoder_input_ids"][:, 0] == tok.pad_id).all()
    mask = batch["decoder_attention_mask"][:, 1:] == 1
    np.testing.assert_array_equal(
        batch["decoder_input_ids"][:, 1:][mask], batch["targets"][:, :-1][mask]
    )
    assert "prompt_ids" not in batch
    config = _config()
    started = pipeline.build(
        config, dev, tok, train=True, process_index=0, process_count=1, decoder_start_id=7
    )[0][0]
    assert (started["decoder_input_ids"][:, 0] == 7).all()
    options = pipeline.batch_options(config, tok, train=True, decoder_start_id=5)
    assert options.decoder_start_id == 5
    assert pipeline.batch_options(config, tok, train=True).decoder_start_id == tok.pad_id


def _eos_count(ids, eos):
    return int(np.sum(np.asarray(ids) == eos))


def test_encoder_inputs_end_with_one_eos_within_the_budget(dev, tok):
    # The BPE adds no special tokens: the pipeline appends EOS to every encoder input.
    assert tok.encode(["a b"], add_special_tokens=True) == tok.encode(
        ["a b"], add_special_tokens=False
    )
    config = _config(prompt_buckets=(40, 64))  # tight: many prompts lose items
    batch = _build(dev, tok, train=False, prompt_buckets=(40, 64))[0]
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        real = ids[mask == 1]
        assert real[-1] == tok.eos_id and _eos_count(real, tok.eos_id) == 1
    _, split = pipeline.build(config, dev, tok, train=False, process_index=0, process_count=1)
    assert split.report["truncated_prompts"] > 0
    # The EOS counts against the budget: prompts fill it, EOS included, never more.
    assert max(len(p) for p in split.prompts) == 64
    for p in split.prompts:
        assert list(p) == tok.encode([tok.decode(p)], add_special_tokens=True)[0] + [tok.eos_id]


def test_t5_tokenizer_eos_is_not_doubled(dev, tmp_path):
    texts = [e.question for e in dev.examples] + [
        prompts.normalize_sql(e.query) for e in dev.examples
    ]
    t5 = tokenizer_lib.load_tokenizer(tiny_tokenizers.t5_style(tmp_path / "t5", texts))
    assert t5.encode(["a b"], add_special_tokens=True)[0][-1] == t5.eos_id  # T5 adds its own
    batches, split = pipeline.build(
        _config(add_missing_tokens=False), dev, t5, train=False, process_index=0, process_count=1
    )
    assert all(p[-1] == t5.eos_id and _eos_count(p, t5.eos_id) == 1 for p in split.prompts)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(layout=batching.DECODER_ONLY), "data.prompt_style 't5' does not fit data.layout"),
        (dict(prompt_style="codes"), "data.prompt_style 'codes' does not fit data.layout"),
        (dict(prompt_style="sql"), "data.prompt_style 'sql' is not one of"),
        (dict(source="csv"), "data.source 'csv' is not one of"),
        (dict(prompt_buckets=()), "data.prompt_buckets is empty"),
        (dict(target_buckets=(0, 64)), r"data.target_buckets \(0, 64\) must be positive"),
        (dict(batch_size=0), "data.batch_size must be a positive integer, got 0"),
        (dict(eval_batch_size=-4), "data.eval_batch_size must be a positive integer"),
        (dict(min_group_batches=0), "data.min_group_batches must be a positive integer"),
        (dict(tokenizer="bpe", bpe_vocab_size=0), "data.bpe_vocab_size must be positive"),
    ],
)
def test_bad_data_configs_are_refused_naming_the_fields(dev, tok, overrides, message):
    config = _config(**overrides)
    for check in (
        lambda: pipeline.check_config(config),
        lambda: pipeline.prompt_options(config),
        lambda: pipeline.batch_options(config, tok, train=True),
        lambda: pipeline.build(config, dev, tok, train=True, process_index=0, process_count=1),
    ):
        with pytest.raises(ValueError, match=message):
            check()


def test_report_is_one_line_and_a_warning_when_anything_was_cut(dev, tok, caplog):
    config = _config(prompt_buckets=(40, 64), target_buckets=(8, 16))
    with caplog.at_level(logging.INFO):
        _, split = pipeline.build(config, dev, tok, train=False, process_index=0, process_count=1)
    line = encoding.format_report(split.report)
    assert "\n" not in line and line.startswith("100 prompts, 4 schema-only")
    assert f"{split.report['truncated_targets']} of 100 targets cut to 16 tokens" in line
    assert "truncated to the token budget" in line and "(budget 64 tokens)" in line
    warned = [
        r for r in caplog.records if r.levelno == logging.WARNING and "eval data" in r.message
    ]
    assert warned and line in warned[0].getMessage()
    clean = spider.Dataset(dev.examples[:12], dev.schemas, dev.db_dir, ())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _, split = pipeline.build(
            _config(), clean, tok, train=False, process_index=0, process_count=1
        )
    assert "no target cut" in encoding.format_report(split.report)
    records = [r for r in caplog.records if "eval data" in r.getMessage()]
    assert records and all(r.levelno == logging.INFO for r in records)


def test_prepare_tokenizer_trains_a_bpe_once(dev, tmp_path):
    config = _config(tokenizer="bpe", bpe_vocab_size=700, bpe_min_frequency=2)
    with pytest.raises(ValueError, match="needs save_dir"):
        pipeline.prepare_tokenizer(config, dev)
    with pytest.raises(ValueError, match="data.tokenizer is not set"):
        pipeline.prepare_tokenizer(_config(), dev, save_dir=str(tmp_path / "unused"))
    save_dir = str(tmp_path / "tokenizer")
    tok = pipeline.prepare_tokenizer(config, dev, save_dir=save_dir)
    assert (tok.pad_id, tok.eos_id, tok.mask_id, tok.mask_token) == (0, 1, 3, "<mask>")
    assert tok.num_added == 0 and 260 < len(tok) <= 700  # bytes and merges of the corpus
    corpus = encoding.tokenizer_corpus(dev, pipeline.prompt_options(config))
    assert tokenizer_lib.roundtrip_failures(tok, corpus) == []
    # A resumed run loads the saved tokenizer, whatever the config asks now.
    config.bpe_vocab_size = 400
    again = pipeline.prepare_tokenizer(config, dev, save_dir=save_dir)
    assert len(again) == len(tok) and again.hf.get_vocab() == tok.hf.get_vocab()
    assert again.encode(corpus[:20], add_special_tokens=True) == tok.encode(
        corpus[:20], add_special_tokens=True
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a tokenizer")
    with pytest.raises(ValueError, match="holds no tokenizer kid saved"):
        pipeline.prepare_tokenizer(config, dev, save_dir=str(other))
    assert (other / "notes.txt").exists()


def test_prepare_tokenizer_saves_an_hf_tokenizer_with_its_added_tokens(dev, tmp_path):
    texts = [e.question for e in dev.examples]  # no `<` in the T5 vocabulary
    t5_dir = tiny_tokenizers.t5_style(tmp_path / "t5", texts)
    config = _config(tokenizer=t5_dir, mask_token="<extra_id_0>")
    save_dir = str(tmp_path / "saved")
    tok = pipeline.prepare_tokenizer(config, dev, save_dir=save_dir)
    assert tok.num_added >= 1  # ` <` for the SQL's comparisons
    again = pipeline.prepare_tokenizer(config, dev, save_dir=save_dir)
    assert (len(again), again.mask_id, again.num_added) == (len(tok), tok.mask_id, tok.num_added)


def test_jax_process_index_by_default(dev, tok):
    batches, _ = pipeline.build(_config(), dev, tok, train=False)
    assert batches[0]["input_ids"].shape[0] == 12


def test_bad_layout_and_host_count_are_errors(dev, tok):
    with pytest.raises(ValueError, match="data.layout 'bert' is not one of"):
        _build(dev, tok, train=True, layout="bert")
    with pytest.raises(ValueError, match="batch size 8 is not divisible by the 3 hosts"):
        _build(dev, tok, train=True, hosts=3)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(dev, tok):
    config = _config(worker_count=1)
    batches = _build(dev, tok, train=True)
    it = pipeline.iterator(batches, config)
    got = [next(it) for _ in range(3)]
    state = it.get_state()
    after = next(it)
    it.close()
    assert all(_equal(g, batches[i]) for i, g in enumerate(got))
    restored = pipeline.iterator(batches, config)
    restored.set_state(state)
    assert _equal(next(restored), after)
    restored.close()
