"""Native cases: which file or DICOM series of a case folder is which modality, and reading them as 3-D volumes.

A case folder holds one file (NIfTI, NRRD, MHA/MHD) or one DICOM series folder per modality, recognised by its
name or, for a DICOM folder whose name says nothing (``series_7``), by its series description; or a
``modalities.json`` beside them maps each modality to one (``{"t1c": "series_7", ...}``). Names are read as
scanners and PACS exports write them: ``T1_post_gd``, ``AX T1 +C``, ``t1_mprage_KM`` -> T1c; ``T1``, ``SAG T1 pre``
-> T1; ``T2``, ``t2_tse_tra`` -> T2 (not ``T2*`` / SWI); ``FLAIR``, ``t2_tirm_dark-fluid`` -> FLAIR (not
``T1 FLAIR``, a T1).
"""

from __future__ import annotations

import json
import locale
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from htcnns.errors import InputError
from htcnns.inference.dicom_slices import one_volume, slices_of
from htcnns.inference.validate import check_values
from htcnns.labels import MODALITIES

MAPPING_NAME = "modalities.json"
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
MIN_SLICES = 4
"""Fewer voxels than this along an axis cannot be registered (ITK's smoothing needs four): a localiser, a slab."""
_SUFFIX = re.compile("(" + "|".join(re.escape(s) for s in IMAGE_SUFFIXES) + ")$", re.I)
_WORDS = re.compile(r"[a-z0-9]+|[+*]")
_T1 = re.compile(r"t1[wn]?|mp2?rage|f?spgr|bravo|vibe")
_T1_CONTRAST = re.compile(r"t1w?(c|ce|gd|post|km)")
_CONTRAST = {"+", "c", "ce", "gd", "gad", "gado", "post", "postgd", "postcontrast", "contrast", "km", "enhanced"}
_NO_CONTRAST = {"pre", "precontrast", "nativ", "native", "noncontrast"}
_FLAIR = re.compile(r".*flair.*|t2f|tirm")
_T2 = re.compile(r"t2w?")
_NOT_T2 = {"*", "star", "t2star", "swi", "gre", "flash", "map"}


@dataclass(frozen=True)
class NativeCase:
    """One case of native scans: modality -> file or DICOM folder; ``series``: modality -> DICOM series UID where
    that folder holds several series; ``problem`` says why the case cannot run, or ""."""

    case_id: str
    sources: Mapping[str, Path] = field(default_factory=dict)
    problem: str = ""
    series: Mapping[str, str] = field(default_factory=dict)


def modality_of(name: str) -> str | None:
    """The modality a file, folder or series name stands for (``MODALITIES`` spelling), or None."""
    words = _WORDS.findall(_SUFFIX.sub("", name).lower())
    if any(_T1_CONTRAST.fullmatch(w) for w in words):
        return "t1c"
    if any(_T1.fullmatch(w) for w in words):
        return "t1c" if _CONTRAST.intersection(words) and not _NO_CONTRAST.intersection(words) else "t1n"
    if any(_FLAIR.fullmatch(w) for w in words) or {"dark", "fluid"} <= set(words):
        return "t2f"
    if any(_T2.fullmatch(w) for w in words) and not _NOT_T2.intersection(words):
        return "t2w"
    return None


@dataclass(frozen=True)
class Source:
    """A file or a DICOM series that may be a modality: ``name`` what messages call it; for a DICOM series its UID
    where its folder holds several (``series``; "" when the file or folder is one volume), its description (else
    protocol name) and its series number."""

    path: Path
    name: str
    series: str = ""
    description: str = ""
    number: str = ""


