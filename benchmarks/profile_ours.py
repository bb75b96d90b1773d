"""Profile nnterp's side of one benchmark, to see where a missed target's time goes.

    python benchmarks/profile_ours.py d            # load with validation, real model
    python benchmarks/profile_ours.py c --tiny     # logit lens on the tiny model
    python benchmarks/profile_ours.py a --repeats 50

Uses pyinstrument when it is installed (``pip install pyinstrument``), else cProfile.
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/profile_ours.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["a", "b", "c", "d"])
    parser.add_argument("--tiny", action="store_true", help="the tiny model instead of SmolLM2-135M")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(args.threads or harness.cpu_count())
    import workloads as w

    source = w.tiny_source() if args.tiny else w.real_source()
    if args.bench == "d":
        work = lambda: w.load_ours(source)
    else:
        model = w.load_ours(source)
        if args.bench == "a":
            work = lambda: w.last_token_all_layers_ours(model, w.SINGLE_PROMPT)
        elif args.bench == "b":
            prompts = w.mixed_prompts(w.load_tokenizer(source), 8 * w.BATCH_SIZE)
            work = lambda: w.collect_ours(model, prompts)
        else:
            work = lambda: w.logit_lens_ours(model, w.LENS_PROMPTS)
    work()
    gc.collect()
    try:
        from pyinstrument import Profiler
    except ImportError:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.repeats):
            work()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        return 0
    profiler = Profiler(interval=0.001)
    profiler.start()
    for _ in range(args.repeats):
        work()
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
