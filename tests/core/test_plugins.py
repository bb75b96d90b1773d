"""The plugin system: discovery, precedence, broken plugins, the example third-party plugin."""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint

import pytest
import torch

from nnterp import plugins
from nnterp.errors import PluginError
from nnterp.hookspecs import hookimpl
from nnterp.plugins import PluginInfo, PluginWarning, build_registry
from nnterp.spec import ArchitectureSpec


class _Plugin:
    """A plugin object built from hook functions."""

    def __init__(self, **hooks):
        for name, function in hooks.items():
            setattr(self, name, hookimpl(function))


def _spec(name, *classes, **changes):
    return ArchitectureSpec(name=name, model_classes=classes, **changes)


@pytest.fixture(autouse=True)
def _fresh_registry():
    plugins.reset_registry()
    yield
    plugins.reset_registry()


def test_installed_plugins_are_discovered():
    registry = plugins.get_registry()
    names = {plugin.name: plugin for plugin in registry.plugins}
    assert {"core", "interventions", "contrib", "toy"} <= set(names)
    assert names["toy"].distribution == "nnterp-toy-plugin"
    assert registry.spec_for_class_names(["LlamaForCausalLM"]).name == "llama"
    assert registry.spec_for_class_names(["ToyForCausalLM"]).name == "toy"
    assert "residual_norms" in registry.interventions
    assert all(plugin.error is None for plugin in registry.plugins)


def test_third_party_beats_contrib_beats_core():
    core = PluginInfo("core", "nnterp-core", "1")
    contrib = PluginInfo("contrib", "nnterp-models-contrib", "1")
    third = PluginInfo("mine", "my-dist", "1")
    registry = plugins.Registry(
        architectures=[
            (_spec("from-third", "XForCausalLM"), third),
            (_spec("from-core", "XForCausalLM"), core),
            (_spec("from-contrib", "XForCausalLM"), contrib),
        ]
    )
    assert registry.spec_for_class_names(["XForCausalLM"]).name == "from-third"
    registry.architectures.pop(0)
    assert registry.spec_for_class_names(["XForCausalLM"]).name == "from-contrib"


def test_two_plugins_of_same_rank_for_one_class_is_an_error_naming_both():
    first = PluginInfo("alpha", "dist-a", "1")
    second = PluginInfo("beta", "dist-b", "1")
    registry = plugins.Registry(
        architectures=[(_spec("a", "YForCausalLM"), first), (_spec("b", "YForCausalLM"), second)]
    )
    with pytest.raises(PluginError, match="alpha.*beta|beta.*alpha") as raised:
        registry.spec_for_class_names(["YForCausalLM"])
    assert "spec=" in str(raised.value)


def test_subclass_is_covered_through_the_mro():
    registry = plugins.get_registry()
    assert registry.spec_for_class_names(["MyLlama", "LlamaForCausalLM", "object"]).name == "llama"


def test_hook_that_raises_warns_once_and_others_keep_working():
    def broken(register):
        raise RuntimeError("boom")

    def good(register):
        register(_spec("good", "GoodForCausalLM"))

    with pytest.warns(PluginWarning, match="'broken'.*boom") as caught:
        registry = build_registry(
            extra_plugins=[
                (_Plugin(register_architectures=broken), PluginInfo("broken", "broken-dist", "0.1")),
                (_Plugin(register_architectures=good), PluginInfo("good", "good-dist", "0.1")),
            ]
        )
    assert sum("broken" in str(w.message) for w in caught) == 1
    assert "broken-dist" in str(caught[0].message)
    assert registry.spec_for_class_names(["GoodForCausalLM"]).name == "good"
    assert registry.spec_for_class_names(["LlamaForCausalLM"]).name == "llama"
    broken_info = next(p for p in registry.plugins if p.name == "broken")
    assert "boom" in broken_info.error


