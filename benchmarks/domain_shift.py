"""The paper's transfer-learning experiment in miniature, on synthetic domain shift
(``htcnns.training.synthseg.domains``).

For each target domain (paediatric-like, SSA-like) it trains networks on the same small set of target cases with
the same number of steps: each architecture fine-tuned from the source (adult) weights of ``--source``, and those
of ``--scratch-architectures`` also from random initialisation ("scratch", the baseline). It then scores, on
held-out target cases whose tumour shapes no network was trained on, each network alone and the STAPLE fusion of
each group of several, with the BraTS 2023 lesion-wise Dice and HD95 of the domain's challenge (PED, SSA). Every
number it prints is on synthetic data.

    python benchmarks/domain_shift.py --source models --output /tmp/domain-shift --steps 150 --cases 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from htcnns.evaluation.metrics import brats2023_metrics
from htcnns.inference.fuse import fuse_label_maps
from htcnns.inference.pipeline import model_labels
from htcnns.inference.predict import to_network_input
from htcnns.labels import REGIONS
from htcnns.training.data import prepare_phantom
from htcnns.training.synthseg import DOMAINS, default_data_root, generate, load_sources
from htcnns.weights import load_model

ARCHITECTURES = ("unet", "transbts", "axial_unet")
STARTS = ("scratch", "fine-tuned")
CHALLENGES = {"paediatric": "BraTS-PED", "ssa": "BraTS-SSA"}
TEST_SEED = 7_000_000


def train_command(args: argparse.Namespace, domain: str, start: str, architecture: str, folder: Path) -> list[str]:
    """The ``htcnns train`` command line of one network of the experiment."""
    command = [sys.executable, "-m", "htcnns.cli", "train", "--architecture", architecture, "--output", str(folder),
               "--data", "synthseg", "--atlas", str(args.data), "--domain", domain, "--steps", str(args.steps),
               "--phantoms", str(args.cases), "--refresh-every", "0", "--validation-phantoms", "1",
               "--checkpoint-every", "0", "--patch-size", str(args.patch_size), "--seed", str(args.seed),
               "--threads", str(args.threads)]
    if start == "fine-tuned":
        command += ["--init-from", str(args.source / architecture), "--learning-rate", str(args.fine_tune_lr)]
    return command


def train_all(args: argparse.Namespace, domain: str) -> dict[str, dict[str, Path]]:
    """Train (or reuse, when its manifest exists) every network of one domain; model folders per start and
    architecture (scratch: only ``--scratch-architectures``)."""
    chosen = {"scratch": args.scratch_architectures, "fine-tuned": ARCHITECTURES}
    folders: dict[str, dict[str, Path]] = {start: {} for start in STARTS}
    for start in STARTS:
        for architecture in chosen[start]:
            folder = args.output / domain / start / architecture
            if not (folder / "manifest.json").is_file():
                print(f"training {domain} {start} {architecture}", flush=True)
                subprocess.run(train_command(args, domain, start, architecture, folder), check=True)
            folders[start][architecture] = folder
    return folders


SCORES = ("Legacy_Dice", "Legacy_HD95", "LesionWise_Score_Dice", "LesionWise_Score_HD95", "Num_FP")
"""What is kept of the official metrics per region: whole-region and lesion-wise Dice and HD95, false-positive
lesions."""


def case_scores(predicted: np.ndarray, reference: np.ndarray, challenge: str) -> dict[str, list[float]]:
    """:data:`SCORES` per region of one case (1 mm isotropic grid)."""
    metrics = brats2023_metrics(predicted, reference, (1.0, 1.0, 1.0), challenge)
    return {r: [float(metrics[r][name]) for name in SCORES] for r in REGIONS}


def score_domain(args: argparse.Namespace, domain: str, folders: dict[str, dict[str, Path]]) -> dict[str, dict]:
    """Mean :data:`SCORES` per region of every network, and of the STAPLE fusion of each start's networks where
    it has several, over the test cases."""
    cpu = torch.device("cpu")
    models = {start: {a: load_model(folder, cpu) for a, folder in folders[start].items()} for start in STARTS}
    sources = load_sources(args.data, "validation")
    rows: dict[str, list[dict]] = {}
    for index in tqdm(range(args.test_cases), desc=f"{domain} test cases", unit="case", disable=None):
        case = generate(TEST_SEED + index, sources, DOMAINS[domain])
        prepared, reference = prepare_phantom(case)
        image = to_network_input(prepared.image, cpu)
        for start in STARTS:
            named = [(f"{start} {a}", model_labels(image, prepared, m)) for a, m in models[start].items()]
            if len(named) > 1:
                named.append((f"{start} STAPLE", fuse_label_maps([labels for _, labels in named])))
            for name, labels in named:
                rows.setdefault(name, []).append(case_scores(labels, reference, CHALLENGES[domain]))
    return {name: {r: np.mean([case[r] for case in cases], axis=0).tolist() for r in REGIONS}
            for name, cases in rows.items()}


def table(results: dict[str, dict[str, dict]], first: int, title: str) -> str:
    """Markdown: one row per domain and network, Dice / HD95 (``SCORES[first]``, ``SCORES[first + 1]``) per
    region and their mean, plus false-positive lesions per case."""
    lines = [f"| domain | network ({title}) | ET Dice / HD95 | TC Dice / HD95 | WT Dice / HD95 | mean Dice / HD95 "
             "| FP lesions ET / TC / WT |", "|---|---|---|---|---|---|---|"]
    for domain, rows in results.items():
        for name, regions in rows.items():
            cells = [f"{regions[r][first]:.3f} / {regions[r][first + 1]:.1f}" for r in ("ET", "TC", "WT")]
            dice = np.mean([regions[r][first] for r in REGIONS])
            hd95 = np.mean([regions[r][first + 1] for r in REGIONS])
            fp = " / ".join(f"{regions[r][4]:.1f}" for r in ("ET", "TC", "WT"))
            lines.append(f"| {domain} | {name} | {' | '.join(cells)} | {dice:.3f} / {hd95:.1f} | {fp} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Train the experiment's networks, score them, print a Markdown table and write results.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("models"), help="folder of the source model folders")
    parser.add_argument("--output", type=Path, required=True, help="folder for the trained networks and results")
    parser.add_argument("--data", type=Path, default=default_data_root(), help="the shared data folder")
    parser.add_argument("--domains", nargs="+", choices=sorted(CHALLENGES), default=sorted(CHALLENGES))
    parser.add_argument("--scratch-architectures", nargs="+", choices=ARCHITECTURES, default=ARCHITECTURES,
                        help="the networks also trained from scratch (the baseline)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--cases", type=int, default=6, help="target training cases (a small target set)")
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--fine-tune-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    results = {domain: score_domain(args, domain, train_all(args, domain)) for domain in args.domains}
    (args.output / "results.json").write_text(json.dumps({"scores": SCORES, "results": results}, indent=1))
    print(table(results, 0, "whole-region"))
    print(table(results, 2, "lesion-wise"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
