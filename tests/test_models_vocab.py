"""Vocabulary growth: mean-initialised rows, old predictions unchanged, exportable."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import transformers
from hf_fixtures import VOCAB, batch, is_t5, real_positions, save_checkpoint, torch_logits
from model_helpers import jitted_apply

from kid import models

NEW_VOCAB = VOCAB + 5


@pytest.mark.parametrize("name", ["llama_untied", "t5_v1_0"])
def test_resize_vocab_keeps_old_logits_and_exports(name, tmp_path):
    save_checkpoint(name, tmp_path / "hf")
    module, params = models.load_hf(tmp_path / "hf")
    grown, new_params = models.resize_vocab(module, params, NEW_VOCAB)
    assert grown.config.vocab_size == NEW_VOCAB
    embed = new_params["shared" if is_t5(name) else "embed_tokens"]["embedding"]
    old_embed = params["shared" if is_t5(name) else "embed_tokens"]["embedding"]
    np.testing.assert_array_equal(embed[:VOCAB], old_embed)
    np.testing.assert_allclose(
        embed[VOCAB:], np.repeat(old_embed.mean(0, keepdims=True), 5, 0), rtol=1e-6
    )
    if "lm_head" in params:
        head = new_params["lm_head"]["kernel"]
        np.testing.assert_allclose(
            head[:, VOCAB:],
            np.repeat(params["lm_head"]["kernel"].mean(1, keepdims=True), 5, 1),
            rtol=1e-6,
        )

    inputs = batch(name)
    real = real_positions(name, inputs)
    with jax.default_matmul_precision("highest"):
        old = np.asarray(jitted_apply(module)({"params": params}, **inputs))
        new = np.asarray(jitted_apply(grown)({"params": new_params}, **inputs))
    assert new.shape[-1] == NEW_VOCAB
    np.testing.assert_allclose(new[..., :VOCAB][real], old[real], atol=1e-5)

    models.save_hf(grown, new_params, tmp_path / "grown")
    auto = transformers.AutoModelForSeq2SeqLM if is_t5(name) else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(tmp_path / "grown", attn_implementation="eager").eval()
    assert reloaded.config.vocab_size == NEW_VOCAB
    np.testing.assert_allclose(torch_logits(reloaded, name, inputs)[real], new[real], atol=1e-4)


def test_resize_vocab_refuses_to_shrink():
    module = models.build(models.get_config("llama-tiny"))
    with pytest.raises(ValueError, match="only grows"):
        models.resize_vocab(module, {}, 10)
