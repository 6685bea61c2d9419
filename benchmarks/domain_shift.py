"""The paper's transfer-learning experiment in miniature, on synthetic domain shift (``htcnns.synthseg.domains``).

For each target domain (paediatric-like, SSA-like) and each architecture it trains two networks on the same small
set of target cases with the same number of steps: one from random initialisation ("scratch"), one fine-tuned from
the source (adult) weights of ``--source``. It then scores, on held-out target cases whose tumour shapes no
network was trained on, each network alone and the STAPLE fusion of the three scratch and of the three
fine-tuned networks, with the BraTS 2023 lesion-wise Dice and HD95 of the domain's challenge (PED, SSA). Every
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

from htcnns.fuse import fuse_label_maps
from htcnns.labels import REGIONS
from htcnns.metrics import brats2023_metrics
from htcnns.pipeline import model_labels
from htcnns.predict import to_network_input
from htcnns.synthseg import DOMAINS, default_data_root, generate, load_sources
from htcnns.training.data import prepare_phantom
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


def train_all(args: argparse.Namespace, domain: str) -> dict[str, list[Path]]:
    """Train (or reuse, when its manifest exists) every network of one domain; returns model folders per start."""
    folders: dict[str, list[Path]] = {start: [] for start in STARTS}
    for start in STARTS:
        for architecture in ARCHITECTURES:
            folder = args.output / domain / start / architecture
            if not (folder / "manifest.json").is_file():
                print(f"training {domain} {start} {architecture}", flush=True)
                subprocess.run(train_command(args, domain, start, architecture, folder), check=True)
            folders[start].append(folder)
    return folders


def lesion_scores(predicted: np.ndarray, reference: np.ndarray, challenge: str) -> dict[str, tuple[float, float]]:
    """(lesion-wise Dice, lesion-wise HD95 mm) per region of one case (1 mm isotropic grid)."""
    metrics = brats2023_metrics(predicted, reference, (1.0, 1.0, 1.0), challenge)
    return {r: (metrics[r]["LesionWise_Score_Dice"], metrics[r]["LesionWise_Score_HD95"]) for r in REGIONS}


def score_domain(args: argparse.Namespace, domain: str, folders: dict[str, list[Path]]) -> dict[str, dict]:
    """Mean lesion-wise Dice and HD95 per region of every network and both STAPLE fusions on the test cases."""
    cpu = torch.device("cpu")
    models = {start: [load_model(folder, cpu) for folder in folders[start]] for start in STARTS}
    sources = load_sources(args.data, "validation")
    rows: dict[str, list[dict]] = {}
    for index in tqdm(range(args.test_cases), desc=f"{domain} test cases", unit="case", disable=None):
        case = generate(TEST_SEED + index, sources, DOMAINS[domain])
        prepared, reference = prepare_phantom(case)
        image = to_network_input(prepared.image, torch.device("cpu"))
        for start in STARTS:
            maps = [model_labels(image, prepared, model) for model in models[start]]
            named = [(f"{start} {a}", m) for a, m in zip(ARCHITECTURES, maps, strict=True)]
            for name, labels in [*named, (f"{start} STAPLE", fuse_label_maps(maps))]:
                rows.setdefault(name, []).append(lesion_scores(labels, reference, CHALLENGES[domain]))
    return {name: {r: [float(np.mean([c[r][k] for c in cases])) for k in (0, 1)] for r in REGIONS}
            for name, cases in rows.items()}


def table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per domain and network, Dice and HD95 per region and their mean."""
    lines = ["| domain | network | ET Dice / HD95 | TC Dice / HD95 | WT Dice / HD95 | mean Dice / HD95 |",
             "|---|---|---|---|---|---|"]
    for domain, rows in results.items():
        for name, regions in rows.items():
            cells = [f"{regions[r][0]:.3f} / {regions[r][1]:.1f}" for r in ("ET", "TC", "WT")]
            dice = np.mean([regions[r][0] for r in REGIONS])
            hd95 = np.mean([regions[r][1] for r in REGIONS])
            lines.append(f"| {domain} | {name} | {' | '.join(cells)} | {dice:.3f} / {hd95:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Train the experiment's networks, score them, print a Markdown table and write results.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("models"), help="folder of the source model folders")
    parser.add_argument("--output", type=Path, required=True, help="folder for the trained networks and results")
    parser.add_argument("--data", type=Path, default=default_data_root(), help="the shared data folder")
    parser.add_argument("--domains", nargs="+", choices=sorted(CHALLENGES), default=sorted(CHALLENGES))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--cases", type=int, default=6, help="target training cases (a small target set)")
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--fine-tune-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    results = {domain: score_domain(args, domain, train_all(args, domain)) for domain in args.domains}
    (args.output / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
