"""The container contract without Docker: the Dockerfile lints clean and pins what it should, and entrypoint.sh
runs the real CLI with the input read-only, HOME not writable, no network and a bare environment, in both
invocation forms (``/input`` -> ``/output`` and MLCube ``infer``), as root and as an unprivileged uid.

Root ignores permission bits, so read-only is made real with a read-only bind mount inside ``unshare -mn`` (which
also gives an empty network namespace); tests that need it skip, with the reason, where unshare does not work.
Argument handling and signal forwarding are checked with stand-ins for ``htcnns`` and ``python3`` (fast).
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import brain_volumes, write_case

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
CASES = ["BraTS-GLI-00002-000"]
SHAPE = (24, 28, 20)
NOBODY = 65534


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(VENV_BIN / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (make test installs it from requirements-dev.txt)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_torch_like_requirements_and_runs_unprivileged():
    dockerfile = (ROOT / "Dockerfile").read_text()
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.findall(r"torch==([\w.]+)", dockerfile) == re.findall(r"^torch==([\w.]+)$", requirements, re.M)
    assert re.search(r"^ARG BASE_IMAGE=nvidia/cuda:\d+\.\d+\.\d+-[\w-]*runtime-ubuntu\d+\.\d+$", dockerfile, re.M)
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert "--chmod" not in dockerfile  # COPY --chmod needs BuildKit; the legacy builder must build this file too
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!.venv" not in ignored  # the context is an allow-list: no .venv, no runs
    assert re.findall(r"^USER (\S+)$", dockerfile, re.M) == [f"{NOBODY}:{NOBODY}"]
    for variable in ("HOME", "TMPDIR", "MPLCONFIGDIR", "TORCH_HOME", "XDG_CACHE_HOME"):
        assert re.search(rf"^\s+{variable}=/tmp\S*", dockerfile, re.M), variable
    assert "org.opencontainers.image.licenses" in dockerfile and "COPY models" in dockerfile


def test_mlcube_infer_task_declares_what_the_entrypoint_reads():
    mlcube = (ROOT / "container" / "mlcube.yaml").read_text()
    assert re.search(r"^tasks:\n  infer:\n", mlcube, re.M)
    for parameter in ("data_path", "parameters_file", "output_path"):
        assert re.search(rf"^\s+{parameter}:", mlcube, re.M) and f"--{parameter}" in ENTRYPOINT.read_text()
    assert (ROOT / "container" / "workspace" / "parameters.yaml").is_file()


# --- the entrypoint's arguments, environment and signals, with stand-ins for htcnns and python3 ------------------

@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    """A PATH folder whose ``htcnns`` logs its arguments and environment, and whose ``python3`` sees no GPU."""
    folder = tmp_path / "stub-bin"
    folder.mkdir()
    (folder / "htcnns").write_text(
        "#!/bin/bash\n"
        f'{shlex.quote(sys.executable)} -c \'import json, os, sys; print(json.dumps({{"argv": sys.argv[1:], '
        '"env": dict(os.environ)}))\' "$@" >> "$STUB_LOG"\n'
        'if [ -n "${STUB_SLEEP:-}" ]; then trap \'kill $!; echo stopped >> "$STUB_LOG"; exit 143\' TERM; '
        "sleep 30 & wait; fi\n")
    (folder / "python3").write_text("#!/bin/bash\nexit 1\n")
    for name in ("htcnns", "python3"):
        (folder / name).chmod(0o755)
    return folder


def run_stub(stub_bin: Path, tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    log = tmp_path / "stub.log"
    log.unlink(missing_ok=True)
    base = {"PATH": f"{stub_bin}:/usr/bin:/bin", "STUB_LOG": str(log), "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", str(ENTRYPOINT), *args], env=base | env, capture_output=True, text=True,
                            timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


FORMS = [
    ((), {}, ["--input", "/input", "--output", "/output", "--no-report", "--no-qc"]),
    ((), {"HTCNNS_REPORT": "/r/report.json", "HTCNNS_QC": "/output/qc"},
     ["--input", "/input", "--output", "/output", "--report", "/r/report.json", "--qc", "/output/qc"]),
    (("--labels", "brats2021"), {"HTCNNS_INPUT": "/i", "HTCNNS_OUTPUT": "/o", "HTCNNS_REPORT": "none"},
     ["--input", "/i", "--output", "/o", "--no-report", "--no-qc", "--labels", "brats2021"]),
    (("infer", "--data_path=/mlcube_io0", "--output_path=/mlcube_io2", "--parameters_file=/mlcube_io3/p.yaml"), {},
     ["--input", "/mlcube_io0", "--output", "/mlcube_io2", "--no-report", "--no-qc"]),
    (("infer", "--data_path", "/d", "--output_path", "/o", "--report_path", "/r/report.json", "--overwrite"), {},
     ["--input", "/d", "--output", "/o", "--report", "/r/report.json", "--no-qc", "--overwrite"]),
]


@pytest.mark.parametrize(("args", "env", "expected"), FORMS,
                         ids=["default", "report-asked", "env-and-options", "mlcube-equals", "mlcube-spaces"])
def test_entrypoint_forms_become_one_segment_call(stub_bin: Path, tmp_path: Path, args, env, expected):
    result, calls = run_stub(stub_bin, tmp_path, *args, **env)
    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in calls] == [["segment", *expected]]
    assert "WARNING: no GPU visible; segmenting on the CPU" in result.stderr
    scratch = Path(calls[0]["env"]["TMPDIR"])
    assert scratch.parent == tmp_path and scratch.name.startswith("htcnns.") and not scratch.exists()
    for variable in ("HOME", "MPLCONFIGDIR", "TORCH_HOME", "XDG_CACHE_HOME"):
        assert calls[0]["env"][variable].startswith(str(scratch)), variable


def test_entrypoint_keeps_a_writable_home(stub_bin: Path, tmp_path: Path):
    _, calls = run_stub(stub_bin, tmp_path, HOME=str(tmp_path))
    assert calls[0]["env"]["HOME"] == str(tmp_path)


def test_unwritable_tmpdir_falls_back_to_dev_shm_and_a_nameless_uid_gets_a_user(stub_bin: Path, tmp_path: Path):
    result, calls = run_stub(stub_bin, tmp_path, TMPDIR="/nonexistent/tmp")  # docker run --read-only, no --tmpfs
    assert result.returncode == 0, result.stderr
    scratch = calls[0]["env"]["TMPDIR"]
    assert scratch.startswith("/dev/shm/htcnns.") and not Path(scratch).exists()  # removed on exit
    assert calls[0]["env"]["USER"] == "htcnns" == calls[0]["env"]["LOGNAME"]


def test_evaluate_form_becomes_one_evaluate_call(stub_bin: Path, tmp_path: Path):
    parameters = tmp_path / "parameters.yaml"
    parameters.write_text("# comment\nchallenge: 'BraTS-MET'\n")
    result, calls = run_stub(stub_bin, tmp_path, "evaluate", "--predictions=/p", "--labels", "/l",
                             "--output_path=/o/metrics.yaml", f"--parameters_file={parameters}")
    assert result.returncode == 0, result.stderr
    assert calls[0]["argv"] == ["evaluate", "--pred", "/p", "--ref", "/l", "--challenge", "BraTS-MET", "--json",
                                "/o/metrics.yaml"]
    assert "no GPU visible" not in result.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (("infer", "--output_path=/o"), {}, "ERROR infer needs --data_path=DIR"),
    (("infer", "--data_path=/d"), {}, "ERROR infer needs --output_path=DIR"),
    (("infer", "--data_path=/d", "--output_path"), {}, "ERROR --output_path needs a value"),
    (("evaluate", "--predictions=/p"), {}, "ERROR evaluate needs --predictions=DIR --labels=DIR"),
], ids=["no-data-path", "no-output-path", "missing-value", "evaluate-incomplete"])
def test_entrypoint_usage_errors_exit_2(stub_bin: Path, tmp_path: Path, args, env, message):
    result, calls = run_stub(stub_bin, tmp_path, *args, **env)
    assert result.returncode == 2 and calls == []
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_entrypoint_forwards_sigterm_and_cleans_its_scratch(stub_bin: Path, tmp_path: Path):
    log = tmp_path / "stub.log"
    env = {"PATH": f"{stub_bin}:/usr/bin:/bin", "STUB_LOG": str(log), "TMPDIR": str(tmp_path), "STUB_SLEEP": "1"}
    process = subprocess.Popen(["bash", str(ENTRYPOINT)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    assert log.read_text().splitlines()[-1] == "stopped"
    assert not list(tmp_path.glob("htcnns.*"))


# --- the real CLI through the entrypoint, contained --------------------------------------------------------------

def unshare_prefix() -> list[str]:
    """The unshare call giving new mount and network namespaces here, or skip with the reason."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    for prefix in (["unshare", "-mn"], ["unshare", "-rmn"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    pytest.skip("unshare -mn is not permitted here (no root and no user namespaces), so read-only and no-network "
                "cannot be made real")


