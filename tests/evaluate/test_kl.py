"""``pre/base_samples/kl`` is a KL: on a model whose next-token distribution is one fixed categorical, the estimate
equals the analytic KL(p_base ‖ p_model), whatever the run's own sampling settings (top-p, temperature)."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import compose

from forgetting.evaluate.evaluators import BaseSamples, Evaluation, base_samples_spec
from forgetting.store import Artifact, Store, key_of

VOCAB = ["<pad>", "<s>", "</s>", "a", "b", "c"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def categorical_model(logits: list[float], path):
    """A Llama whose next-token logits are ``logits`` at every position, whatever the context: every token embeds to
    the same vector, so every position's hidden state is the same, and the head maps it to ``logits``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.randn(8).expand(len(VOCAB), 8))
        h = model.model.norm(model.model(input_ids=torch.tensor([[1, 3]])).last_hidden_state)[0, 0]
        # lm_head(h) = logits: a rank-one head along the (constant) final hidden state
        model.lm_head.weight.copy_(torch.tensor(logits)[:, None] * h[None, :] / h.dot(h))
    model.generation_config.do_sample = True
    model.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return model


def _kl(p_logits, q_logits) -> float:
    p, q = torch.tensor(p_logits).log_softmax(0), torch.tensor(q_logits).log_softmax(0)
    return float((p.exp() * (p - q)).sum())


@pytest.mark.parametrize("top_p,temperature", [(0.5, 0.7), (0.95, 1.0)])
def test_kl_estimate_is_the_analytic_kl_whatever_the_run_samples_with(tmp_path, top_p, temperature):
    base_logits = [-30.0, -30.0, -1.5, 1.0, 0.3, -0.4]  # no pad, no BOS; EOS ends a sample after ~10 tokens
    tuned_logits = [-30.0, -30.0, -1.2, 0.2, 0.9, 0.1]
    base_dir, tuned_dir = tmp_path / "base", tmp_path / "tuned"
    categorical_model(base_logits, base_dir)
    tuned = categorical_model(tuned_logits, tuned_dir)
    c = compose("model.source=hf", f"model.path={base_dir}", f"store_dir={tmp_path / 'store'}",
                "eval.base_samples=1500", "eval.batch_size=256", f"generator.top_p={top_p}",
                f"generator.temperature={temperature}", "generator.max_new_tokens=40", "generator.batch_size=500",
                "generator.chunk=500", "eval.tasks=[]", "eval.downstream=[]", "eval.heldout_loss=false")
    store = Store(c.store_dir)
    base = Artifact("import", "base", base_dir)
    ev = Evaluation(c, store, Artifact("train", "tuned", tuned_dir), None, base, tmp_path)
    ev.model, ev.tokenizer = tuned, _tokenizer()
    torch.manual_seed(0)
    m = BaseSamples().run(ev)
    analytic = _kl(base_logits, tuned_logits)
    assert analytic > 0.2
    # ~15K sampled tokens: a standard error of ~0.006 on this KL
    assert m["pre/base_samples/kl"] == pytest.approx(analytic, abs=0.03)
    # on the base itself the estimate is exactly 0
    ev_base = Evaluation(c, store, base, None, base, tmp_path)
    ev_base.model, ev_base.tokenizer = categorical_model(base_logits, tmp_path / "again"), _tokenizer()
    assert BaseSamples().run(ev_base)["pre/base_samples/kl"] == 0.0


def test_held_out_samples_do_not_follow_the_runs_sampling_settings(tmp_path):
    base = Artifact("import", "k", tmp_path)
    spec = base_samples_spec(compose(), base)
    for override in ("generator.top_p=0.8", "generator.temperature=0.6"):
        assert key_of("generate", base_samples_spec(compose(override), base)) == key_of("generate", spec)
    assert spec["generator"]["top_p"] == 1.0 and spec["generator"]["temperature"] == 1.0
    # what the samples are drawn from does change them: the start tokens
    other = base_samples_spec(compose("eval.base_samples_starts=[{token: '<s>'}]"), base)
    assert key_of("generate", other) != key_of("generate", spec)
    assert math.isfinite(spec["generator"]["seed"])