def series_tags(file: str) -> tuple[str, str]:
    """The series description (else the protocol name) and the series number of one DICOM file ("" if absent)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    with _gdcm_call():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return "", ""

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""
    return tag("0008|103e") or tag("0018|1030"), tag("0020|0011")


def dicom_series(holder: Path, case_folder: Path) -> list[Source]:
    """The DICOM series of the files in ``holder``, named by their path below ``case_folder`` and description."""
    name = holder.relative_to(case_folder).as_posix()
    with _gdcm_call():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(holder))
        files = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(holder), uid) for uid in uids}
    found = []
    for uid in uids:
        description, number = series_tags(files[uid][0])
        label = f"{name} ({description!r})" if description else name
        found.append(Source(holder, label, uid if len(uids) > 1 else "", description, number))
    return found


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:  # a folder, or not readable
        return False


def _dicom_holders(folder: Path, nested: bool) -> list[Path]:
    """The folders holding DICOM files: ``folder`` itself, or any below it when ``nested``."""
    return sorted({p.parent for p in (folder.rglob("*") if nested else folder.iterdir()) if _is_dicom(p)})


def _sources(folder: Path, nested: bool) -> Iterator[tuple[str | None, Source]]:
    """The image files of a case folder and its DICOM series (in the folder, its sub-folders, and at any depth,
    as PACS exports nest them, when ``nested``; unless ``nested``, a sub-folder holds one series), each with the
    modality its name, or else its series description, stands for."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            yield modality_of(path.name), Source(path, path.name)
        elif path.is_dir() and modality_of(path.name):
            if any(p.is_file() for p in path.iterdir()):
                yield modality_of(path.name), Source(path, path.name)
        elif path.is_dir():
            for holder in _dicom_holders(path, nested):
                if modality_of(holder.name):
                    yield modality_of(holder.name), Source(holder, holder.relative_to(folder).as_posix())
                else:
                    series = dicom_series(holder, folder)
                    if nested or len(series) == 1:  # else a sub-folder of mixed series is a case of its own
                        yield from ((modality_of(s.description), s) for s in series)
    if _dicom_holders(folder, nested=False):
        yield from ((modality_of(s.description), s) for s in dicom_series(folder, folder))


def native_case(folder: Path, nested: bool = True, mapping: Path | None = None) -> NativeCase:
    """The modality sources of one case folder, from its ``modalities.json`` (else ``mapping``, a run's) when
    there is one, else from the names and series descriptions (of DICOM series at any depth when ``nested``, else
    in its sub-folders only)."""
    mapping = folder / MAPPING_NAME if (folder / MAPPING_NAME).is_file() else mapping
    if mapping is not None:
        return _mapped_case(folder, mapping, nested)
    found: dict[str, list[Source]] = {}
    unknown: list[str] = []
    for modality, source in _sources(folder, nested):
        if modality:
            found.setdefault(modality, []).append(source)
        else:
            unknown.append(source.name)
    missing = [m for m in MODALITIES if m not in found]
    twice = [m for m, sources in found.items() if len(sources) > 1]
    if missing or twice:
        parts = [f"no {', '.join(missing)}"] if missing else []
        parts += [f"{m} twice ({', '.join(s.name for s in found[m])})" for m in twice]
        parts += [f"not recognised: {', '.join(unknown)}"] if unknown and missing else []
        return NativeCase(folder.name, problem=f"{'; '.join(parts)}: name each file or series folder by its "
                          f"modality or list them in {MAPPING_NAME}")
    return _case(folder.name, {m: found[m][0] for m in MODALITIES})


def _case(case_id: str, chosen: Mapping[str, Source]) -> NativeCase:
    return NativeCase(case_id, {m: s.path for m, s in chosen.items()},
                      series={m: s.series for m, s in chosen.items() if s.series})


def _mapped_case(folder: Path, mapping_file: Path, nested: bool) -> NativeCase:
    """A case as a ``modalities.json`` maps it: each modality to a file or folder of the case, or to the
    description or number of one DICOM series of it; or to a list of such names, the first found taken."""
    try:
        mapping = json.loads(mapping_file.read_text(encoding="utf-8"))
        names = {m: [mapping[m]] if isinstance(mapping[m], str) else list(mapping[m]) for m in MODALITIES}
        if not all(options and all(isinstance(n, str) for n in options) for options in names.values()):
            raise TypeError("each modality needs a name, or a list of names")
    except (ValueError, KeyError, TypeError) as error:
        return NativeCase(folder.name, problem=f"{MAPPING_NAME} must map each of {', '.join(MODALITIES)} to a "
                          f"file or folder of the case, a series description or number, or a list of them ({error})")
    listed: list[Source] | None = None
    chosen: dict[str, Source] = {}
    for modality, options in names.items():
        for name in (n.strip() for n in options):
            if name and (folder / name).exists():
                chosen[modality] = Source(folder / name, name)
                break
            listed = listed if listed is not None else [s for _, s in _sources(folder, nested)]
            matches = [s for s in listed if name.lower() in (s.description.lower(), s.number)]
            if len(matches) == 1:
                chosen[modality] = matches[0]
                break
    missing = [" or ".join(names[m]) for m in MODALITIES if m not in chosen]
    if missing:
        return NativeCase(folder.name, problem=f"{mapping_file.name} names {', '.join(missing)}, not found as a "
                          "file, a folder, or the description or number of exactly one DICOM series")
    return _case(folder.name, chosen)


