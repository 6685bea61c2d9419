"""The built image, run for real the way the organisers' harnesses run it (``make test-container``).

Needs a running dockerd, the image ``$HTCNNS_IMAGE`` (``make image-cpu`` builds ``htcnns:cpu``), a Python with the
real clients at ``$HTCNNS_CLIENTS_PYTHON`` (``brats``, ``mlcube``, ``mlcube-docker``) and the real cases of
``../shared/data``. Every output is compared with a host run of the same case by this checkout's ``htcnns``.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from htcnns.evaluation.native_sim import brats_space_images, simulate_native
from htcnns.inference.prepare import load_atlas

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
IMAGE = os.environ.get("HTCNNS_IMAGE", "htcnns:cpu")
CLIENTS = os.environ.get("HTCNNS_CLIENTS_PYTHON", "")
REAL = SHARED / "brats2023-gli-00001-000"
CASE = "BraTS-GLI-00001-000"
LABELLED = SHARED / "brats-real-labelled" / "BraTS-GLI-00000-000"
UID = "12345:12345"
#: a hospital's names and formats for the four native sequences
NATIVE_NAMES = {"t1c": "T1_post_gd.nrrd", "t1n": "t1.mha", "t2w": "T2.nii.gz", "t2f": "flair.nrrd"}

pytestmark = [
    pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True)
                       .returncode != 0, reason="no running dockerd"),
    pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data is absent"),
]


def docker_run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--network", "none", *args], capture_output=True, text=True,
                          timeout=timeout)


def labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def open_folder(path: Path) -> Path:
    """A folder any uid may write (the container runs as another uid than the test)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the real case GLI-00001 (its four images only) and a broken case (a truncated t1c)."""
    root = tmp_path_factory.mktemp("input")
    (root / CASE).mkdir()
    for image in REAL.glob(f"{CASE}-*.nii.gz"):
        shutil.copyfile(image, root / CASE / image.name)
    broken = root / "BraTS-GLI-99999-000"
    broken.mkdir()
    for image in REAL.glob(f"{CASE}-*.nii.gz"):
        shutil.copyfile(image, broken / image.name.replace(CASE, broken.name))
    t1c = broken / f"{broken.name}-t1c.nii.gz"
    t1c.write_bytes(t1c.read_bytes()[:50_000])
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def host_labels(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The same case segmented on the host by this checkout's htcnns (the reference for every image output)."""
    out = tmp_path_factory.mktemp("host")
    done = subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(inputs), "-o", str(out),
                           "--device", "cpu", "--no-report"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 1 and "BraTS-GLI-99999-000" in done.stderr, done.stderr
    return labels(out / f"{CASE}.nii.gz")


def test_docker_form_with_the_organisers_flags(inputs: Path, host_labels: np.ndarray, tmp_path: Path):
    out = open_folder(tmp_path / "out")
    done = docker_run("--read-only", "--user", UID, "-v", f"{inputs}:/input:ro", "-v", f"{out}:/output", IMAGE)
    assert done.returncode == 1, done.stderr  # one case broken, the other segmented
    assert "BraTS-GLI-99999-000" in done.stderr and "t1c" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{CASE}.nii.gz"]  # nothing but label maps
    assert np.array_equal(labels(out / f"{CASE}.nii.gz"), host_labels)
    assert nib.load(out / f"{CASE}.nii.gz").header.get_data_dtype() == np.uint8


def test_mlcube_form(inputs: Path, host_labels: np.ndarray, tmp_path: Path):
    out = open_folder(tmp_path / "out")
    done = docker_run("--read-only", "--user", UID, "-v", f"{inputs}:/mlcube_io0:ro", "-v", f"{out}:/mlcube_io2",
                      IMAGE, "infer", "--data_path=/mlcube_io0", "--output_path=/mlcube_io2")
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{CASE}.nii.gz"]
    assert np.array_equal(labels(out / f"{CASE}.nii.gz"), host_labels)


def test_unwritable_output_gets_container_advice(inputs: Path, tmp_path: Path):
    out = open_folder(tmp_path / "out")
    done = docker_run("--user", UID, "-v", f"{inputs}:/input:ro", "-v", f"{out}:/output:ro", IMAGE, timeout=120)
    assert done.returncode == 2 and "mount a writable host folder there" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def copies_of_the_real_case(root: Path, count: int) -> Path:
    """``count`` copies of the real case under their own ids (files copied: links out of the input are refused)."""
    for i in range(count):
        case = root / f"BraTS-GLI-0000{i}-001"
        case.mkdir(parents=True)
        for image in REAL.glob(f"{CASE}-*.nii.gz"):
            shutil.copyfile(image, case / image.name.replace(CASE, case.name))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_docker_stop_leaves_no_partial_file(tmp_path: Path):
    # three real cases (about 20 s each on this CPU): the stop at 20 s lands while a case is in the networks
    inputs = copies_of_the_real_case(tmp_path / "in", 3)
    out = open_folder(tmp_path / "out")
    name = f"htcnns-stop-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "none", "--read-only", "--user", UID,
                    "-v", f"{inputs}:/input:ro", "-v", f"{out}:/output", IMAGE], check=True, capture_output=True)
    try:
        time.sleep(20)  # weights verified and loaded; the cases are being segmented
        subprocess.run(["docker", "stop", "-t", "60", name], check=True, capture_output=True)
        state = json.loads(subprocess.run(["docker", "inspect", name], capture_output=True, text=True).stdout)
        assert state[0]["State"]["ExitCode"] == 143
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert "Traceback" not in logs
        cases = {f"{p.name}.nii.gz" for p in inputs.iterdir()}
        assert [p.name for p in out.iterdir() if p.name not in cases] == []  # no partial file
        assert len(list(out.iterdir())) < len(cases)  # it was stopped before the end
        assert all(labels(p).shape == (240, 240, 155) for p in out.iterdir())  # what is there is complete
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


