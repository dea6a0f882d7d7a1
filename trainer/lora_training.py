"""PEFT LoRA training of the ACE-Step DiT with the turbo flow-matching objective.

Recipe (ACE-Step's own trainer): LoRA on the attention projections (to_q, to_k, to_v, to_out.0) of
self- and cross-attention; t drawn from the turbo shift-3 schedule; x_t = t·noise + (1−t)·x0; loss =
MSE(DiT(x_t, t, t, conditions), noise − x0); AdamW, linear warm-up then cosine decay, gradient clipping
at 1.0, bf16 autocast on CUDA. `batch_size` clips are accumulated per optimizer step (clips differ
in length and the DiT's cross-attention has no padding mask, so they are not stacked).
"""

from __future__ import annotations

import copy
import io
import math
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from schemas.training import TrainingOptions
from trainer.encode import EncodedClip

ADAPTER_NAME = "acefarm_lora_training"
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
LOSS_WINDOW = 10
"""The reported loss is the mean of the last this-many optimizer steps."""


def turbo_timesteps(steps: int = 8, shift: float = 3.0) -> list[float]:
    """The turbo sampling schedule: 1 → 0 in `steps` linear steps, shifted (shift 3: 1.0, 0.9545, ..., 0.3)."""
    linear = [1.0 - i / steps for i in range(steps)]
    return [shift * t / (1.0 + (shift - 1.0) * t) for t in linear]


class TrainingCancelled(Exception):
    """A cancel was requested; training stopped at a step boundary."""