def find_native_cases(root: Path) -> list[NativeCase]:
    """Every case folder under ``root``: ``root`` itself when it holds the images or their series folders, else
    its sub-folders, each mapped by its own ``modalities.json`` or else by the run's one in ``root``."""
    itself = native_case(root, nested=False)
    if itself.sources:
        return [itself]
    run_mapping = root / MAPPING_NAME if (root / MAPPING_NAME).is_file() else None
    return [native_case(folder, mapping=run_mapping) for folder in sorted(p for p in root.iterdir() if p.is_dir())]


@dataclass(frozen=True)
class NativeScan:
    """One modality as read: a float32 3-D image, and what was mended while reading it (e.g. missing DICOM slices
    filled in)."""

    image: sitk.Image
    warnings: tuple[str, ...] = ()


def read_native(path: Path, case_id: str, series: str = "") -> NativeScan:
    """One modality as a float32 3-D image: a file SimpleITK reads, or a DICOM series of a folder (``series``
    its UID; "" for the folder's only series) whose slices' positions make one volume (``dicom_slices``).

    Raises:
        InputError: unreadable, several DICOM series in one folder and none chosen, slices that make no single
            volume, or not one usable 3-D volume.
    """
    warning = ""
    with _read_errors(path, case_id):
        if path.is_dir():
            image, warning = _read_series(path, case_id, series)
        else:
            image = sitk.ReadImage(str(path))
    return NativeScan(_one_volume(image, path, case_id), (warning,) if warning else ())


@contextmanager
def _read_errors(path: Path, case_id: str) -> Iterator[None]:
    """ITK's errors while reading ``path`` as one clear InputError."""
    try:
        yield
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1][:200]
        raise InputError(f"{case_id}: cannot read {path.name} ({reason}); re-export it as NIfTI or DICOM") from None


def _read_series(path: Path, case_id: str, series: str) -> tuple[sitk.Image, str]:
    """The series as one volume its slices' tags agree with, and a warning ("" if none)."""
    with _gdcm_call():
        if not series:
            found = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if len(found) != 1:
                raise InputError(f"{case_id}: {path.name} holds {len(found)} DICOM series, not one; put each "
                                 f"series in its own folder or list them in {MAPPING_NAME}")
            series = found[0]
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
        image = reader.Execute()
    slices = slices_of(reader, len(files)) if len(files) > 1 and image.GetDimension() == 3 else None
    if slices is None or image.GetSize()[2] != len(files):  # one multi-frame file, or no positions to check
        return image, ""
    return one_volume(image, slices, case_id, path.name)


@contextmanager
def _gdcm_call() -> Iterator[None]:
    """A call into GDCM without its side effects: it switches the C locale to "C" while it reads, which would make
    Python's default text encoding ASCII for the rest of the run, so the locale is put back; ITK's warnings ("No
    Series were found" for a DICOMDIR, "Non uniform sampling") are not printed, ``dicom_slices`` says what is
    wrong instead."""
    saved = locale.setlocale(locale.LC_ALL)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _one_volume(image: sitk.Image, path: Path, case_id: str) -> sitk.Image:
    """``image`` as one float32 3-D volume (a trailing singleton fourth axis dropped), else an InputError: not 3-D,
    fewer than ``MIN_SLICES`` along an axis, NaN or infinite values, one value everywhere."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{case_id}: {path.name} is not one 3-D grey-value volume "
                         f"(size {image.GetSize()}, {image.GetNumberOfComponentsPerPixel()} components)")
    if min(image.GetSize()) < MIN_SLICES:
        raise InputError(f"{case_id}: {path.name} has only {min(image.GetSize())} slices (size {image.GetSize()}); "
                         f"at least {MIN_SLICES} are needed to register it: give the whole series, not a localiser")
    image = sitk.Cast(image, sitk.sitkFloat32)
    check_values(case_id, path.name, sitk.GetArrayViewFromImage(image))
    return image