def read_only_mounts(paths: list[Path]) -> str:
    return "".join(f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))} && "
                   f"mount -o remount,ro,bind {shlex.quote(str(p))} {shlex.quote(str(p))} && " for p in paths)


def run_contained(args: list[str], env: dict[str, str], read_only: list[Path]) -> subprocess.CompletedProcess:
    """entrypoint.sh in empty mount+network namespaces, ``read_only`` really read-only, only ``env`` set."""
    assignments = " ".join(shlex.quote(f"{key}={value}") for key, value in env.items())
    only_loopback = "[ \"$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\" = lo ] || exit 99; "
    script = (f"{read_only_mounts(read_only)}{only_loopback}"
              f"exec env -i {assignments} bash {shlex.quote(str(ENTRYPOINT))} {shlex.join(args)}")
    return subprocess.run([*unshare_prefix(), "bash", "-c", script], capture_output=True, text=True, timeout=300)


@pytest.fixture
def contract(tmp_path: Path, tiny_models: Path) -> dict[str, Path]:
    """Two cases in IN, an empty OUT, and a HOME folder (made read-only by the test)."""
    for number, case_id in enumerate(CASES):
        write_case(tmp_path / "in" / case_id, case_id, brain_volumes(SHAPE, seed=number))
    for name in ("out", "home"):
        (tmp_path / name).mkdir()
    return {"in": tmp_path / "in", "out": tmp_path / "out", "home": tmp_path / "home", "models": tiny_models}


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(folder.rglob("*"))}


