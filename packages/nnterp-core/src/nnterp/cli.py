"""The ``nnterp`` command line (also ``python -m nnterp``).

Commands: ``plugins`` (what every plugin registers), ``sites`` (the standard activation sites,
and with a model what it supports), ``run NAME`` (run a registered intervention on a model),
``run_tests`` (the conformance sweep and status file), plus the commands plugins register
(e.g. ``demo`` from nnterp-interventions).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _plugins(args: argparse.Namespace) -> int:
    from nnterp.plugins import get_registry

    registry = get_registry()
    for plugin in registry.plugins:
        status = f"  FAILED: {plugin.error}" if plugin.error else ""
        print(f"{plugin.name}  ({plugin.distribution} {plugin.version}){status}")
        specs = [spec for spec, owner in registry.architectures if owner.name == plugin.name]
        if specs:
            classes = sorted({name for spec in specs for name in spec.model_classes})
            print(f"  architectures ({len(specs)} specs, {len(classes)} classes): {', '.join(spec.name for spec in specs)}")
            if args.verbose:
                print(f"    classes: {', '.join(classes)}")
        interventions = [i for i in registry.interventions.values() if i.plugin.name == plugin.name]
        for intervention in interventions:
            print(f"  intervention {intervention.name}: {intervention.description}")
        commands = [c for c in registry.commands.values() if c.plugin.name == plugin.name]
        for command in commands:
            print(f"  command {command.name}: {command.help}")
        if registry.status_files and plugin.name == "contrib":
            print(f"  status files: {', '.join(registry.status_files)}")
    return 0


def _sites(args: argparse.Namespace) -> int:
    from nnterp.sites import SITES

    support = None
    if args.model or args.model_type:
        from nnterp.standardized_transformer import StandardizedTransformer

        if args.model:
            model = StandardizedTransformer(args.model, enable_attention_probs=args.attention_probs)
        else:
            from nnterp.testing import tiny_model, tiny_tokenizer

            model = StandardizedTransformer(
                tiny_model(args.model_type), tiny_tokenizer(), enable_attention_probs=args.attention_probs
            )
        support = model.support()
        print(f"{model.spec.name}: {model.num_layers} layers, kinds {list(model.layer_kinds)}")
    for site in SITES:
        shape = f"({', '.join(site.shape)})"
        line = f"{site.name:24s} {shape:34s} {site.meaning}"
        if support is not None:
            status = support[site.name]
            if isinstance(status, dict):
                missing = {layer: why for layer, why in status.items() if why is not None}
                line = f"{site.name:24s} layers {sorted(set(status) - set(missing))}; not {sorted(missing)}: {next(iter(missing.values()))}"
            else:
                line = f"{site.name:24s} {'available' if status is None else 'unavailable: ' + status}"
        print(line)
    return 0


def _run(args: argparse.Namespace) -> int:
    from nnterp.plugins import get_registry
    from nnterp.standardized_transformer import StandardizedTransformer

    registry = get_registry()
    intervention = registry.interventions.get(args.name)
    if intervention is None:
        known = ", ".join(sorted(registry.interventions)) or "(none: install nnterp-interventions)"
        print(f"nnterp: no intervention named {args.name!r}; registered: {known}", file=sys.stderr)
        return 2
    model = StandardizedTransformer(args.model, enable_attention_probs=args.attention_probs)
    prompts = args.prompt
    result = intervention.function(model, prompts)
    if intervention.render is not None:
        print(intervention.render(model, prompts, result, top_k=args.top_k))
    else:
        print(result)
    return 0


def _run_tests(args: argparse.Namespace) -> int:
    from nnterp.testing.sweep import main as sweep_main

    return sweep_main(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the plugins' commands added."""
    parser = argparse.ArgumentParser(prog="nnterp", description="nnterp: standardized transformer internals")
    commands = parser.add_subparsers(dest="command", required=True)

    plugins = commands.add_parser("plugins", help="list plugins and what each registers")
    plugins.add_argument("-v", "--verbose", action="store_true", help="list every model class")
    plugins.set_defaults(handler=_plugins)

    sites = commands.add_parser("sites", help="the standard activation sites, or what a model supports")
    sites.add_argument("--model", default=None, help="hub id or local directory: show its support")
    sites.add_argument("--model-type", default=None, help="a transformers model type, built tiny: show its support")
    sites.add_argument("--attention-probs", action="store_true", help="load with attention probabilities")
    sites.set_defaults(handler=_sites)

    run = commands.add_parser("run", help="run a registered intervention on a model")
    run.add_argument("name", help="intervention name (see `nnterp plugins`)")
    run.add_argument("--model", required=True, help="hub id or local directory")
    run.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    run.add_argument("--top-k", type=int, default=5, help="tokens shown per row")
    run.add_argument("--attention-probs", action="store_true", help="load with attention probabilities")
    run.set_defaults(handler=_run)

    tests = commands.add_parser("run_tests", help="run the conformance checks and write a status file")
    tests.add_argument("--model-types", nargs="*", default=None, help="transformers model types (tiny configs)")
    tests.add_argument("--class-names", nargs="*", default=None, help="HF class names (tiny configs)")
    tests.add_argument("--model-names", nargs="*", default=None, help="hub ids or local directories")
    tests.add_argument("--all", action="store_true", help="every causal-LM model type in transformers")
    tests.add_argument("--output", default=None, help="status file to write (default: print only)")
    tests.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    tests.set_defaults(handler=_run_tests)

    from nnterp.plugins import get_registry

    for command in get_registry().commands.values():
        if command.name in commands.choices:
            continue
        sub = commands.add_parser(command.name, help=command.help)
        if command.add_arguments is not None:
            command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnterp`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