class TrainingInterrupted(Exception):
    """The process is shutting down; a checkpoint was saved so a redelivery resumes from it."""


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor
    losses: list[float] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        """Serialise (torch.save of plain containers and tensors)."""
        buffer = io.BytesIO()
        torch.save(self.__dict__, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Load what `to_bytes` wrote (tensors only: `weights_only=True`)."""
        return cls(**torch.load(io.BytesIO(data), weights_only=True, map_location="cpu"))


@dataclass
class TrainingHooks:
    """How a run talks to the outside; every hook is called from the training thread."""

    report: Callable[[int, int, float], None] = lambda step, total, loss: None
    save_checkpoint: Callable[[Checkpoint], None] = lambda checkpoint: None
    is_cancelled: Callable[[], bool] = lambda: False
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class TrainingResult:
    """The outcome of a finished run."""

    steps: int
    final_loss: float
    resumed_from: int | None
    seconds_per_step: float | None


class LoraTrainer:
    """Attaches a LoRA adapter to `pipe.transformer`, trains it, saves it, and detaches it again."""

    def __init__(self, pipe: Any, options: TrainingOptions, device: torch.device) -> None:
        self.pipe = pipe
        self.options = options
        self.device = device
        self.transformer = pipe.transformer
        self.schedule = torch.tensor(turbo_timesteps(), dtype=torch.float32)
        self._params: list[tuple[str, torch.nn.Parameter]] = []

    def attach(self) -> None:
        """Freeze the DiT and add a fresh trainable LoRA adapter (float32 weights)."""
        config = LoraConfig(
            r=self.options.rank,
            lora_alpha=self.options.effective_alpha,
            target_modules=TARGET_MODULES,
            init_lora_weights=True,
        )
        self.transformer.requires_grad_(False)
        self.transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
        self.transformer.set_adapter(ADAPTER_NAME)
        self._params = [(n, p) for n, p in self.transformer.named_parameters() if p.requires_grad]
        for _, param in self._params:
            param.data = param.data.float()

    def detach(self) -> None:
        """Remove the adapter so the pipeline is the base model again."""
        self.transformer.eval()
        if ADAPTER_NAME in getattr(self.transformer, "peft_config", {}):
            self.transformer.delete_adapters(ADAPTER_NAME)
        self._params = []

    def train(self, clips: list[EncodedClip], hooks: TrainingHooks, resume: Checkpoint | None = None) -> TrainingResult:
        """Run to `options.steps` optimizer steps (from `resume` when given); checkpoints every
        `options.checkpoint_every` steps. Raises `TrainingCancelled` / `TrainingInterrupted`."""
        import time

        options, params = self.options, [p for _, p in self._params]
        optimizer = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=1e-2)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        generator = torch.Generator().manual_seed(options.seed)
        losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        step = 0
        if resume is not None:
            step = self._restore(resume, optimizer, scheduler, generator, losses)
        resumed_from = step if resume is not None else None
        first_step, started = step, time.monotonic()
        self.transformer.train()
        while step < options.steps:
            if hooks.is_cancelled():
                raise TrainingCancelled
            if hooks.should_stop():
                hooks.save_checkpoint(self._checkpoint(step, optimizer, scheduler, generator, losses))
                raise TrainingInterrupted
            loss = self._step(clips, generator, params, optimizer)
            scheduler.step()
            step += 1
            losses.append(loss)
            hooks.report(step, options.steps, sum(losses) / len(losses))
            if step % options.checkpoint_every == 0 and step < options.steps:
                hooks.save_checkpoint(self._checkpoint(step, optimizer, scheduler, generator, losses))
        self.transformer.eval()
        done = step - first_step
        return TrainingResult(
            steps=step,
            final_loss=sum(losses) / len(losses) if losses else float("nan"),
            resumed_from=resumed_from,
            seconds_per_step=(time.monotonic() - started) / done if done else None,
        )

    def _step(
        self,
        clips: list[EncodedClip],
        generator: torch.Generator,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
    ) -> float:
        """One optimizer step over `batch_size` randomly drawn clips; returns the mean loss."""
        batch = self.options.batch_size
        total = 0.0
        for _ in range(batch):
            clip = clips[int(torch.randint(len(clips), (1,), generator=generator))]
            loss = self._loss(clip, generator)
            (loss / batch).backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total / batch

    def _loss(self, clip: EncodedClip, generator: torch.Generator) -> torch.Tensor:
        """Turbo flow-matching loss of one clip at a random schedule timestep."""
        dtype = self.transformer.dtype
        x0 = clip.target.to(self.device, torch.float32)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        t = self.schedule[int(torch.randint(len(self.schedule), (1,), generator=generator))].to(self.device)
        xt = t * noise + (1.0 - t) * x0
        timestep = t.reshape(1).to(dtype)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with autocast:
            velocity = self.transformer(
                hidden_states=xt.to(dtype),
                timestep=timestep,
                timestep_r=timestep,
                encoder_hidden_states=clip.encoder_hidden_states.to(self.device, dtype),
                context_latents=clip.context_latents.to(self.device, dtype),
                return_dict=False,
            )[0]
        return torch.nn.functional.mse_loss(velocity.float(), noise - x0)

    def _lr_factor(self, step: int) -> float:
        warmup = min(self.options.warmup_steps, max(self.options.steps - 1, 0))
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, self.options.steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def _checkpoint(
        self,
        step: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
        losses: deque[float],
    ) -> Checkpoint:
        return Checkpoint(
            step=step,
            adapter={name: p.detach().cpu().clone() for name, p in self._params},
            optimizer=copy.deepcopy(optimizer.state_dict()),  # the live state keeps changing
            scheduler=scheduler.state_dict(),
            generator=generator.get_state(),
            losses=list(losses),
        )

    def _restore(
        self,
        checkpoint: Checkpoint,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
        losses: deque[float],
    ) -> int:
        named = dict(self._params)
        missing = set(named) ^ set(checkpoint.adapter)
        if missing:
            raise ValueError(f"the checkpoint does not match this adapter ({len(missing)} parameters differ)")
        with torch.no_grad():
            for name, value in checkpoint.adapter.items():
                named[name].copy_(value)
        optimizer.load_state_dict(checkpoint.optimizer)
        scheduler.load_state_dict(checkpoint.scheduler)
        generator.set_state(checkpoint.generator)
        losses.extend(checkpoint.losses)
        return checkpoint.step

    def save_adapter(self, directory: Path) -> None:
        """Write the adapter in diffusers' LoRA format, with its PEFT config as metadata (alpha kept)."""
        layers = get_peft_model_state_dict(self.transformer, adapter_name=ADAPTER_NAME)
        metadata = self.transformer.peft_config[ADAPTER_NAME].to_dict()
        type(self.pipe).save_lora_weights(
            str(directory),
            transformer_lora_layers={k: v.detach().float().cpu().contiguous() for k, v in layers.items()},
            transformer_lora_adapter_metadata=metadata,
        )