@pytest.mark.skipif(not CLIENTS, reason="HTCNNS_CLIENTS_PYTHON (a Python with brats, mlcube, mlcube-docker) unset")
@pytest.mark.parametrize("year", [2025, 2023], ids=["orchestrator-docker-path", "orchestrator-mlcube-path"])
def test_brats_orchestrator(year: int, inputs: Path, host_labels: np.ndarray, tmp_path: Path):
    output = tmp_path / "result" / "seg.nii.gz"
    done = subprocess.run([CLIENTS, str(Path(__file__).with_name("orchestrator_client.py")), IMAGE, str(year),
                           str(inputs / CASE), str(output)], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert np.array_equal(labels(output), host_labels)


def mlcube_workspace(tmp_path: Path, inputs: Path) -> Path:
    """A copy of container/ with a workspace holding the real case (the MLCube client mounts workspace paths)."""
    cube = tmp_path / "container"
    shutil.copytree(ROOT / "container", cube, ignore=shutil.ignore_patterns("tests"))
    # mlcube 0.0.9 reads "-Pdocker.image=htcnns:cpu" as a cluster of short flags, whose "h" asks for help; so the
    # image is set in the copy's mlcube.yaml, as a user of the CPU image does
    config = (cube / "mlcube.yaml").read_text()
    (cube / "mlcube.yaml").write_text(config.replace("image: htcnns:0.1.0", f"image: {IMAGE}"))
    shutil.copytree(inputs / CASE, cube / "workspace" / "data" / CASE)
    for folder in ("workspace", "workspace/predictions"):
        (cube / folder).mkdir(exist_ok=True)
        os.chown(cube / folder, 12345, 12345)  # a user's workspace; MLCube starts the image as root
    return cube


@pytest.mark.skipif(not CLIENTS, reason="HTCNNS_CLIENTS_PYTHON (a Python with brats, mlcube, mlcube-docker) unset")
def test_mlcube_client_infer_then_evaluate(inputs: Path, host_labels: np.ndarray, tmp_path: Path):
    cube = mlcube_workspace(tmp_path, inputs)
    mlcube = [str(Path(CLIENTS).with_name("mlcube")), "run", f"--mlcube={cube / 'mlcube.yaml'}", "--platform=docker",
              "-Pplatform.accelerator_count=0"]
    done = subprocess.run([*mlcube, "--task=infer"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    predictions = cube / "workspace" / "predictions"
    assert np.array_equal(labels(predictions / f"{CASE}.nii.gz"), host_labels)
    assert (predictions / f"{CASE}.nii.gz").stat().st_uid == 12345  # written as the folder's owner, not root
    references = cube / "workspace" / "labels"
    references.mkdir()
    references.chmod(0o755)
    shutil.copyfile(REAL / "seg-BraTS23_1.nii.gz", references / f"{CASE}-seg.nii.gz")
    done = subprocess.run([*mlcube, "--task=evaluate"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((cube / "workspace" / "metrics.yaml").read_text())  # YAML in JSON syntax
    assert (cube / "workspace" / "metrics.yaml").stat().st_uid == 12345
    assert CASE in json.dumps(metrics) and "LesionWise_Score_Dice" in json.dumps(metrics)


@pytest.mark.skipif(not LABELLED.is_dir(), reason="no labelled real case")
def test_native_scans_with_preprocess(tmp_path: Path):
    """A simulated hospital case (skull on, its own grid per sequence) prepared and segmented in the image, the
    labels on its native T1c grid and as the host's."""
    atlas = load_atlas()
    truth = simulate_native(brats_space_images(LABELLED, atlas.head), atlas.head, atlas.brain, seed=5)
    case = tmp_path / "in" / "patient-a"
    case.mkdir(parents=True)
    for modality, image in truth.images.items():
        sitk.WriteImage(image, str(case / NATIVE_NAMES[modality]))
    for path in [tmp_path / "in", *(tmp_path / "in").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    host = tmp_path / "host"
    done = subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(tmp_path / "in"), "-o", str(host),
                           "--device", "cpu", "--no-report", "--no-qc", "--preprocess"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    out = open_folder(tmp_path / "out")
    done = docker_run("--read-only", "--user", UID, "-v", f"{tmp_path / 'in'}:/input:ro", "-v", f"{out}:/output",
                      IMAGE, "--preprocess")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["patient-a.nii.gz"]
    ours = sitk.ReadImage(str(out / "patient-a.nii.gz"))
    t1c = truth.images["t1c"]
    assert ours.GetSize() == t1c.GetSize()
    assert np.allclose(ours.GetOrigin(), t1c.GetOrigin(), atol=1e-3)
    assert np.allclose(ours.GetSpacing(), t1c.GetSpacing(), atol=1e-5)
    container_labels = sitk.GetArrayFromImage(ours)
    assert np.count_nonzero(container_labels) > 1000
    host_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(host / "patient-a.nii.gz")))
    assert np.mean(container_labels == host_labels) > 0.999
