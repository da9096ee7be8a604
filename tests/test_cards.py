"""Paper cards (docs/cards/<preset>.yaml, format in forgetting/cards.py): every GPU preset is composed at each point
of its sweep and compared, entry by entry, with the values its paper states. A difference the card does not declare,
a knob the preset's yamls set that no entry covers, a knob of an active method part left out, or a missing category
fails; so does a GPU preset without a card (unless listed in CARD_PENDING) and a docs page that is not the cards'
rendering.

    pytest tests/test_cards.py
    python -m forgetting.cards          # the same check, each preset's departures listed
"""
from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import CONF, compose

from forgetting import cards
from forgetting.cards import CARD_PENDING, GPU_PRESETS, CardError

PRESETS = [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=f"card pending: {CARD_PENDING[p]}"))
           if p in CARD_PENDING else p for p in GPU_PRESETS]


def _check(preset: str) -> list[str]:
    try:
        return cards.check(preset)
    except CardError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_gpu_preset_is_its_papers_setting_or_says_where_not(preset):
    problems = _check(preset)
    assert not problems, "\n".join(problems)


def test_the_gpu_presets_are_the_presets_on_hub_models():
    """A new preset on a hub model is a GPU preset: it needs a card (or a CARD_PENDING line) before it lands."""
    hub = {p.stem for p in (CONF / "experiment").glob("*.yaml")
           if compose(f"+experiment={p.stem}").model.source == "hf"}
    assert hub == set(GPU_PRESETS), f"add to GPU_PRESETS in forgetting/cards.py: {sorted(hub - set(GPU_PRESETS))}"
    written = {p.stem for p in cards.CARDS.glob("*.yaml")}
    assert written <= set(GPU_PRESETS) and not written & set(CARD_PENDING), sorted(written)


@pytest.mark.parametrize("paper", sorted(set(GPU_PRESETS.values())))
def test_the_docs_page_renders_the_cards(paper):
    assert cards.page_in_sync(paper), f"docs/papers/{paper}.md is stale: run python -m forgetting.cards --write"


def test_the_rendering_shows_each_departure_and_its_reason():
    text = cards.render_card("r1_table5", cards.load("r1_table5"))
    row = next(line for line in text.splitlines() if line.startswith("| engine | `generator.backend`"))
    assert "`vllm`" in row and "`hf` — **departure**: vLLM is the optional gpu extra" in row
    assert "Departures from the paper: `zero_stage(trainer.deepspeed)`; `generator.backend`." in text


# -- a card fails when the preset and the paper part ------------------------------------------------------------------

@pytest.fixture
def conf(tmp_path, monkeypatch):
    """A private copy of conf/ that the cards are checked against."""
    copy = tmp_path / "conf"
    shutil.copytree(CONF, copy)
    monkeypatch.setattr(cards, "CONF", copy)
    return copy


@pytest.fixture
def card_dir(tmp_path, monkeypatch):
    """A private copy of docs/cards/."""
    copy = tmp_path / "cards"
    shutil.copytree(cards.CARDS, copy)
    monkeypatch.setattr(cards, "CARDS", copy)
    return copy


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_a_value_changed_in_the_preset_is_an_undeclared_departure(conf):
    _edit(conf / "trainer" / "olmo_1b.yaml", "lr: 5.0e-6", "lr: 1.0e-5")
    problems = _check("olmo_table2")
    assert len(problems) == 1 and problems[0].startswith(
        "olmo_table2: trainer.lr is 1e-05 in the composed config, the paper's is 5e-06 (§3 Training Details:"), problems


def test_a_value_changed_in_the_card_fails_too(card_dir):
    _edit(card_dir / "r1_table5.yaml", "paper: [4, 1, 1, 1, 1, 1, 1]", "paper: [1, 1, 1, 1, 1, 1, 1]")
    assert [p.split(" (")[0] for p in _check("r1_table5")] == [
        "r1_table5: eval.generative.*.n_samples is [4, 1, 1, 1, 1, 1, 1] in the composed config, the paper's is "
        "[1, 1, 1, 1, 1, 1, 1]"]


def test_a_declared_departure_that_no_longer_holds_fails(conf):
    """The preset now follows the paper: the card's here/why must go."""
    _edit(conf / "experiment" / "olmo_table3.yaml", "  - override /trainer: olmo_1b",
          "  - override /trainer: olmo_1b\n  - override /generator: vllm")
    problems = _check("olmo_table3")
    assert any(p.startswith("olmo_table3: generator.backend is vllm in the composed config, the card's is hf")
               for p in problems), problems