def assert_contract_outputs(paths: dict[str, Path], owner: int, report: bool) -> None:
    names = sorted(p.name for p in paths["out"].iterdir())
    assert names == sorted([f"{c}.nii.gz" for c in CASES] + (["htcnns-report.json"] if report else []))
    for case_id in CASES:
        written = paths["out"] / f"{case_id}.nii.gz"
        source = nib.load(paths["in"] / case_id / f"{case_id}-t1c.nii.gz")
        image = nib.load(written)
        assert image.get_data_dtype() == np.uint8 and image.shape == source.shape
        assert np.allclose(image.affine, source.affine)
        assert int(image.header["sform_code"]) == int(source.header["sform_code"])
        assert set(np.unique(np.asarray(image.dataobj)).tolist()) <= {0, 1, 2, 3}
        assert written.stat().st_mode & 0o777 == 0o644 and written.stat().st_uid == owner


def bare_env(paths: dict[str, Path], path: str) -> dict[str, str]:
    return {"PATH": path, "HOME": str(paths["home"]), "HTCNNS_MODELS": str(paths["models"])}


def test_default_form_read_only_input_no_home_no_network_bare_env(contract: dict[str, Path]):
    before = snapshot(contract["in"])
    env = bare_env(contract, f"{VENV_BIN}:/usr/bin:/bin") | {
        "HTCNNS_INPUT": str(contract["in"]), "HTCNNS_OUTPUT": str(contract["out"])}
    result = run_contained([], env, read_only=[contract["in"], contract["home"]])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if not torch.cuda.is_available():
        assert "WARNING: no GPU visible; segmenting on the CPU" in result.stderr
    assert_contract_outputs(contract, os.getuid(), report=False)  # nothing but label maps unless asked
    assert snapshot(contract["in"]) == before and list(contract["home"].iterdir()) == []


