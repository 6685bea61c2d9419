"""Run an HT-CNNs image through the real BraTS orchestrator (``pip install brats``), as a registered algorithm.

    python orchestrator_client.py IMAGE YEAR CASE_FOLDER OUTPUT_FILE

YEAR 2025 takes the orchestrator's docker path (``/input`` -> ``/output``), YEAR 2023 its MLCube path (``infer
--data_path=/mlcube_io0 --output_path=/mlcube_io2``). The algorithm entry is written to a temporary YAML file in
the orchestrator's own format, under the key of a built-in algorithm so that its enum accepts it.
"""

import sys
import tempfile
from pathlib import Path

from brats.constants import AdultGliomaPreTreatmentAlgorithms
from brats.core.segmentation_algorithms import SegmentationAlgorithmWith4Modalities

ENTRY = """algorithms:
  BraTS23_1:
    meta:
      authors: HT-CNNs contributors
      paper: https://example.org/htcnns
      challenge: Adult Glioma Segmentation (Pre Treatment)
      challenge_manuscript: https://arxiv.org/abs/2107.02314
      rank: test
      year: {year}
    run_args:
      docker_image: {image}
      input_name_schema: "BraTS-GLI-{{id:05d}}-000"
      requires_root: false
      parameters_file: {parameters}
      cpu_compatible: true
      shm_size: "1gb"
"""


def main() -> int:
    image, year, case, output = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    with tempfile.TemporaryDirectory() as folder:
        algorithms = Path(folder) / "algorithms.yml"
        parameters = "true" if year <= 2024 else "false"
        algorithms.write_text(ENTRY.format(year=year, image=image, parameters=parameters))
        segmenter = SegmentationAlgorithmWith4Modalities(algorithm=AdultGliomaPreTreatmentAlgorithms.BraTS23_1,
                                                         algorithms_file_path=algorithms, force_cpu=True)
        files = {modality: next(case.glob(f"*-{modality}.nii.gz")) for modality in ("t1c", "t1n", "t2f", "t2w")}
        segmenter.infer_single(**files, output_file=output)
    return 0 if output.is_file() else 1


if __name__ == "__main__":
    sys.exit(main())