def test_a_knob_the_preset_sets_without_a_card_entry_fails(conf):
    _edit(conf / "experiment" / "olmo_table2.yaml", "replay:", "trainer:\n  packing: true\nreplay:")
    assert _check("olmo_table2") == [
        "olmo_table2: trainer.packing (set by conf/experiment/olmo_table2.yaml, at method=base) is in no entry of "
        "docs/cards/olmo_table2.yaml: add its paper value, or list it under not_hyperparameters with the reason"]


def _drop_entries(path, drop) -> None:
    """Rewrite the card at ``path`` without the entries ``drop`` picks."""
    card = yaml.safe_load(path.read_text())
    card["entries"] = [e for e in card["entries"] if not drop(e)]
    path.write_text(yaml.safe_dump(card, allow_unicode=True, sort_keys=False))


def test_a_knob_of_an_active_method_part_must_be_in_the_card(card_dir):
    _drop_entries(card_dir / "olmo_table3.yaml", lambda e: e["key"] == "method.l2_lambda")
    assert _check("olmo_table3") == [
        "olmo_table3: method.l2_lambda (a knob of method part regularizer=l2, at method=l2) is in no entry of "
        "docs/cards/olmo_table3.yaml: add its paper value, or list it under not_hyperparameters with the reason"]


def test_a_card_without_a_required_category_fails(card_dir):
    _drop_entries(card_dir / "olmo_table2.yaml", lambda e: e["category"] == "warmup")
    assert _check("olmo_table2")[-1].startswith("docs/cards/olmo_table2.yaml: no entry for categories ['warmup']")


def test_a_sweep_that_is_not_the_presets_fails(conf):
    _edit(conf / "experiment" / "r1_table5.yaml", "method: base,ft,wise_ft,lora,cs,cfs", "method: base,ft,cfs")
    assert _check("r1_table5")[0].startswith("r1_table5: the card's sweep {'method': ['base', 'ft', 'wise_ft'")


def test_a_gpu_preset_without_a_card_fails_with_one_line(card_dir):
    (card_dir / "olmo_table3.yaml").unlink()
    with pytest.raises(CardError, match=r"^olmo_table3: no card: expected docs/cards/olmo_table3.yaml \(or the preset "
                                        r"in CARD_PENDING\)$"):
        cards.check("olmo_table3")


@pytest.mark.parametrize("old,new,message", [
    ("    category: lr\n", "    category: learning_rate\n", "entry 9 (trainer.lr): category='learning_rate'"),
    ("    here: hf\n", "", "entry 33 (generator.backend): here and why go together"),
    ("    paper: 0.03\n", "    paper: 0.03\n    here: 0.03\n    why: x\n", "here=0.03 equals paper: not a departure"),
    ("when: {method: cfs}", "when: {method: cfs_half}", "when: method=cfs_half is not in the sweep"),
    ("  - key: trainer.lr", "  - key: trainer.lr + [1]", "entry 9 (trainer.lr + [1]): key is invalid"),
])
def test_a_malformed_card_is_refused_in_one_line(card_dir, old, new, message):
    _edit(card_dir / "olmo_table2.yaml", old, new)
    with pytest.raises(CardError) as err:
        cards.load("olmo_table2")
    assert str(err.value).startswith("docs/cards/olmo_table2.yaml") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_keys_name_paths_elements_and_derived_quantities():
    c = compose("+experiment=r1_table5", "method=cfs")
    assert cards.resolve(c, "eval.generative.aime24.n_samples") == 4
    assert cards.resolve(c, "eval.generative.*.max_new_tokens") == [32768] * 4 + [2048] * 3
    assert cards.resolve(c, "trainer.batch_size * trainer.grad_accum * trainer.num_processes") == 128
    assert round(cards.resolve(c, "trainer.epochs * 32682 / (trainer.batch_size * trainer.grad_accum)")) == 1021
    assert cards.resolve(c, 'metric_key(eval.metrics, "mmlu")') == "acc,none"
    with pytest.raises(CardError, match="the composed config has no key trainer.learning_rate"):
        cards.resolve(c, "trainer.learning_rate")
    # "approx. 1000 gradient steps": 1021 is within the card's 5%, 1100 would not be
    assert cards._same(1021.3, 1000, 0.05) and not cards._same(1100, 1000, 0.05)
    assert cards._same(1e-3, "1e-3") and not cards._same(True, 1) and not cards._same(None, [])

