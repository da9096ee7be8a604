"""The one registry mechanism (forgetting/registry.py): order, the decorator, refusals, the unknown-name error."""
import pytest

from forgetting.errors import ConfigError
from forgetting.registry import Registry, UnknownName


def test_entries_keep_registration_order_and_read_as_a_dict():
    r = Registry("thing", {"b": 2})
    r.add("a", 1)

    @r.register()
    def c():
        return 3

    assert list(r) == ["b", "a", "c"] and r["c"]() == 3 and "a" in r and "z" not in r


def test_a_class_registers_under_its_name_attribute():
    r = Registry("evaluator")

    @r.register()
    class Drift:
        name = "drift"

    assert r["drift"] is Drift


def test_a_name_registered_twice_is_refused():
    r = Registry("generator.backend", {"hf": 1})
    with pytest.raises(ValueError, match="'hf' is already registered"):
        r.add("hf", 2)
    assert r["hf"] == 1


def test_an_unknown_name_is_a_one_line_config_error_naming_the_setting_and_the_choices():
    r = Registry("generator.backend", {"hf": 1, "vllm": 2})
    with pytest.raises(UnknownName) as err:
        r["vlm"]
    assert isinstance(err.value, ConfigError) and isinstance(err.value, KeyError)
    assert str(err.value) == "generator.backend='vlm' is unknown: expected one of hf, vllm"
