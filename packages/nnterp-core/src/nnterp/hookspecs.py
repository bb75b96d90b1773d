"""The hooks an nnterp plugin implements.

A plugin is a module (or object) exposed through the ``nnterp`` entry-point group::

    [project.entry-points.nnterp]
    my_plugin = "my_package.nnterp_plugin"

and implements any of these hooks with ``@nnterp.hookimpl``. Each hook receives a
``register`` callback rather than returning values, so one implementation can register any
number of things and the plugin manager knows which plugin registered each one.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("nnterp")
hookimpl = pluggy.HookimplMarker("nnterp")


@hookspec
def register_architectures(register: Callable[[Any], None]) -> None:
    """Register architecture specs.

    Call ``register(spec)`` once per `nnterp.spec.ArchitectureSpec`. A spec covers the HF
    classes named in ``spec.model_classes``.

    Precedence when two plugins cover one class: a third-party plugin beats
    ``nnterp-models-contrib``, which beats ``nnterp-core``; two plugins of the same rank
    covering the same class is an error (`nnterp.errors.PluginError`) when that class is
    loaded. A user's ``spec=`` or ``rename=`` argument beats every plugin.

    Example:
        >>> @hookimpl
        ... def register_architectures(register):
        ...     register(ArchitectureSpec(name="toy", model_classes=("ToyForCausalLM",),
        ...                               layers="backbone.blocks", ...))
    """


@hookspec
def register_interventions(register: Callable[..., None]) -> None:
    """Register named interventions.

    Call ``register(name, function, description="...")``. ``function(model, prompts, **kwargs)``
    runs the intervention on a `StandardizedTransformer`; the CLI (``nnterp run NAME``) and
    the docs list every registered intervention with its description.

    Example:
        >>> @hookimpl
        ... def register_interventions(register):
        ...     register("logit_lens", logit_lens, description="Per-layer next-token probabilities")
    """


@hookspec
def register_status_files(register: Callable[[str], None]) -> None:
    """Register status files (JSON written by ``nnterp run_tests``) shipped with the plugin.

    Call ``register(path)`` per file. Loading a model whose class is absent from every status
    file, or failed a check, or was tested on other transformers/nnsight versions, warns once.
    """


@hookspec
def register_unsupported_models(register: Callable[..., None]) -> None:
    """Register causal-LM model types the plugin knows no spec can standardize, with the reason.

    Call ``register(model_type, reason)``; ``nnterp run_tests`` records the reason in the status
    registry (``"reason"``) and the architecture page shows it. ``register(model_type, reason,
    tiny_config={...})`` also gives the config overrides a tiny random model of the type needs
    when its default config does not shrink into a valid one (as a spec's ``tiny_config``), so
    the sweep runs the plain model and checks the reason against it.

    Example:
        >>> @hookimpl
        ... def register_unsupported_models(register):
        ...     register("xlnet", "the stream is sequence-first, (seq, batch, hidden)")
    """


@hookspec
def register_commands(register: Callable[..., None]) -> None:
    """Register subcommands of the ``nnterp`` CLI.

    Call ``register(name, run, help="...", add_arguments=None)``: ``add_arguments(parser)``
    adds the command's argparse arguments; ``run(args) -> int`` runs it and returns an exit
    status.

    Example:
        >>> @hookimpl
        ... def register_commands(register):
        ...     register("demo", run_demo, help="Run the demo", add_arguments=demo_arguments)
    """
