"""Run one fuzz target under atheris (coverage-guided, libFuzzer): `python fuzz/run.py TARGET`.

    python fuzz/run.py frames [--pure] [--runs N] [--max-time S] [-- libFuzzer options...]
    python fuzz/run.py handshake | http | live ...

TARGET is `frames`, `handshake`, `http` or `live` (the modules fuzz_TARGET.py beside this file);
`--pure` runs the frame parser on the pure-Python unmasking (TETHER_PURE_PYTHON=1), the
default on the C accelerator (which must then be built). tether is imported under
`atheris.instrument_imports`, so libFuzzer sees which of its branches an input reaches.

Inputs start from the seeds in fuzz/corpus/TARGET and the saved findings in
fuzz/crashers/TARGET (both read-only here); inputs that reach new code are kept in
build/fuzz/NAME/corpus, so a later run goes on from there. A failing input is written to
build/fuzz/NAME/crash-<sha1> (a hang over --timeout seconds to timeout-<sha1>) and the run
exits non-zero: fuzz/README.md says how it becomes a regression test.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("frames", "handshake", "http", "live")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--pure", action="store_true", help="pure-Python unmasking (frames)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs to run (default 1,000,000)")
    parser.add_argument("--max-time", type=int, default=0, help="stop after this many seconds (0: no limit)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--tolerate", action="append", default=[], metavar="TEXT",
                        help="a known, reported finding to step over so the run goes on: inputs whose "
                             "failure reads 'ExceptionName: message' starting with TEXT pass (counted)")
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser.epilog = "Options after -- go to libFuzzer (e.g. -- -dict=FILE -jobs=2)."
    args = parser.parse_args(argv)

    name = args.target + ("-pure" if args.pure else "")
    if args.pure:
        os.environ["TETHER_PURE_PYTHON"] = "1"
    else:
        os.environ.pop("TETHER_PURE_PYTHON", None)
    assert not any(m == "tether" or m.startswith("tether.") for m in sys.modules), "tether imported too early"

    try:
        import atheris
    except ModuleNotFoundError as exc:
        if exc.name != "atheris":
            raise
        sys.exit("fuzz: the fuzz targets need the atheris package: pip install 'tether[fuzz]'")

    # Refusals are logged at WARNING: answers, not findings (an ERROR is one), and not worth
    # a log record per input.
    logging.getLogger().setLevel(logging.ERROR)

    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["tether"]):
        from tether.protocol import masking
        target = __import__(f"fuzz_{args.target}")
    if args.pure == masking.ACCELERATED:
        sys.exit(f"fuzz: the {'pure-Python' if args.pure else 'C'} unmasking was asked for, but "
                 f"tether.protocol.masking.ACCELERATED is {masking.ACCELERATED}"
                 + ("" if args.pure else " (is the C accelerator built? `pip install -e .` builds it)"))

    work = ROOT / "build" / "fuzz" / name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / args.target
    crashers = HERE / "crashers" / args.target
    libfuzzer = [
        sys.argv[0], f"-runs={args.runs}", f"-max_len={target.MAX_LEN}", f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}", f"-max_total_time={args.max_time}",
        f"-artifact_prefix={work}/", "-print_final_stats=1", *extra,
        str(work / "corpus"), *(str(d) for d in (seeds, crashers) if d.is_dir()),
    ]
    print(f"fuzz: {name}: {args.runs} inputs, on {sys.version.split()[0]}, unmasking "
          f"{'C' if masking.ACCELERATED else 'pure Python'}", flush=True)

    tolerated = dict.fromkeys(args.tolerate, 0)
    if tolerated:
        atexit.register(lambda: print(f"fuzz: {name}: known findings stepped over: {tolerated}", flush=True))

    def test_one_input(data: bytes) -> None:
        try:
            target.check(data)
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            for text in tolerated:
                if failure.startswith(text):
                    tolerated[text] += 1
                    return
            raise

    atheris.Setup(libfuzzer, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
