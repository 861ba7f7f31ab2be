"""Behaviour cloning of the reference VLA on demonstrations (``dysl_train bc``).

L1 regression of the action chunk (as OpenVLA-OFT), AdamW with a linear warm-up then cosine decay,
bf16 autocast on CUDA. ``--scene-loss-weight w`` adds an auxiliary loss: training-only heads regress
where the hand, the object and the goal are (Meta-World's state, recorded with the demos) from the
vision tokens and from the action queries after the last layer, so the policy learns to localise
from position labels, not only from the action error. The heads are dropped: the served model is
unchanged.

``--skip-loss-weight w`` trains the backbone to tolerate skipping, as large pretrained VLAs do without
being asked (the redundancy DySL exploits; a 5 M-parameter stack trained densely has little): each
step also computes the chunk with layers i..L-2 left out (layer i's input goes straight to the last
layer), i drawn uniformly from ``--skip-min-layer``..``--skip-max-layer`` (default L-2), and adds w
times its L1 error. It reuses the
dense pass's x_i, so it costs one layer and the head. Early-exit and layer-dropout training (LayerDrop,
LayerSkip) do the same for language models. With ``--skip-adapters`` the skipped chunk goes through
a training-only adapter per exit (DySL's architecture, zero-initialised) before the last layer: the
backbone learns to be summarised by an adapter rather than to make the skipped layers unnecessary.
With ``--skip-loss-smooth-share S`` the skip loss counts only the share S of each batch's frames
whose target chunk moves most smoothly (lowest mean step between consecutive actions): the paper's
premise (Section 3.2) is that skipping is cheap on smooth motion and costly where continuity
breaks (grasping, releasing); this asks the backbone for exactly that, so that where to skip matters.

Launched with ``torchrun`` it trains data-parallel (DDP): every rank reads the same demos, a
DistributedSampler splits them, and only rank 0 logs and writes the model.

    dysl_train bc --demos data/demos --out models/reference --steps 20000 --batch-size 256 --lr 3e-4
    torchrun --nproc-per-node 4 -m dysl_ros.tools.train bc ...        # same, on 4 GPUs

Every checkpoint also keeps ``train_state.pt`` (weights, optimiser, schedule) until the last step, so
an interrupted run goes on with ``--resume``; ``--time-limit-s T`` stops cleanly after T seconds
(exit code 4) for machines that only allow short commands. ``--init-from DIR`` starts from a trained
model's weights (its architecture too) with a fresh optimiser and schedule: a second, lower learning
rate phase, or fine-tuning on new demonstrations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, TextIO

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dysl_ros.core.config import ConfigError
from dysl_ros.model.checkpoint import ModelDirError, load_bundle, save_model
from dysl_ros.model.reference_vla import ReferenceVLA
from dysl_ros.model.skip_modules import Adapter, SkipModuleConfig
from dysl_ros.model.spec import VLAConfig
from dysl_ros.params import from_flags
from dysl_ros.training import dataset as data
from dysl_ros.training.dataset import Batch, ChunkDataset, EpisodeLike
from dysl_ros.training.demos import load_demo_dirs
from dysl_ros.training.settings import BCSettings

LOG_FILE = "train_log.jsonl"
PROVENANCE_FILE = "train_args.json"
STATE_FILE = "train_state.pt"
INCOMPLETE_EXIT_CODE = 4
"""``dysl_train bc --time-limit-s`` stopped before the last step; ``--resume`` continues."""
MIN_LR_RATIO = 0.1
"""The cosine decays to this fraction of the peak learning rate, not to zero: the last steps still learn."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch sees no CUDA device")
    return device


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int) -> LambdaLR:
    """Linear warm-up to the peak, then cosine decay to ``MIN_LR_RATIO`` of it at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def adamw(params: Sequence[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Decay matrices only: decaying norm gains and biases pulls them to zero for no regularisation gain."""
    decay = [p for _, p in params if p.requires_grad and p.ndim >= 2]
    rest = [p for _, p in params if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def autocast(device: torch.device) -> torch.autocast:
    """bf16 on CUDA (no loss scaling needed); a no-op context on the CPU, where tests want fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean |pred - target| over real (unpadded) chunk entries; computed in fp32."""
    error = (pred.float() - target.float()).abs() * mask.unsqueeze(-1)
    return error.sum() / (mask.sum() * pred.shape[-1]).clamp_min(1.0)


def chunk_roughness(actions: Tensor, mask: Tensor) -> Tensor:
    """Per frame, the mean L2 step between consecutive real actions of its target chunk (B,):
    the opposite of the trajectory continuity of Eq. 1, over the chunk ahead; 0 for fewer than two
    real actions."""
    steps = (actions[:, 1:].float() - actions[:, :-1].float()).norm(dim=-1)
    pairs = (mask[:, 1:] * mask[:, :-1]).float()
    return (steps * pairs).sum(dim=1) / pairs.sum(dim=1).clamp_min(1.0)


def smoothest_frames(actions: Tensor, mask: Tensor, share: float) -> Tensor:
    """Boolean (B,): the ceil(share * B) frames of the batch with the smoothest target chunks
    (lowest ``chunk_roughness``; ties by position)."""
    roughness = chunk_roughness(actions, mask)
    count = max(1, math.ceil(share * roughness.shape[0]))
    keep = torch.zeros(roughness.shape[0], dtype=torch.bool, device=roughness.device)
    keep[torch.argsort(roughness, stable=True)[:count]] = True
    return keep


def random_shift(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """DrQ-style augmentation: shift each image by up to ``pad`` pixels (edges replicated).

    Applied after preprocessing, so serving still sees exactly the unaugmented tensors."""
    if pad <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(images.device)
    rows = (shifts[:, 0, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (shifts[:, 1, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


@dataclass(frozen=True)
class DistributedEnv:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool
    """This call initialised the process group, so it also tears it down."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistributedEnv:
    """Single process, or one rank of a ``torchrun`` launch (WORLD_SIZE / RANK / LOCAL_RANK set)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedEnv(0, 1, resolve_device(device), owns_group=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device)
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return DistributedEnv(dist.get_rank(), dist.get_world_size(), target, owns_group=owns)


class SceneHeads(nn.Module):
    """Training-only readouts of where the hand, the object and the goal are (standardised xyz, 9
    values), from two places: the vision tokens after the embedding, and the action-query tokens
    after the last layer. The first teaches the stem to localise; the second makes the backbone
    carry those positions to the tokens the action head reads: with the first alone, the stem
    localised to about a centimetre while the policy still regressed the mean action, ignoring it."""

    def __init__(self, config: VLAConfig, outputs: int = len(data.SCENE_STATE_COLUMNS), hidden: int = 256) -> None:
        super().__init__()
        self.vision_tokens = config.vision_tokens
        self.chunk_len = config.chunk_len

        def readout(tokens: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Flatten(), nn.Linear(tokens * config.hidden_size, hidden), nn.SiLU(), nn.Linear(hidden, outputs)
            )

        self.from_vision = readout(config.vision_tokens)
        self.from_queries = readout(config.chunk_len)

    def forward(self, embedded: Tensor, final: Tensor) -> Tensor:
        """(B, 2, outputs): row 0 read from the vision tokens, row 1 from the action queries."""
        return torch.stack(
            [self.from_vision(embedded[:, : self.vision_tokens]), self.from_queries(final[:, -self.chunk_len :])], dim=1
        )


class _BCNet(nn.Module):
    """The policy plus the optional scene heads, as one module so DDP sees a single forward."""

    def __init__(
        self, model: ReferenceVLA, scene_heads: SceneHeads | None, exit_adapters: Mapping[int, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.scene_heads = scene_heads
        self.exit_adapters = nn.ModuleDict({str(i): a for i, a in (exit_adapters or {}).items()})

    def forward(
        self, image: Tensor, instruction: Tensor, proprio: Tensor, skip_from: int | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(chunk, scene readouts or None, chunk with layers skip_from..L-2 skipped or None)."""
        embedded = x = self.model.embed(image, instruction, proprio)
        layers = self.model.layers
        skipped = None
        for index, layer in enumerate(layers):
            if index == skip_from:
                adapter = self.exit_adapters[str(index)] if str(index) in self.exit_adapters else None
                skipped = self.model.head(layers[-1](x if adapter is None else adapter(x)))
            x = layer(x)
        scene = self.scene_heads(embedded, x) if self.scene_heads is not None else None
        return self.model.head(x), scene, skipped


def train_bc(
    episodes: Sequence[EpisodeLike], config: VLAConfig, settings: BCSettings, out_dir: str | Path | None = None
) -> ReferenceVLA:
    """Train a ReferenceVLA (from scratch, or from ``settings.init_from``'s weights); returns it
    (rank 0's copy under DDP) in eval mode.

    ``settings.batch_size`` is the global batch (split over DDP ranks), so a run's result does not
    depend on the number of GPUs. The fitted normalisation goes into the model's VLAConfig. With
    ``out_dir``, rank 0 writes the model (fp16 safetensors) every ``checkpoint_every`` steps and at
    the end, plus ``train_log.jsonl`` and ``train_args.json`` (how the model was made).

    ``time_limit_s`` stops after that much training time with a checkpoint plus ``train_state.pt``
    (weights, optimiser, schedule); ``resume`` continues from it. Machines that allow only short
    commands train the reference model that way; ``train_state.pt`` is deleted once all steps ran.

    ``init_from``: a model directory (``dysl_train bc --out``) whose weights start this run; its
    architecture must equal ``config``'s (``init_config_model`` reads it). Optimiser and schedule start afresh.

    ``scene_loss_weight`` > 0: add that times the mean L1 error of ``SceneHeads`` on the
    standardised scene targets (every episode must record ``states``).

    ``skip_loss_weight`` > 0: add that times the L1 error of the chunk computed with layers
    i..L-2 skipped, i uniform in ``skip_min_layer``..``skip_max_layer`` (None: L-2; one draw per step).
    ``skip_adapters``: x_i passes a training-only adapter (one per exit, trained with the backbone,
    discarded with the scene heads) before the last layer. ``skip_smooth_share`` in (0, 1]: the skip
    loss averages over that share of each batch's frames, those whose target chunk is smoothest
    (``smoothest_frames``); 1 = every frame.
    """
    s = settings.resolved(config.num_layers)
    last = config.num_layers - 2
    if s.skip_loss_weight > 0 and not 1 <= s.skip_min_layer <= last:
        raise ConfigError(
            f"skip_min_layer must lie in 1..{last} (a {config.num_layers}-layer stack), got {s.skip_min_layer}"
        )
    if s.skip_loss_weight > 0 and not s.skip_min_layer <= (s.skip_max_layer or 0) <= last:
        raise ConfigError(
            f"skip_max_layer must lie in {s.skip_min_layer}..{last} (skip_min_layer to L-2), got {s.skip_max_layer}"
        )
    if s.skip_adapters and s.skip_loss_weight <= 0:
        raise ConfigError("skip_adapters trains adapters for the skip loss: set skip_loss_weight > 0 too")
    if (s.time_limit_s is not None or s.resume) and out_dir is None:
        raise ConfigError("time_limit_s and resume need an out_dir to keep the training state in")
    env = setup_distributed(s.device)
    try:
        model = _train(env, episodes, config, s, None if out_dir is None else Path(out_dir))
        if env.world_size > 1:
            dist.barrier()  # every rank returns after rank 0 has written its files
        return model
    finally:
        if env.owns_group:
            dist.destroy_process_group()


@dataclass
class _Run:
    """One training run's moving parts, as ``_train`` sets them up."""

    env: DistributedEnv
    settings: BCSettings
    model: ReferenceVLA
    trained: _BCNet
    net: nn.Module
    """``trained``, or its DDP wrapper."""
    optimizer: torch.optim.Optimizer
    schedule: LambdaLR
    batches: Iterator[Batch]
    shift_rng: torch.Generator
    skip_layers: npt.NDArray[np.int64] | None
    """The skip loss's exit per step (the same on every rank), or None without the skip loss."""
    done: int
    """Steps already taken (a resumed run)."""


def _train(
    env: DistributedEnv, episodes: Sequence[EpisodeLike], config: VLAConfig, s: BCSettings, out_dir: Path | None
) -> ReferenceVLA:
    if s.batch_size % env.world_size:
        raise ConfigError(f"batch_size {s.batch_size} does not split evenly over {env.world_size} ranks")
    torch.manual_seed(s.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    if env.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = data.with_normalisation(config, episodes)
    loader, sampler, samples = _loader(env, episodes, config, s)
    run = _setup_run(env, config, s, loader, sampler, out_dir)
    log = None
    if out_dir is not None and env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        provenance = {
            "command": "bc", **asdict(s), "world_size": env.world_size, "episodes": len(episodes),
            "samples": samples, "torch": torch.__version__, "argv": sys.argv, "resumed_at": run.done,
        }
        (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        log = (out_dir / LOG_FILE).open("a" if run.done else "w")
    try:
        step = _loop(run, out_dir, log)
    finally:
        if log is not None:
            log.close()
    if step >= s.steps and out_dir is not None and env.is_main:
        (out_dir / STATE_FILE).unlink(missing_ok=True)  # complete: nothing to resume, and it must not ship
    run.model.eval()
    return run.model


def _loader(
    env: DistributedEnv, episodes: Sequence[EpisodeLike], config: VLAConfig, s: BCSettings
) -> tuple[DataLoader[Batch], DistributedSampler[Batch], int]:
    """This rank's batches of the demonstrations, its sampler, and the number of samples in all."""
    local_batch = s.batch_size // env.world_size
    try:
        dataset = ChunkDataset(episodes, config, scene=s.scene_loss_weight > 0)
    except ValueError as exc:
        raise ConfigError(f"scene loss: {exc}") from exc
    sampler: DistributedSampler[Batch] = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=s.seed,
        drop_last=len(dataset) // env.world_size >= local_batch,
    )
    workers = s.num_workers if s.num_workers is not None else _default_workers(env)
    loader = DataLoader(
        dataset, batch_size=local_batch, sampler=sampler, num_workers=workers,
        pin_memory=env.device.type == "cuda", drop_last=len(sampler) >= local_batch,
        persistent_workers=workers > 0,
    )
    return loader, sampler, len(dataset)


def _setup_run(
    env: DistributedEnv, config: VLAConfig, s: BCSettings, loader: DataLoader[Batch],
    sampler: DistributedSampler[Batch], out_dir: Path | None,
) -> _Run:
    """The model (and training-only heads and adapters), optimiser and schedule, resumed where a
    saved state says, and the per-step draws."""
    model = ReferenceVLA(config)
    if s.init_from is not None:
        # Architecture checked by init_config; the normalisation is refitted on this run's demos.
        model.load_state_dict(init_config_model(s.init_from).state_dict())
    last_exit = s.skip_max_layer or config.num_layers - 2
    exit_adapters = (
        {i: Adapter(config.hidden_size, SkipModuleConfig().adapter_bottleneck)
         for i in range(s.skip_min_layer, last_exit + 1)}
        if s.skip_adapters else None
    )
    trained = _BCNet(model, SceneHeads(config) if s.scene_loss_weight > 0 else None, exit_adapters).to(env.device)
    optimizer = adamw(list(trained.named_parameters()), s.lr, s.weight_decay)
    schedule = warmup_cosine(optimizer, s.steps, s.warmup_steps or 0)
    done = 0
    state_file = None if out_dir is None else out_dir / STATE_FILE
    if s.resume and state_file is not None and state_file.is_file():
        done = _load_state(state_file, trained, optimizer, schedule, config, s, env.device)
    trained.train()
    net: nn.Module = trained
    if env.world_size > 1:
        net = DistributedDataParallel(trained, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    # A resumed run starts a fresh shuffle (epoch numbered by the step): deterministic for the same
    # stop points, without replaying the batches already seen.
    batches = data.endless(loader, sampler, start_epoch=done)
    shift_rng = torch.Generator().manual_seed(s.seed + 1000 * env.rank + 1 + done)
    # Same draw on every rank (DDP needs one graph per step); indexed by the step, so resuming repeats it.
    skip_layers = (
        np.random.default_rng([s.seed, 11]).integers(s.skip_min_layer, last_exit + 1, size=s.steps)
        if s.skip_loss_weight > 0 else None
    )
    return _Run(env, s, model, trained, net, optimizer, schedule, batches, shift_rng, skip_layers, done)


class _Interval:
    """Loss sums since the last log record (summed on the device: no host sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.scene = torch.zeros(2, device=device)  # per readout: vision tokens, action queries
        self.skip = torch.zeros((), device=device)
        self.steps = 0

    def means(self, env: DistributedEnv) -> tuple[float, float, float, float]:
        """(loss, scene loss from the vision tokens, from the action queries, skip loss) over every rank."""
        means = torch.cat([self.loss.reshape(1), self.scene, self.skip.reshape(1)]) / self.steps
        if env.world_size > 1:
            dist.all_reduce(means)
            means /= env.world_size
        loss, scene_vision, scene_queries, skip = (float(v) for v in means.tolist())
        return loss, scene_vision, scene_queries, skip

    def reset(self) -> None:
        self.loss.zero_()
        self.scene.zero_()
        self.skip.zero_()
        self.steps = 0


def _loop(run: _Run, out_dir: Path | None, log: TextIO | None) -> int:
    """The optimiser steps from ``run.done`` on: log records, checkpoints, the time limit. Returns the
    last step taken."""
    env, s = run.env, run.settings
    progress = tqdm(total=s.steps, initial=run.done, desc="bc", disable=not env.is_main, dynamic_ncols=True)
    interval = _Interval(env.device)
    start = last_log = time.perf_counter()
    step = run.done
    try:
        while step < s.steps:
            step += 1
            _step(run, step, interval)
            progress.update(1)
            out_of_time = _out_of_time(env, step, start, s)
            if step % s.log_every == 0 or step == s.steps or out_of_time:
                now = time.perf_counter()
                _log(run, step, interval, now - start, now - last_log, progress, log)
                last_log = now
            checkpoint = step % (s.checkpoint_every or 1) == 0 or step == s.steps or out_of_time
            if out_dir is not None and env.is_main and checkpoint:
                save_model(run.model, out_dir)
                if step < s.steps:  # whatever stops this run (time limit, a killed command), --resume goes on
                    _save_state(out_dir / STATE_FILE, step, run.trained, run.optimizer, run.schedule, s)
            if out_of_time and step < s.steps:
                if env.is_main:
                    print(f"bc: time limit reached at step {step} of {s.steps}; run again with --resume to go on",
                          file=sys.stderr)
                break
    finally:
        progress.close()
    return step


def _step(run: _Run, step: int, interval: _Interval) -> None:
    """One optimiser step: the chunk loss, plus the skip and scene losses where they are on."""
    s = run.settings
    batch = data.to_device(next(run.batches), run.env.device)
    image = random_shift(batch["image"], s.augment_shift, run.shift_rng)
    skip_from = None if run.skip_layers is None else int(run.skip_layers[step - 1])
    with autocast(run.env.device):
        pred, scene, skipped = run.net(image, batch["instruction"], batch["proprio"], skip_from)
    loss = masked_l1(pred, batch["actions"], batch["action_mask"])
    total = loss
    if skipped is not None:
        skip_mask = batch["action_mask"]
        if s.skip_smooth_share < 1:
            keep = smoothest_frames(batch["actions"], skip_mask, s.skip_smooth_share)
            skip_mask = skip_mask * keep.to(skip_mask.dtype)[:, None]
        skip_loss = masked_l1(skipped, batch["actions"], skip_mask)
        total = total + s.skip_loss_weight * skip_loss
        interval.skip += skip_loss.detach()
    if scene is not None:
        scene_errors = (scene.float() - batch["scene"].unsqueeze(1)).abs().mean(dim=(0, 2))
        total = total + s.scene_loss_weight * scene_errors.mean()
        interval.scene += scene_errors.detach()
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if s.grad_clip > 0:
        nn.utils.clip_grad_norm_(run.trained.parameters(), s.grad_clip)
    run.optimizer.step()
    run.schedule.step()
    interval.loss += loss.detach()
    interval.steps += 1


def _log(
    run: _Run, step: int, interval: _Interval, elapsed: float, since_last: float, progress: Any, log: TextIO | None
) -> None:
    """One log record (every rank's mean since the last one) into the log file and the progress bar."""
    s = run.settings
    mean_loss, scene_vision, scene_queries, mean_skip = interval.means(run.env)
    record: dict[str, float] = {
        "step": step,
        "loss": mean_loss,
        "lr": float(run.schedule.get_last_lr()[0]),
        "samples_per_s": interval.steps * s.batch_size / max(since_last, 1e-9),
        "elapsed_s": elapsed,
    }
    postfix = {"loss": f"{mean_loss:.4f}"}
    if s.scene_loss_weight > 0:
        record["scene_loss_vision"] = scene_vision
        record["scene_loss_queries"] = scene_queries
        postfix["scene"] = f"{scene_vision:.3f}/{scene_queries:.3f}"
    if s.skip_loss_weight > 0:
        record["skip_loss"] = mean_skip
        postfix["skip"] = f"{mean_skip:.4f}"
    postfix["lr"] = f"{record['lr']:.2e}"
    progress.set_postfix(postfix)
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
    interval.reset()


def _out_of_time(env: DistributedEnv, step: int, start: float, s: BCSettings) -> bool:
    if s.time_limit_s is None:
        return False
    over = time.perf_counter() - start >= s.time_limit_s
    if env.world_size == 1:
        return over
    if step % s.log_every:
        return False  # ranks agree only at log points: no collective every step
    flag = torch.tensor(float(over), device=env.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
    return bool(flag.item())


def _save_state(file: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LambdaLR,
                s: BCSettings) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict(), "settings": s.must_match()}
    tmp = file.with_name(file.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(file)  # atomic: a run killed while saving leaves the previous state intact


def _load_state(file: Path, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LambdaLR,
                config: VLAConfig, s: BCSettings, device: torch.device) -> int:
    state = torch.load(file, map_location=device, weights_only=True)
    if state["settings"] != s.must_match():
        raise ConfigError(
            f"{file} was saved by a run with {state['settings']}, this one has {s.must_match()}: resume with the "
            "same settings, or start over without --resume"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(state["step"])


def _default_workers(env: DistributedEnv) -> int:
    # CPU runs (tests, CI) load in-process: deterministic and no fork cost. On GPUs, workers keep
    # the image preprocessing off the training loop.
    if env.device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // env.world_size - 1))


def init_config_model(model_dir: str | Path) -> ReferenceVLA:
    """The trained model a run starts from (``--init-from``); only reference backbones."""
    model = load_bundle(model_dir).model
    if not isinstance(model, ReferenceVLA):
        raise ConfigError(f"--init-from {model_dir}: bc trains the reference VLA, that model has another backbone")
    return model


def load_config(path: str | Path | None) -> VLAConfig:
    """VLAConfig from a JSON file (any subset of fields; the rest keep their defaults)."""
    if not path:
        return VLAConfig()
    values: dict[str, Any] = json.loads(Path(path).read_text())
    return VLAConfig.from_dict(values)


def main_bc(args: argparse.Namespace) -> int:
    """``dysl_train bc``: demos directory -> trained model directory."""
    try:
        init_from = getattr(args, "init_from", None)
        config_json = getattr(args, "config_json", None)
        if init_from and config_json:
            raise ConfigError("--init-from takes the architecture from that model: leave out --config-json")
        config = init_config_model(init_from).config if init_from else load_config(config_json)
        drawn: dict[str, Any] = {}
        if (Path(args.demos) / "meta" / "info.json").is_file():  # a LeRobot dataset
            episodes = data.load_episodes(args.demos, config, getattr(args, "mapping", None))
        else:  # our demonstrations record how they were drawn, which the simulator reproduces
            demos = load_demo_dirs(args.demos)
            if not demos.episodes:
                raise ValueError(f"{args.demos} holds no demonstration episodes")
            episodes = list(demos.episodes)
            drawn = {"camera": demos.camera, "goal_marker_radius": demos.goal_marker_radius}
        settings = from_flags(BCSettings, args, init_from=init_from or None, **drawn)
        model = train_bc(episodes, config, settings, args.out)
    except (ConfigError, ModelDirError, ValueError, OSError) as exc:
        print(f"dysl_train bc: {exc}", file=sys.stderr)
        return 2
    if (Path(args.out) / STATE_FILE).is_file():
        return INCOMPLETE_EXIT_CODE  # stopped at the time limit: `--resume` continues
    if int(os.environ.get("RANK", "0")) == 0:
        params = sum(p.numel() for p in model.parameters())
        print(f"dysl_train bc: {params:,} parameters trained for {settings.steps} steps -> {args.out}")
    return 0
