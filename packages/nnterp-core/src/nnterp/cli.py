"""The ``nnterp`` command line (also ``python -m nnterp``).

Commands: ``plugins`` (what every plugin registers), ``sites`` (the standard activation sites,
and with a model what it supports), ``run NAME`` (run a registered intervention on a model),
``run_tests`` (the conformance sweep, recorded in the user-local status registry),
``check-release`` (sweep every model type of the installed transformers and compare with the
shipped registry), ``doctor`` (versions, plugins, registry, caches), plus the commands plugins
register (e.g. ``demo`` from nnterp-interventions). ``nnterp --version`` prints the versions.

Every failure is one line on stderr (``nnterp COMMAND: error: ...``) and a non-zero exit status:
2 for a usage error, 1 otherwise; set ``NNTERP_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NoReturn

#: Set to 1 to let exceptions propagate with their traceback.
DEBUG_ENV_VAR = "NNTERP_DEBUG"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Example:
        >>> positive_int("3")
        3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def version_text() -> str:
    """The ``nnterp --version`` line: nnterp, every nnterp-* distribution and the stack.

    Example:
        >>> version_text()
        'nnterp 2.0.0 (nnterp-core 2.0.0, ...); python 3.11.9, torch 2.13.0, transformers 5.24.0, nnsight 0.8.1'
    """
    import platform

    from nnterp import __version__
    from nnterp.doctor import _version, nnterp_distributions

    distributions = ", ".join(
        f"{name} {version}" for name, version in nnterp_distributions().items()
    )
    stack = ", ".join(
        f"{name} {_version(name)}" for name in ("torch", "transformers", "nnsight")
    )
    return f"nnterp {__version__} ({distributions or 'no distribution metadata'}); python {platform.python_version()}, {stack}"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            help="print the versions of nnterp and its stack, and exit",
        )

    def __call__(
        self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any
    ) -> None:
        print(version_text())
        parser.exit(0)


def one_line(error: BaseException) -> str:
    """``error`` as one line: its type and its message with every run of whitespace (newlines
    included) collapsed to a space.

    Example:
        >>> one_line(ValueError("bad\\n  value"))
        'ValueError: bad value'
    """
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show warnings as one line each (``nnterp: warning: Category: message``) on stderr."""
    previous = warnings.showwarning

    def show(
        message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
    ) -> None:
        text = " ".join(str(message).split())
        print(f"nnterp: warning: {category.__name__}: {text}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _plugins(args: argparse.Namespace) -> int:
    from nnterp.plugins import get_registry

    registry = get_registry()
    for plugin in registry.plugins:
        status = f"  FAILED: {plugin.error}" if plugin.error else ""
        print(f"{plugin.name}  ({plugin.distribution} {plugin.version}){status}")
        specs = [
            spec for spec, owner in registry.architectures if owner.name == plugin.name
        ]
        if specs:
            classes = sorted({name for spec in specs for name in spec.model_classes})
            print(
                f"  architectures ({len(specs)} specs, {len(classes)} classes): {', '.join(spec.name for spec in specs)}"
            )
            if args.verbose:
                print(f"    classes: {', '.join(classes)}")
        interventions = [
            i for i in registry.interventions.values() if i.plugin.name == plugin.name
        ]
        for intervention in interventions:
            print(f"  intervention {intervention.name}: {intervention.description}")
        commands = [
            c for c in registry.commands.values() if c.plugin.name == plugin.name
        ]
        for command in commands:
            print(f"  command {command.name}: {command.help}")
        owned = [
            path
            for path, owner in registry.status_file_owners.items()
            if owner.name == plugin.name
        ]
        if owned:
            print(f"  status files: {', '.join(owned)}")
    return 0


def _hub_options(name: str) -> dict[str, Any]:
    from nnterp.testing.sweep import hub_options

    return hub_options([name])


def _sites(args: argparse.Namespace) -> int:
    from nnterp.sites import SITES

    support = None
    if args.model or args.model_type:
        from nnterp.standardized_transformer import StandardizedTransformer

        if args.model:
            model = StandardizedTransformer(
                args.model,
                enable_attention_probs=args.attention_probs,
                **_hub_options(args.model),
            )
        else:
            from nnterp.testing import tiny_model, tiny_tokenizer
            from nnterp.testing.sweep import check_model_types

            check_model_types([args.model_type], argument="--model-type")
            model = StandardizedTransformer(
                tiny_model(args.model_type),
                tiny_tokenizer(),
                enable_attention_probs=args.attention_probs,
            )
        support = model.support()
        print(
            f"{model.spec.name}: {model.num_layers} layers, kinds {list(model.layer_kinds)}"
        )
        print(f"{'site':24s} support")
        print(f"{'-' * 23:24s} -------")
    else:
        print(f"{'site':24s} {'shape':34s} meaning")
        print(f"{'-' * 23:24s} {'-' * 33:34s} -------")
    for site in SITES:
        shape = f"({', '.join(site.shape)})"
        line = f"{site.name:24s} {shape:34s} {site.meaning}"
        if support is not None:
            status = support[site.name]
            if isinstance(status, dict):
                missing = {
                    layer: why for layer, why in status.items() if why is not None
                }
                line = f"{site.name:24s} layers {sorted(set(status) - set(missing))}; not {sorted(missing)}: {next(iter(missing.values()))}"
            else:
                line = f"{site.name:24s} {'available' if status is None else 'unavailable: ' + status}"
        print(line)
    return 0


def _run(args: argparse.Namespace) -> int:
    from nnterp.errors import InvalidInputError
    from nnterp.plugins import get_registry
    from nnterp.standardized_transformer import StandardizedTransformer

    registry = get_registry()
    intervention = registry.interventions.get(args.name)
    if intervention is None:
        known = (
            ", ".join(sorted(registry.interventions))
            or "(none: install nnterp-interventions)"
        )
        raise InvalidInputError(
            f"no intervention named {args.name!r}; registered: {known} (see `nnterp plugins`)"
        )
    model = StandardizedTransformer(
        args.model,
        enable_attention_probs=args.attention_probs,
        **_hub_options(args.model),
    )
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


def _check_release(args: argparse.Namespace) -> int:
    from nnterp.testing.sweep import main as sweep_main

    args.all = not args.model_types
    args.class_names = args.model_names = None
    args.core = args.list_types = args.merge = args.no_header = False
    args.diff = args.against or ""
    return sweep_main(args)


def _doctor(args: argparse.Namespace) -> int:
    from nnterp.doctor import run

    return run(args)


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default=None, help="status file to write (default: none)"
    )
    parser.add_argument(
        "--jobs", type=positive_int, default=1, help="parallel worker processes (>= 1)"
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="do not record the results in the user-local status registry",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the plugins' commands added.

    Example:
        >>> build_parser().parse_args(["run_tests", "--model-types", "llama"]).model_types
        ['llama']
    """
    parser = _Parser(
        prog="nnterp", description="nnterp: standardized transformer internals"
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plugins = commands.add_parser(
        "plugins", help="list plugins and what each registers"
    )
    plugins.add_argument(
        "-v", "--verbose", action="store_true", help="list every model class"
    )
    plugins.set_defaults(handler=_plugins)

    sites = commands.add_parser(
        "sites", help="the standard activation sites, or what a model supports"
    )
    sites.add_argument(
        "--model", default=None, help="hub id or local directory: show its support"
    )
    sites.add_argument(
        "--model-type",
        default=None,
        help="a transformers model type, built tiny: show its support",
    )
    sites.add_argument(
        "--attention-probs",
        action="store_true",
        help="load with attention probabilities",
    )
    sites.set_defaults(handler=_sites)

    run = commands.add_parser("run", help="run a registered intervention on a model")
    run.add_argument("name", help="intervention name (see `nnterp plugins`)")
    run.add_argument("--model", required=True, help="hub id or local directory")
    run.add_argument(
        "--prompt", action="append", required=True, help="prompt (repeatable)"
    )
    run.add_argument(
        "--top-k", type=positive_int, default=5, help="tokens shown per row (>= 1)"
    )
    run.add_argument(
        "--attention-probs",
        action="store_true",
        help="load with attention probabilities",
    )
    run.set_defaults(handler=_run)

    tests = commands.add_parser(
        "run_tests",
        help="run the conformance checks, record them in the user-local status registry",
    )
    tests.add_argument(
        "--model-types",
        nargs="*",
        default=None,
        help="transformers model types (tiny configs)",
    )
    tests.add_argument(
        "--class-names", nargs="*", default=None, help="HF class names (tiny configs)"
    )
    tests.add_argument(
        "--model-names", nargs="*", default=None, help="hub ids or local directories"
    )
    tests.add_argument(
        "--all", action="store_true", help="every causal-LM model type in transformers"
    )
    tests.add_argument(
        "--core",
        action="store_true",
        help="the model types nnterp-core's own specs cover, with plugins disabled",
    )
    tests.add_argument(
        "--list-types", action="store_true", help="list the valid model types and exit"
    )
    _add_sweep_arguments(tests)
    tests.add_argument(
        "--merge",
        action="store_true",
        help="merge into an existing --output file (same results add their versions)",
    )
    tests.add_argument(
        "--diff",
        nargs="?",
        const="",
        default=None,
        metavar="STATUS_FILE",
        help="compare with the shipped registry (or STATUS_FILE); exit 1 if something regressed",
    )
    tests.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    tests.set_defaults(handler=_run_tests)

    release = commands.add_parser(
        "check-release",
        help="sweep every model type of the installed transformers and diff against the shipped registry",
    )
    release.add_argument(
        "--model-types",
        nargs="*",
        default=None,
        help="only these model types (default: all)",
    )
    release.add_argument(
        "--against",
        default=None,
        metavar="STATUS_FILE",
        help="compare with this status file instead of the shipped registry",
    )
    _add_sweep_arguments(release)
    release.set_defaults(handler=_check_release)

    doctor = commands.add_parser(
        "doctor", help="versions, plugins, status registry and caches, with problems"
    )
    doctor.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list the model types behind each count",
    )
    doctor.set_defaults(handler=_doctor)

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
    """Entry point of the ``nnterp`` console script: the exit status of the command.

    A failure prints one line on stderr, ``nnterp COMMAND: error: Type: message``, and returns
    1 (usage errors exit 2 through argparse); ``NNTERP_DEBUG=1`` re-raises instead.

    Example:
        >>> main(["run_tests", "--model-types", "nosuchtype"])
        nnterp run_tests: error: InvalidInputError: --model-types: 'nosuchtype' is not ...
        1
    """
    console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    where = f"nnterp {command}" if command else "nnterp"
    debug = os.environ.get(DEBUG_ENV_VAR, "").strip() not in ("", "0")
    # As the console script, warnings are one line too (in-process callers keep their filters).
    showing: AbstractContextManager[None] = (
        _one_line_warnings() if console else nullcontext()
    )
    with showing:
        try:
            args = build_parser().parse_args(argv)
            return int(args.handler(args) or 0)
        except KeyboardInterrupt:
            print(f"{where}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            if debug:
                raise
            from nnterp.errors import NnterpError

            hint = (
                ""
                if isinstance(error, (NnterpError, OSError))
                else f" (set {DEBUG_ENV_VAR}=1 for the traceback)"
            )
            print(f"{where}: error: {one_line(error)}{hint}", file=sys.stderr)
            return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