def test_mlcube_form_read_only_input_no_home_no_network_bare_env(contract: dict[str, Path], tmp_path: Path):
    parameters = tmp_path / "params" / "parameters.yaml"
    parameters.parent.mkdir()
    parameters.write_text("{}\n")
    args = ["infer", f"--data_path={contract['in']}", "--output_path", str(contract["out"]),
            f"--parameters_file={parameters}"]
    result = run_contained(args, bare_env(contract, f"{VENV_BIN}:/usr/bin:/bin"),
                           read_only=[contract["in"], contract["home"], parameters.parent])
    assert result.returncode == 0, result.stderr
    assert_contract_outputs(contract, os.getuid(), report=False)  # the orchestrator loads every output file


# --- as an unprivileged uid ------------------------------------------------------------------------------------

@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder under /tmp that another uid can enter (pytest's tmp_path is mode 700)."""
    folder = Path(tempfile.mkdtemp(prefix="htcnns-uid-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def nobody_python(folder: Path) -> tuple[Path, str]:
    """A bin folder (python3, htcnns) and a PYTHONPATH with which uid 65534 can run htcnns, or skip with why.

    This interpreter lives under /root (mode 700), so the system's python of the same minor version is used,
    with this environment's site-packages and the package source on PYTHONPATH (the image has its own venv).
    """
    if os.getuid() != 0:
        pytest.skip(f"already running as uid {os.getuid()}: every test here is a non-root run")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed, so the uid cannot be changed")
    interpreter = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not interpreter.exists():
        pytest.skip(f"no {interpreter} that uid {NOBODY} could run (this one lives under /root, mode 700)")
    import htcnns

    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(Path(htcnns.__file__).parents[1])}
    pythonpath = ":".join(sorted(paths))
    bin_folder = folder / "bin"
    bin_folder.mkdir()
    (bin_folder / "python3").symlink_to(interpreter)
    (bin_folder / "htcnns").write_text('#!/bin/sh\nexec python3 -m htcnns.cli "$@"\n')
    (bin_folder / "htcnns").chmod(0o755)
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i",
                            f"PYTHONPATH={pythonpath}", str(interpreter), "-c", "import torch, monai, htcnns.cli"],
                           capture_output=True, text=True, cwd="/", timeout=120)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"uid {NOBODY} cannot import the packages with {interpreter}: {reason}")
    return bin_folder, pythonpath


def test_any_uid_read_only_input_unreachable_home_no_network(world_readable_dir: Path, tiny_models: Path):
    bin_folder, pythonpath = nobody_python(world_readable_dir)
    paths = {"in": world_readable_dir / "in", "out": world_readable_dir / "out", "home": Path("/root"),
             "models": world_readable_dir / "models"}
    for number, case_id in enumerate(CASES):
        write_case(paths["in"] / case_id, case_id, brain_volumes(SHAPE, seed=number))
    shutil.copytree(tiny_models, paths["models"])
    for path in [paths["models"], *paths["models"].rglob("*")]:  # pytest made them mode 700
        path.chmod(0o755 if path.is_dir() else 0o644)
    paths["out"].mkdir()
    os.chown(paths["out"], NOBODY, NOBODY)  # like `docker run --user uid:gid -v out:/output`: the caller's folder
    env = bare_env(paths, f"{bin_folder}:/usr/bin:/bin") | {
        "PYTHONPATH": pythonpath, "HTCNNS_INPUT": str(paths["in"]), "HTCNNS_OUTPUT": str(paths["out"])}
    assignments = [f"{key}={value}" for key, value in env.items()]
    network = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"]).returncode == 0 else []
    result = subprocess.run([*network, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                             "env", "-i", *assignments, "bash", str(ENTRYPOINT)],
                            capture_output=True, text=True, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr
    assert_contract_outputs(paths, NOBODY, report=False)
    touch = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "touch",
                            str(paths["in"] / "x")], capture_output=True)
    assert touch.returncode != 0  # the input really was read-only for this uid
