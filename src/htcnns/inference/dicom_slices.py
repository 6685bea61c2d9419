"""A DICOM series read as one volume only where its slices make one.

ITK's series reader stacks the files of a series along the first slice's normal at their mean spacing, and at most
warns: two echoes at each position become one volume of half the spacing, a missing slice stretches every slice
after it, slices of several orientations (a localiser) or stacked obliquely (gantry tilt) are put where they are
not. Here each slice's own position and orientation (``0020|0032``, ``0020|0037``) are checked against the grid ITK
made: a few missing slices are filled in from their neighbours (with a warning), anything else is one clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from htcnns.errors import InputError

STEP_TOLERANCE = 0.1
"""Largest departure of a slice step from the series' usual step, as a fraction of it, taken as even."""
MAX_FILLED_STEPS = 3
"""The widest gap filled in, in slice steps (two slices missing in a row); a wider one is refused."""
MAX_TILT_DEGREES = 0.5
"""Largest angle between the slices' stacking direction and their normal taken as no tilt."""
SAME_POSITION_MM = 0.05
"""Slices closer than this along the normal are at one position."""
ORIENTATION_TOLERANCE = 1e-3
POSITION = "0020|0032"
ORIENTATION = "0020|0037"
ECHO = "0018|0086"


@dataclass(frozen=True)
class Slices:
    """Per file of a series, in the reader's order: its position (mm), orientation (six direction cosines) and
    echo number ("" if absent)."""

    positions: np.ndarray
    orientations: np.ndarray
    echoes: tuple[str, ...]


def slices_of(reader: sitk.ImageSeriesReader, count: int) -> Slices | None:
    """The slice tags ``reader`` read (after ``Execute``, with ``MetaDataDictionaryArrayUpdateOn``); None when a file
    lacks its position or orientation (nothing to check against)."""
    positions, orientations, echoes = [], [], []
    for index in range(count):
        if not (reader.HasMetaDataKey(index, POSITION) and reader.HasMetaDataKey(index, ORIENTATION)):
            return None
        try:
            positions.append([float(v) for v in reader.GetMetaData(index, POSITION).split("\\")[:3]])
            orientations.append([float(v) for v in reader.GetMetaData(index, ORIENTATION).split("\\")[:6]])
        except ValueError:
            return None
        echoes.append(reader.GetMetaData(index, ECHO).strip() if reader.HasMetaDataKey(index, ECHO) else "")
    if any(len(p) != 3 for p in positions) or any(len(o) != 6 for o in orientations):
        return None
    return Slices(np.array(positions), np.array(orientations), tuple(echoes))


def one_volume(image: sitk.Image, slices: Slices, case_id: str, name: str) -> tuple[sitk.Image, str]:
    """``image`` (one file per slice, as read; ``name`` the series' folder) on a grid its slices' tags agree with,
    and a warning ("" if none).

    Raises:
        InputError: several orientations, several slices at one position, slices stacked obliquely, or unevenly
            spaced beyond a few missing slices.
    """
    named = f"{case_id}: {name}"
    if np.abs(slices.orientations - slices.orientations[0]).max() > ORIENTATION_TOLERANCE:
        count = len(np.unique(slices.orientations.round(3), axis=0))
        raise InputError(f"{named} holds slices in {count} orientations (a localiser?); give a series of one stack "
                         "of parallel slices")
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    depths = (slices.positions - slices.positions[0]) @ normal
    order = np.argsort(depths, kind="stable")
    depths, positions = depths[order], slices.positions[order]
    _refuse_repeated_positions(depths, [slices.echoes[i] for i in order], named)
    _refuse_tilt(positions, depths, normal, named)
    steps = np.diff(depths)
    step = float(np.median(steps))
    if np.abs(steps - step).max() <= STEP_TOLERANCE * step and np.array_equal(order, np.arange(len(order))):
        return image, ""
    array = _evenly_spaced(sitk.GetArrayFromImage(image)[order], steps, step, named)
    even = sitk.GetImageFromArray(array)
    even.SetSpacing((*image.GetSpacing()[:2], step))
    even.SetDirection(image.GetDirection())
    even.SetOrigin(tuple(float(v) for v in positions[0]))
    missing = len(array) - len(depths)
    if not missing:
        return even, ""
    widest = int(np.argmax(steps))
    return even, (f"{name}: {missing} slice(s) missing (the widest gap {steps[widest]:.1f} mm, after slice "
                  f"{widest + 1} of {len(depths)}); filled in from their neighbours")


def _refuse_repeated_positions(depths: np.ndarray, echoes: Sequence[str], name: str) -> None:
    """An InputError when two slices share a position along the normal (``depths``, sorted), naming the echoes."""
    repeated = int((np.diff(depths) < SAME_POSITION_MM).sum())
    if not repeated:
        return
    kinds = sorted(set(echoes) - {""}, key=lambda e: (len(e), e))
    held = f" (echo numbers {', '.join(kinds)})" if len(kinds) > 1 else ""
    raise InputError(f"{name} holds {len(depths)} slices at only {len(depths) - repeated} positions{held}: several "
                     "echoes or repetitions in one series; export the one to use as a series of its own")


def _refuse_tilt(positions: np.ndarray, depths: np.ndarray, normal: np.ndarray, name: str) -> None:
    """An InputError when the first and last slices are offset sideways to their ``normal`` (a gantry tilt)."""
    span = positions[-1] - positions[0]
    sideways = float(np.linalg.norm(span - (span @ normal) * normal))
    tilt = float(np.degrees(np.arctan2(sideways, depths[-1] - depths[0])))
    if tilt > MAX_TILT_DEGREES:
        raise InputError(f"{name}: its slices are stacked {tilt:.1f} deg off their normal (gantry tilt); "
                         "re-export it with the tilt corrected, e.g. by dcm2niix, as NIfTI")


def _evenly_spaced(array: np.ndarray, steps: np.ndarray, step: float, named: str) -> np.ndarray:
    """The slices of ``array`` (z, y, x; sorted along the normal, ``steps`` mm apart) every ``step`` mm, missing
    ones linear between their neighbours, where every gap is a whole number of steps up to ``MAX_FILLED_STEPS``;
    else an InputError."""
    gaps = steps / step
    if (np.abs(gaps - gaps.round()) > STEP_TOLERANCE).any() or gaps.max() > MAX_FILLED_STEPS + STEP_TOLERANCE:
        raise InputError(f"{named}: its slices are unevenly spaced ({steps.min():.2f} to {steps.max():.2f} mm "
                         f"apart; usually {step:.2f}); re-export the whole series")
    index = np.concatenate([[0], np.cumsum(gaps.round())])  # each slice's place on the even grid
    targets = np.arange(index[-1] + 1)
    upper = np.clip(np.searchsorted(index, targets, side="right"), 1, len(index) - 1)
    weight = (targets - index[upper - 1]) / (index[upper] - index[upper - 1])  # 0 or 1 exactly at a slice
    array = array.astype(np.float32)
    return ((1 - weight)[:, None, None] * array[upper - 1] + weight[:, None, None] * array[upper]).astype(np.float32)
