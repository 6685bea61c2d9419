"""The step loop of ``htcnns train``: Adam, cosine annealing, random patches, deep supervision where the network
gives several outputs, fresh cases (``--refresh-every``), validation and checkpoints between steps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceCELoss
from tqdm import tqdm

from htcnns.training.checkpoint import Learner, Progress
from htcnns.training.config import TrainConfig
from htcnns.training.data import Sample, paired_patch, random_patch
from htcnns.training.networks import supervised_loss

log = logging.getLogger(__name__)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Hooks:
    """Optional work of the step loop: ``renew(k)`` makes the k-th fresh sample (``--refresh-every``),
    ``evaluate(network)`` gives validation Dice (``--validate-every``), ``checkpoint(progress)`` saves;
    ``teacher`` (``--thick-consistency``): the frozen starting network whose output on thin patches is a target."""

    renew: Callable[[int], Sample] | None = None
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
    checkpoint: Callable[[Progress], None] | None = None
    fixed: tuple[list[Sample], ...] = ()
    weights: tuple[float, ...] = ()
    teacher: torch.nn.Module | None = None


def pick_sample(rng: np.random.Generator, pools: list[list[Sample]], weights: tuple[float, ...]) -> Sample:
    """One training sample: a pool drawn with ``weights`` (one pool: no draw), then a case of it uniformly."""
    pools_and_weights = [(p, w) for p, w in zip(pools, weights or (1.0,), strict=True) if p and w > 0]
    if len(pools_and_weights) == 1:
        pool = pools_and_weights[0][0]
    else:
        shares = np.array([w for _, w in pools_and_weights])
        pool = pools_and_weights[rng.choice(len(shares), p=shares / shares.sum())][0]
    return pool[rng.integers(len(pool))]


def make_learner(network: torch.nn.Module, config: TrainConfig) -> Learner:
    """Adam over the trainable parameters, cosine annealing over ``config.steps``, the patch RNG seeded."""
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=config.learning_rate,
                                 weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    return Learner(network, optimizer, schedule, np.random.default_rng(config.seed))


def train_step(learner: Learner, pools: list[list[Sample]], config: TrainConfig, loss: Loss,
               weights: tuple[float, ...] = (), teacher: torch.nn.Module | None = None) -> float:
    """One optimiser step on a batch of random patches from ``pools`` (drawn with ``weights``); returns its loss.
    With a ``teacher`` the loss also scores the network's output on each patch against the teacher's on the same
    patch without thick slices (``--thick-consistency``, that term weighted ``config.thick_consistency``)."""
    draw = paired_patch if teacher is not None else random_patch
    patches = [draw(pick_sample(learner.rng, pools, weights), config.patch_size, learner.rng,
                    config.foreground_share, config.thick_slices) for _ in range(config.batch_size)]
    images, *thin, targets = (torch.from_numpy(np.stack(part)) for part in zip(*patches, strict=True))
    learner.optimizer.zero_grad(set_to_none=True)
    outputs = learner.network(images)
    value = supervised_loss(loss, outputs, targets)
    if teacher is not None:
        with torch.no_grad():
            agreed = torch.sigmoid(teacher(thin[0]))
        value = value + config.thick_consistency * supervised_loss(loss, outputs, agreed)
    value.backward()
    learner.optimizer.step()
    learner.schedule.step()
    return value.item()


def renewals_before(step: int, refresh_every: int) -> int:
    """How many fresh cases ``--refresh-every N`` has swapped in before ``step`` (one at steps N, 2N, ...)."""
    return (step - 1) // refresh_every if refresh_every > 0 and step > 0 else 0


def replay_renewals(samples: list[Sample], renew: Callable[[int], Sample] | None, done: int) -> list[Sample]:
    """The pool after ``done`` renewals (renewal k replaces slot k mod pool size); only the last ones are made."""
    pool = list(samples)
    if renew is not None:
        for k in range(max(0, done - len(pool)), done):
            pool[k % len(pool)] = renew(k)
    return pool


def run_steps(learner: Learner, samples: list[Sample], config: TrainConfig, progress: Progress,
              hooks: Hooks) -> Progress:
    """Train in place from ``progress.step`` to ``config.steps``; returns ``progress``, updated.

    With ``hooks.renew`` and ``config.refresh_every`` > 0, every ``refresh_every`` steps the oldest sample of the
    pool is replaced by ``renew(k)`` (k = 0, 1, ...), so training sees fresh generated cases; a resumed run
    replays the renewals before its first step. ``hooks.fixed`` adds pools that are never renewed (real cases);
    ``hooks.weights`` gives each pool's share of patches, ``samples`` first.
    """
    every = config.refresh_every
    samples = replay_renewals(samples, hooks.renew, renewals_before(progress.step, every))
    loss = DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    learner.network.train()
    bar = tqdm(range(progress.step, config.steps), initial=progress.step, total=config.steps,
               desc=f"train {config.architecture}", unit="step", disable=None)
    for step in bar:
        if hooks.renew is not None and every > 0 and step > 0 and step % every == 0:
            renewal = step // every - 1
            samples[renewal % len(samples)] = hooks.renew(renewal)
        pools = [samples, *hooks.fixed] if hooks.fixed else [samples]
        progress.losses.append(train_step(learner, pools, config, loss, hooks.weights, hooks.teacher))
        progress.step = step + 1
        recent = float(np.mean(progress.losses[-20:]))
        bar.set_postfix(loss=f"{recent:.3f}")
        if step % 50 == 0 or progress.step == config.steps:
            log.info("%s step %d/%d, loss %.4f", config.architecture, progress.step, config.steps, recent)
        after_step(learner, config, progress, hooks)
    return progress


def after_step(learner: Learner, config: TrainConfig, progress: Progress, hooks: Hooks) -> None:
    """Validate every ``validate_every`` steps (the last step's validation is the export's) and checkpoint every
    ``checkpoint_every`` steps and after the last."""
    every = config.validate_every
    if hooks.evaluate and every > 0 and progress.step % every == 0 and progress.step < config.steps:
        progress.evaluations.append({"step": progress.step, "dice": hooks.evaluate(learner.network.eval())})
        learner.network.train()
    every = config.checkpoint_every
    if hooks.checkpoint and every > 0 and (progress.step % every == 0 or progress.step == config.steps):
        hooks.checkpoint(progress)


def fit(network: torch.nn.Module, samples: list[Sample], config: TrainConfig,
        renew: Callable[[int], Sample] | None = None) -> list[float]:
    """Train in place from scratch, without checkpoints; returns the loss of every step (see ``run_steps``)."""
    return run_steps(make_learner(network, config), samples, config, Progress(), Hooks(renew=renew)).losses
