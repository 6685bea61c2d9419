"""The ``htcnns`` command: argparse -> library calls; user errors become one line on stderr, no traceback."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from htcnns import __version__
from htcnns.errors import HtcnnsError, InputError, SettingsError
from htcnns.inference.batch_page import INDEX_NAME
from htcnns.inference.fuse import FusionMethod
from htcnns.inference.interrupts import stop_on_signals
from htcnns.inference.pipeline import LabelConvention, Status
from htcnns.inference.predict import fast_inference_settings
from htcnns.inference.shards import Shard, parse_shard, shard_from_environment, write_merged
from htcnns.weights import BACKENDS

log = logging.getLogger("htcnns")

EXIT_OK, EXIT_CASE_FAILED, EXIT_USAGE = 0, 1, 2


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, quoting the bad value otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, cpu, cuda or cuda:N."""
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds > 0, quoting the bad value otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_segment_parser(commands: argparse._SubParsersAction) -> None:
    """``htcnns segment -i IN -o OUT``."""
    parser = commands.add_parser("segment", help="segment every BraTS case in a folder")
    parser.add_argument("-i", "--input", type=Path, required=True, help="folder of cases (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for <case-id>.nii.gz label maps")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder of model folders (default: $HTCNNS_MODELS or the bundled models/)")
    parser.add_argument("--device", type=device_name, default="auto",
                        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--fusion", choices=[m.value for m in FusionMethod], default=FusionMethod.STAPLE.value,
                        help="how the three models are fused (default: staple)")
    parser.add_argument("--labels", choices=[c.value for c in LabelConvention],
                        default=LabelConvention.BRATS2023.value,
                        help="output labels: brats2023 (1 NCR, 2 ED, 3 ET) or brats2021 (ET = 4)")
    parser.add_argument("--sw-batch-size", type=positive_int, default=None,
                        help="sliding windows per forward pass (default: 2 on the CPU; on a GPU as many as its free "
                             "memory holds)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="run the networks with torch or with ONNX Runtime (the model folders' verified ONNX "
                             "files; see docs/speed.md) (default: torch)")
    parser.add_argument("--case-timeout", type=positive_seconds, default=None, metavar="SECONDS",
                        help="fail a case that takes longer than this and go on with the next (default: no limit)")
    parser.add_argument("--overwrite", action="store_true",
                        help="segment every case again (default: keep outputs that exist and validate, so a rerun "
                             "resumes where an interrupted run stopped)")
    parser.add_argument("--report", type=Path, default=None, metavar="PATH",
                        help="where to write the JSON run report (default: OUT/htcnns-report.json)")
    parser.add_argument("--no-report", action="store_true", help="write no report file (the log still has each case)")
    parser.add_argument("--qc", type=Path, default=None, metavar="DIR",
                        help="folder for each case's QC picture and the batch's index.html and cases.csv "
                             "(default: OUT/qc)")
    parser.add_argument("--no-qc", action="store_true", help="write no QC pictures or page")
    parser.add_argument("--shard", type=shard_argument, default=None, metavar="i/N",
                        help="segment only shard i of N (0-based, by case id; default: from SLURM_ARRAY_TASK_ID / "
                             "JOB_COMPLETION_INDEX when set, else every case); see container/CLUSTERS.md")
    parser.add_argument("--strict-input", action="store_true",
                        help="refuse cases that do not look BraTS-preprocessed (thick or anisotropic voxels, a "
                             "field of view larger than the BraTS grid, the skull still on); default: warn")
    parser.add_argument("--oedema-opening", type=positive_int, default=0, metavar="R",
                        help="remove oedema thinner than a ball of R voxels (e.g. a false rim along the cortex) from "
                             "the fused map; not the paper's post-processing, off by default (docs/real-cases.md)")
    parser.add_argument("--mirror", action="store_true",
                        help="test-time mirroring: average each network over the image and its 7 mirror images "
                             "(nnU-Net's test-time augmentation; 8x the network time, for a GPU; off by default)")
    parser.add_argument("--preprocess", action="store_true",
                        help="the input is native scans (any grid per modality, skull on; NIfTI, NRRD, MHA or DICOM "
                             "series folders): bring each case to BraTS space first and write its label map on the "
                             "native T1c grid (docs/native-scans.md)")
    parser.add_argument("--keep-brats-space", type=Path, default=None, metavar="DIR",
                        help="with --preprocess: keep the BraTS-space images, brain masks, transforms and label "
                             "maps in DIR")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings and errors only")
    parser.set_defaults(run=run_segment)


def shard_argument(text: str) -> Shard:
    """argparse type: ``i/N`` (``htcnns.inference.shards.parse_shard``)."""
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def run_segment(args: argparse.Namespace) -> int:
    """Segment a folder; exit 0 only when every case succeeded (a kept valid output counts as success)."""
    from htcnns.api import Segmenter

    qc_dir = None if args.no_qc else (args.qc or args.output / "qc")
    try:
        shard = args.shard or shard_from_environment()
    except ValueError as error:  # the scheduler's variables are inconsistent
        raise SettingsError(f"cannot tell this job's shard: {error}") from error
    if args.keep_brats_space and not args.preprocess:
        raise SettingsError("--keep-brats-space needs --preprocess")
    segmenter = Segmenter(args.models, args.device, args.backend, args.fusion)
    options = dict(qc_dir=qc_dir, report_path=args.report, write_report=not args.no_report, shard=shard,
                   labels=LabelConvention(args.labels), sw_batch_size=args.sw_batch_size,
                   case_timeout=args.case_timeout, strict_input=args.strict_input,
                   oedema_opening=args.oedema_opening, mirror=args.mirror)
    if args.preprocess:
        results, report, _ = segmenter.segment_native_folder(
            args.input, args.output, brats_space_dir=args.keep_brats_space, overwrite=args.overwrite, **options)
    else:
        results, report = segmenter.segment_folder(args.input, args.output, overwrite=args.overwrite, **options)
    failed = sum(not r.ok for r in results)
    kept = sum(r.status is Status.SKIPPED for r in results)
    total = len(results)
    log.info("%d of %d cases segmented (%d kept from an earlier run) into %s", total - failed, total, kept,
             args.output)
    flagged = [r.case_id for r in results if r.extra.get("needs_review")]
    if flagged:
        log.info("%d case(s) flagged for review (the networks disagree): %s", len(flagged), ", ".join(flagged))
    if qc_dir is not None and results:
        log.info("QC pictures and the batch page: %s", qc_dir / INDEX_NAME)
    if report.error:
        log.error("the run report could not be written: %s", report.error)
    return EXIT_CASE_FAILED if failed or report.error else EXIT_OK


def add_report_parser(commands: argparse._SubParsersAction) -> None:
    """``htcnns report merge REPORT... -o MERGED``."""
    parser = commands.add_parser("report", help="work with run reports (merge the reports of shards)")
    actions = parser.add_subparsers(dest="action", required=True)
    merge = actions.add_parser("merge", help="join the reports of shards into one report (and one QC page)")
    merge.add_argument("reports", type=Path, nargs="+", help="htcnns-report.json files, one per shard")
    merge.add_argument("-o", "--output", type=Path, required=True, help="the merged report to write")
    merge.add_argument("--qc", type=Path, default=None, metavar="DIR",
                       help="also write index.html and cases.csv of every case into DIR")
    merge.set_defaults(run=run_report_merge)


def run_report_merge(args: argparse.Namespace) -> int:
    """Merge shard reports; say how many cases and which warnings."""
    try:
        merged = write_merged(args.reports, args.output, args.qc)
    except ValueError as error:
        raise InputError(str(error)) from error
    for warning in merged.get("warnings", []):
        log.warning("%s", warning)
    log.info("merged %d report(s), %d cases (%s) into %s", len(args.reports), len(merged["cases"]),
             ", ".join(f"{n} {status}" for status, n in merged["summary"].items() if n), args.output)
    return EXIT_OK


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """``htcnns demo``."""
    parser = commands.add_parser("demo", help="make a synthetic BraTS-like case, segment it and score it")
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="folder for the demo's files")
    parser.add_argument("--device", type=device_name, default="auto")
    parser.add_argument("--seed", type=int, default=2028,
                        help="phantom seed (default: 2028, a typical tumour unseen in training)")
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Make, segment and score the demo phantom; print Dice per region and the output path."""
    from htcnns.demo import run_demo_case

    report = run_demo_case(args.output, device=args.device, seed=args.seed)
    print(report)
    return EXIT_OK


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """``htcnns train``."""
    from htcnns.training.command import add_train_arguments

    parser = commands.add_parser("train",
                                 help="train one network on synthetic cases (phantoms or SynthSeg-style) and export it")
    add_train_arguments(parser)


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """``htcnns export``."""
    from htcnns.training.export import add_export_arguments

    add_export_arguments(commands.add_parser(
        "export", help="write training runs as a model folder for segment (one run, the best, or an ensemble)"))


def add_fuse_parser(commands: argparse._SubParsersAction) -> None:
    """``htcnns fuse``."""
    from htcnns.inference.fuse_command import add_fuse_arguments

    add_fuse_arguments(commands.add_parser("fuse", help="fuse the label maps of several algorithms (STAPLE)"))


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    """``htcnns evaluate``."""
    from htcnns.evaluation.evaluate import add_evaluate_arguments

    add_evaluate_arguments(commands.add_parser("evaluate", help="BraTS 2023 metrics of predictions vs references"))


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(prog="htcnns", description=__doc__)
    parser.add_argument("--version", action="version", version=f"htcnns {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks of failed cases")
    commands = parser.add_subparsers(dest="command", required=True)
    add_segment_parser(commands)
    add_report_parser(commands)
    add_demo_parser(commands)
    add_train_parser(commands)
    add_export_parser(commands)
    add_fuse_parser(commands)
    add_evaluate_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``htcnns`` console script."""
    fast_inference_settings()  # before torch starts its threads, so that they flush denormals too
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    stop_on_signals()
    try:
        return args.run(args)
    except HtcnnsError as error:
        log.error("%s", error)
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        log.error("stopped by %s; finished outputs are complete and no partial file was left",
                  signal.Signals(signum).name)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
