import json

import numpy as np
import pytest

from kid.data import batching, pipeline, prompts, spider
from kid.data import tokenizer as tokenizer_lib


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
    c = pipeline.default_config()
    c.prompt_style = "t5"
    c.prompt_buckets = (128, 256, 512)
    c.target_buckets = (32, 64, 128)
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


def test_batches_hold_the_prompts_and_targets(dev, tok):
    config = _config(prompt_style="codes")
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
        p = batch["prompt_ids"].shape[1]
        target = batch["input_ids"][row, p:][batch["attention_mask"][row, p:] == 1]
        assert target[-1] == tok.eos_id
        assert tok.decode(target) == prompts.normalize_sql(e.query)
        assert batch["loss_mask"][row].sum() == len(target)


def _steps_per_epoch(dev, tok, **overrides):
    config = _config(**overrides)
    _, split = pipeline.build(config, dev, tok, train=True, process_index=0, process_count=1)
    options = pipeline.batch_options(config, tok, train=True)
    groups = pipeline.length_groups(split, options, by_length=config.group_by_length)
    return sum(len(g) // config.batch_size for g in groups), groups, split


def test_length_groups_partition_the_split(dev, tok):
    steps, groups, split = _steps_per_epoch(dev, tok)
    assert sorted(np.concatenate(groups).tolist()) == list(range(100))
    assert len(groups) > 1 and all(len(g) >= 8 for g in groups)
    widths = [max(len(split.prompts[i]) for i in g) for g in groups]
    assert widths == sorted(widths)  # shorter prompts in earlier groups
    assert 100 - 8 * len(groups) < steps * 8 <= 100  # each group drops less than a batch


def _bucket_widths(dev, tok, grouped):
    """Prompt widths of one epoch's batches, checking each is its longest prompt's bucket."""
    batches = _build(dev, tok, train=True, num_epochs=1, group_by_length=grouped)
    widths = []
    for batch in batches:
        p = batch["prompt_ids"].shape[1]
        t = batch["input_ids"].shape[1] - p
        assert batch["input_ids"].shape[0] == 8 and p in (128, 256, 512) and t in (32, 64, 128)
        longest = batch["prompt_mask"].sum(axis=1).max()
        assert p == min(b for b in (128, 256, 512) if b >= longest)
        widths.append(p)
    assert len(batches) == _steps_per_epoch(dev, tok, group_by_length=grouped)[0]
    return widths


def test_shapes_come_from_the_buckets_and_groups_cut_padding(dev, tok):
    grouped, mixed = _bucket_widths(dev, tok, True), _bucket_widths(dev, tok, False)
    assert np.mean(grouped) < np.mean(mixed)


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
    assert (last["weights"] == 0).all() and (last["prompt_mask"].sum(axis=1) > 0).all()
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
    batch = _build(dev, tok, train=True, layout=batching.ENCODER_DECODER)[0]
    assert batch["input_ids"].shape[1] in (128, 256, 512)
    assert (batch["decoder_input_ids"][:, 0] == tok.pad_id).all()
    mask = batch["decoder_attention_mask"][:, 1:] == 1
    np.testing.assert_array_equal(
        batch["decoder_input_ids"][:, 1:][mask], batch["targets"][:, :-1][mask]
    )
    assert "prompt_ids" not in batch


def test_jax_process_index_by_default(dev, tok):
    batches, _ = pipeline.build(_config(), dev, tok, train=False)
    assert batches[0]["input_ids"].shape[0] == 12


def test_bad_layout_and_host_count_are_errors(dev, tok):
    with pytest.raises(ValueError, match="data.layout 'bert'"):
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