def test_plugin_failing_at_import_is_reported_once_and_skipped(monkeypatch):
    real = plugins.entry_points

    def with_broken(group):
        return [*real(group=group), EntryPoint("ghost", "nnterp_no_such_module_xyz", group)]

    monkeypatch.setattr(plugins, "entry_points", with_broken)
    with pytest.warns(PluginWarning, match="'ghost'.*failed to import") as caught:
        registry = plugins.get_registry()
        plugins.get_registry()
    assert len([w for w in caught if "ghost" in str(w.message)]) == 1
    assert registry.spec_for_class_names(["GPT2LMHeadModel"]).name == "gpt2"
    assert "residual_norms" in registry.interventions


def test_environment_variable_disables_entry_points(monkeypatch):
    monkeypatch.setenv(plugins.DISABLE_ENV_VAR, "1")
    registry = plugins.get_registry()
    assert [plugin.name for plugin in registry.plugins] == ["core"]
    assert registry.spec_for_class_names(["ToyForCausalLM"]) is None
    assert registry.spec_for_class_names(["LlamaForCausalLM"]).name == "llama"


def test_import_nnterp_loads_no_plugins_and_no_torch():
    import subprocess
    import sys

    code = "import sys, nnterp; print('torch' in sys.modules, 'nnterp.plugins' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]


def test_toy_plugin_model_validates_and_its_intervention_runs():
    from nnterp_toy import ToyConfig, ToyForCausalLM

    from nnterp import StandardizedTransformer
    from nnterp.testing import tiny_tokenizer

    hf_model = ToyForCausalLM(ToyConfig(depth=3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True)
    assert model.layers[2].self_attn._module is hf_model.trunk.blocks[2].mixer
    assert (model.num_layers, model.hidden_size, model.num_heads) == (3, 48, 4)
    intervention = plugins.get_registry().interventions["residual_norms"]
    norms = intervention.function(model, ["Hello world", "The cat"])
    encoding = model.tokenizer(["Hello world", "The cat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        x = hf_model.trunk.token_table(encoding["input_ids"])
        positions = (encoding["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        x = x + hf_model.trunk.position_table(positions)
        expected = []
        for block in hf_model.trunk.blocks:
            x = block(x, encoding["attention_mask"])
            expected.append(x[:, -1].norm(dim=-1))
    torch.testing.assert_close(norms, torch.stack(expected, dim=1))
    assert "L2=" in intervention.render(model, ["Hello world", "The cat"], norms)


def test_unsupported_model_types_are_registered_with_their_reason_and_named_on_load():
    # A plugin's reason reaches the registry, the sweep's status entry and the load error.
    import warnings

    from nnterp import StandardizedTransformer
    from nnterp.errors import RenamingError
    from nnterp.hookspecs import hookimpl
    from nnterp.plugins import PluginInfo, build_registry
    from nnterp.testing import tiny_model, tiny_tokenizer

    class Plugin:
        @hookimpl
        def register_unsupported_models(self, register):
            register("longcat_flash", "a reason written for this test", tiny_config={"num_key_value_heads": 4})

    registry = build_registry([(Plugin(), PluginInfo("test", "test-dist", "0"))])
    assert registry.unsupported_models["longcat_flash"] == "a reason written for this test"
    assert registry.unsupported_tiny_configs["longcat_flash"] == {"num_key_value_heads": 4}
    # The installed contrib plugin registers reformer with the overrides its tiny model needs.
    hf_model = tiny_model("reformer")
    assert hf_model.config.is_decoder and tuple(hf_model.config.attn_layers) == ("local", "lsh")
    with pytest.raises(RenamingError, match="Known limitation of reformer"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StandardizedTransformer(hf_model, tiny_tokenizer())


def test_an_unsupported_type_registered_with_a_bad_tiny_config_is_a_hook_error():
    from nnterp.hookspecs import hookimpl
    from nnterp.plugins import PluginInfo, build_registry

    class Plugin:
        @hookimpl
        def register_unsupported_models(self, register):
            register("a_type_of_this_test", "a reason", tiny_config=["not", "a", "dict"])

    registry = build_registry([(Plugin(), PluginInfo("test", "test-dist", "0"))])
    assert "a_type_of_this_test" not in registry.unsupported_models
    assert "a_type_of_this_test" not in registry.unsupported_tiny_configs
    (info,) = [plugin for plugin in registry.plugins if plugin.name == "test"]
    assert "tiny_config" in (info.error or "")
