"""The ACE-Step 1.5 engine: diffusers' `AceStepPipeline`, loaded once, one job (or one batch of jobs) at a time.

Every `GenerationParams` field is mapped onto a pipeline call (see `pipeline_kwargs`); source audio
is fitted to the requested duration, so every take has exactly that length.
"""

from __future__ import annotations

import contextlib
import gc
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from acefarm.infra.settings import Settings
from acefarm.model.pipeline import PipelineInfo, load_pipeline
from acefarm.runtime.portal import BlockingStorage
from gpu_consumer.engine.base import (
    EngineError,
    InvalidInput,
    Job,
    JobCancelled,
    OutOfMemory,
    Take,
    UnsupportedTask,
)
from schemas.generation import MAX_LORAS, GenerationParams, TaskType
from schemas.status import Stage

CODE_RE = re.compile(r"<\|audio_code_(\d+)\|>")
"""One audio code token, as the 5 Hz LM writes it."""

MAX_RESIDENT_ADAPTERS = MAX_LORAS
"""LoRA adapters kept loaded at once; the least recently used one is dropped beyond this."""

AdapterResolver = Callable[[str, BlockingStorage | None], Path | None]
"""(lora_id, the job's storage) → local directory holding the adapter's weights (None: unknown)."""


class AceStepEngine:
    """Runs generation jobs on ACE-Step 1.5 through diffusers (see docs/engine.md)."""

    name = "acestep"

    def __init__(
        self,
        settings: Settings,
        *,
        device: str | None = None,
        adapter_resolver: AdapterResolver | None = None,
        max_adapters: int = MAX_RESIDENT_ADAPTERS,
    ) -> None:
        """Load the pipeline named by the settings (blocking, once per process)."""
        pipe, info = load_pipeline(settings, device=device)
        self._attach(pipe, info, adapter_resolver, max_adapters)

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        info: PipelineInfo,
        *,
        adapter_resolver: AdapterResolver | None = None,
        max_adapters: int = MAX_RESIDENT_ADAPTERS,
    ) -> AceStepEngine:
        """Wrap an already loaded pipeline (e.g. one the caller loaded with `acefarm.model.pipeline`)."""
        engine = cls.__new__(cls)
        engine._attach(pipe, info, adapter_resolver, max_adapters)
        return engine

    def _attach(
        self, pipe: Any, info: PipelineInfo, adapter_resolver: AdapterResolver | None, max_adapters: int
    ) -> None:
        self.pipe, self.pipeline_info = pipe, info
        self.sample_rate: int = info.sample_rate
        self.supported_tasks: frozenset[TaskType] = info.tasks.supported
        self.adapter_resolver = adapter_resolver
        self.max_adapters = max(1, max_adapters)
        self._adapters: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.RLock()
        self.jobs = 0

    # ------------------------------------------------------------------ jobs

    def generate(self, job: Job) -> list[Take]:
        """Run one job: one take per `batch_size`, each float32 [2, S] at 48 kHz of `duration` seconds."""
        params = job.params
        self.check_supported(params, has_src=job.src_audio is not None)
        if job.is_cancelled():
            raise JobCancelled
        with self._lock:
            self.jobs += 1
            job.report(Stage.ENCODING, 0.0, None, None)
            self._activate_loras(params, job.storage)
            seed = params.seed if params.seed is not None else secrets.randbelow(2**32)
            kwargs = self.pipeline_kwargs(params, job.src_audio, job.reference_audio, seed=seed)
            kwargs["callback_on_step_end"] = self._step_callback([job], params.inference_steps)
            with self._diffusion_start([job], params.inference_steps):
                audios = self._run(kwargs, seed)
        target = round(params.duration * self.sample_rate)
        return [Take(audio=fit_length(audio, target), sample_rate=self.sample_rate) for audio in audios]

    def generate_batch(self, jobs: list[Job]) -> list[list[Take]]:
        """Run compatible jobs (no input audio; equal steps, LoRAs, task type and settings) as one pipeline call
        at the longest job's duration: each job's prompt, lyrics and language, one generator per take seeded from
        its own seed (so its takes match what it gets alone at that duration), each take cut to its job's
        duration. The step callback reports to every live job and stops only once every job is cancelled; a
        cancelled job gets no takes."""
        if len(jobs) == 1:
            return [self.generate(jobs[0])]
        import torch

        for job in jobs:
            if job.src_audio is not None or job.reference_audio is not None or job.params.audio_codes is not None:
                raise UnsupportedTask("jobs with input audio or audio codes run alone, not in a batch")
            self.check_supported(job.params, has_src=False)
        if all(job.is_cancelled() for job in jobs):
            raise JobCancelled
        lead = jobs[0].params
        duration = max(job.params.duration for job in jobs)
        with self._lock:
            self.jobs += len(jobs)
            for job in jobs:
                job.report(Stage.ENCODING, 0.0, None, None)
            self._activate_loras(lead, jobs[0].storage)
            seeds = [job.params.seed if job.params.seed is not None else secrets.randbelow(2**32) for job in jobs]
            parts = [
                self.pipeline_kwargs(job.params.model_copy(update={"duration": duration}), None, None, seed=seed)
                for job, seed in zip(jobs, seeds, strict=True)
            ]
            kwargs = parts[0] | {
                "prompt": [p for part in parts for p in part["prompt"]],
                "lyrics": [lyric for part in parts for lyric in part["lyrics"]],
                "vocal_language": [job.params.vocal_language for job in jobs for _ in range(job.params.batch_size)],
                "generator": [g for part in parts for g in part["generator"]],
                "latents": torch.cat([part["latents"] for part in parts]),
                "callback_on_step_end": self._step_callback(jobs, lead.inference_steps),
            }
            with self._diffusion_start(jobs, lead.inference_steps):
                audios = self._run(kwargs, seeds[0])
        results: list[list[Take]] = []
        for job in jobs:
            mine, audios = audios[: job.params.batch_size], audios[job.params.batch_size :]
            target = round(job.params.duration * self.sample_rate)
            takes = [Take(audio=fit_length(audio, target), sample_rate=self.sample_rate) for audio in mine]
            results.append([] if job.is_cancelled() else takes)
        return results

    def check_supported(self, params: GenerationParams, *, has_src: bool) -> None:
        """Raise `UnsupportedTask` (with the reason) when the checkpoint cannot run this job."""
        task = params.task_type
        support = self.pipeline_info.tasks
        if task not in support.supported:
            reason = support.reasons.get(task, f"the loaded checkpoint does not support '{task.value}'")
            raise UnsupportedTask(reason)
        if task is TaskType.COVER and has_src and not support.cover_from_source:
            raise UnsupportedTask(
                "cover from source audio needs the checkpoint's audio tokenizer/detokenizer, which the loaded "
                "checkpoint lacks; give reference_audio only, or load a full ACE-Step 1.5 checkpoint"
            )

    def pipeline_kwargs(
        self, params: GenerationParams, src: np.ndarray | None, reference: np.ndarray | None, *, seed: int = 0
    ) -> dict[str, Any]:
        """The `AceStepPipeline.__call__` arguments for these parameters, input audio and seed.

        Take i draws its initial noise from a CPU generator seeded `seed + i` (the same on every
        device). The noise is passed as `latents` because diffusers 0.42 recomputes the latent
        length from a rounded duration and crashes for ~6 % of durations (e.g. 1.1 s).
        """
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        task = params.task_type
        batch = params.batch_size
        frames = math.ceil(params.duration * self.pipe.latents_per_second)  # the pipeline's own formula
        codes_frames = self._codes_frames(params)
        if codes_frames is not None:  # codes set the length: one code per pool window; takes are fit afterwards
            frames = codes_frames
        hop = round(self.sample_rate / self.pipe.latents_per_second)
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
        dim = self.pipe.transformer.config.audio_acoustic_hidden_dim
        device, dtype = self.pipe._execution_device, self.pipe.transformer.dtype
        latents = randn_tensor((batch, frames, dim), generator=generators, device=device, dtype=dtype)
        kwargs: dict[str, Any] = {
            "prompt": [params.caption()] * batch,
            "lyrics": [params.lyrics_for_model()] * batch,
            "vocal_language": params.vocal_language,
            "audio_duration": params.duration,
            "num_inference_steps": params.inference_steps,
            "guidance_scale": params.guidance_scale,
            "shift": params.shift,
            "generator": generators,
            "latents": latents,
            "bpm": params.bpm,
            "keyscale": params.key,
            "timesignature": str(params.time_signature) if params.time_signature else None,
            "task_type": TaskType.REPAINT.value if task is TaskType.EXTEND else task.value,
            "track_name": params.track_name,
            "complete_track_classes": params.complete_track_classes,
            "audio_cover_strength": params.cover_strength,
            "output_type": "np",
        }
        if params.audio_codes is not None:
            kwargs["audio_codes"] = params.audio_codes
            kwargs["audio_duration"] = frames / self.pipe.latents_per_second
        if src is not None:  # whole latent frames, so the source latents match the noise length
            kwargs["src_audio"] = torch.from_numpy(fit_length(_stereo(src, "source"), frames * hop))
        if reference is not None:
            kwargs["reference_audio"] = torch.from_numpy(_stereo(reference, "reference"))
        if task in (TaskType.REPAINT, TaskType.LEGO, TaskType.EXTEND):
            start, end = self._window(params, src)
            kwargs["repainting_start"], kwargs["repainting_end"] = start, end
        return kwargs

    def _codes_frames(self, params: GenerationParams) -> int | None:
        """Latent frames that `audio_codes` decode to (None without codes); needs the audio detokenizer."""
        if params.audio_codes is None:
            return None
        detokenizer = getattr(self.pipe, "audio_token_detokenizer", None)
        if detokenizer is None or getattr(self.pipe, "audio_tokenizer", None) is None:
            raise UnsupportedTask("audio_codes need the checkpoint's audio tokenizer/detokenizer, which it lacks")
        pool = int(getattr(detokenizer.config, "pool_window_size", 5))
        return len(CODE_RE.findall(params.audio_codes)) * pool

    def _window(self, params: GenerationParams, src: np.ndarray | None) -> tuple[float | None, float | None]:
        """Repaint window in seconds; extend defaults to [end of source, duration]."""
        start, end = params.repaint_start, params.repaint_end
        if params.task_type is TaskType.EXTEND:
            source_s = src.shape[-1] / self.sample_rate if src is not None else 0.0
            start = source_s if start is None else start
            end = params.duration if end is None else min(end, params.duration)
        elif params.task_type is TaskType.LEGO and start is None and end is None:
            return None, None
        start = 0.0 if start is None else start
        end = params.duration if end is None else min(end, params.duration)
        if start >= end:
            what = "extend" if params.task_type is TaskType.EXTEND else "repaint"
            raise InvalidInput(
                f"the {what} window [{start:.2f} s, {end:.2f} s] is empty within the requested duration "
                f"({params.duration:g} s); for extend, duration must be longer than the source"
            )
        return start, end

    def _step_callback(self, jobs: list[Job], total: int) -> Callable[..., dict[str, Any]]:
        """Report each diffusion step, then decoding, to every job not cancelled; stop the pipeline once every
        job is cancelled."""

        def on_step_end(pipe: Any, step: int, timestep: float, tensors: dict[str, Any]) -> dict[str, Any]:
            live = [job for job in jobs if not job.is_cancelled()]
            if not live:
                pipe._interrupt = True
                raise JobCancelled
            done = step + 1
            for job in live:
                job.report(Stage.DIFFUSION, done / total, done, total)
                if done >= total:
                    job.report(Stage.DECODING, 1.0, None, None)
            return tensors

        return on_step_end

    @contextlib.contextmanager
    def _diffusion_start(self, jobs: list[Job], total: int) -> Iterator[None]:
        """Report diffusion step 0 when the transformer first runs, so encoding ends where diffusion begins.

        Skipped for a compiled transformer (a hook inside the compiled call would break its graph);
        there, encoding is reported until the first step ends.
        """
        if self.pipeline_info.compiled:
            yield
            return
        started = threading.Event()

        def on_first_call(module: Any, args: Any) -> None:
            if not started.is_set():
                started.set()
                for job in jobs:
                    job.report(Stage.DIFFUSION, 0.0, 0, total)

        handle = self.pipe.transformer.register_forward_pre_hook(on_first_call)
        try:
            yield
        finally:
            handle.remove()

    def _run(self, kwargs: dict[str, Any], seed: int) -> list[np.ndarray]:
        """Call the pipeline, translating failures into the engine protocol's errors.

        The global RNG is seeded too: the VAE samples its latent distribution when encoding input audio.
        """
        import torch

        try:
            torch.manual_seed(seed)
            output = self.pipe(**kwargs)
        except JobCancelled:
            self._free_hooks()
            raise
        except torch.cuda.OutOfMemoryError as error:
            self._after_oom()
            raise OutOfMemory(f"the GPU ran out of memory (try a shorter duration or fewer takes): {error}") from None
        except MemoryError:
            self._after_oom()
            raise OutOfMemory("the machine ran out of memory (try a shorter duration or fewer takes)") from None
        except Exception as error:
            if "out of memory" in str(error).lower():
                self._after_oom()
                raise OutOfMemory(f"out of memory: {error}") from None
            self._free_hooks()
            raise EngineError(f"the model failed: {type(error).__name__}: {error}") from error
        audios = np.asarray(output.audios, dtype=np.float32)
        return [np.ascontiguousarray(audio) for audio in audios]

    def _free_hooks(self) -> None:
        with contextlib.suppress(Exception):  # best effort after a failure
            self.pipe.maybe_free_model_hooks()

    def _after_oom(self) -> None:
        import torch

        self._free_hooks()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ LoRA

    def ensure_adapter(self, lora_id: str, local_dir: str | Path, keep: frozenset[str] = frozenset()) -> None:
        """Make LoRA `lora_id` resident (from a diffusers LoRA directory), evicting the least recently
        used ones beyond `max_adapters`, except those in `keep` (the other adapters the job needs)."""
        with self._lock:
            if lora_id in self._adapters:
                self._adapters.move_to_end(lora_id)
                return
            for stale in [name for name in self._adapters if name not in keep]:
                if len(self._adapters) < self.max_adapters:
                    break
                del self._adapters[stale]
                self.pipe.delete_adapters(stale)
            try:
                self.pipe.load_lora_weights(str(local_dir), adapter_name=lora_id)
            except Exception as error:
                raise InvalidInput(f"LoRA '{lora_id}' could not be loaded from {local_dir}: {error}") from error
            self._adapters[lora_id] = Path(local_dir)

    def drop_adapter(self, lora_id: str) -> bool:
        """Unload LoRA `lora_id` if resident (e.g. after it was retrained); returns whether it was."""
        with self._lock:
            if self._adapters.pop(lora_id, None) is None:
                return False
            self.pipe.delete_adapters(lora_id)
            return True

    @property
    def adapters(self) -> list[str]:
        """Resident LoRA ids, least recently used first."""
        return list(self._adapters)

    def _activate_loras(self, params: GenerationParams, storage: BlockingStorage | None) -> None:
        """Blend the job's LoRAs at their scales (`set_adapters`), or disable every adapter when none
        has a scale above 0, so the job runs on the base model exactly."""
        active = [lora for lora in params.loras if lora.scale > 0.0]
        if not active:
            if self._adapters:
                self.pipe.disable_lora()
            return
        needed = frozenset(lora.lora_id for lora in active)
        for lora in active:
            if lora.lora_id not in self._adapters:
                path = self.adapter_resolver(lora.lora_id, storage) if self.adapter_resolver else None
                if path is None:
                    raise InvalidInput(f"LoRA '{lora.lora_id}' is not available on this worker")
                self.ensure_adapter(lora.lora_id, path, keep=needed)
            self._adapters.move_to_end(lora.lora_id)
        self.pipe.enable_lora()
        self.pipe.set_adapters([lora.lora_id for lora in active], adapter_weights=[lora.scale for lora in active])

    # ------------------------------------------------------------------ info

    def info(self) -> dict[str, Any]:
        """What is loaded where (model, device, dtype, tasks, adapters)."""
        return {"engine": self.name, **self.pipeline_info.as_dict(), "adapters": self.adapters, "jobs": self.jobs}


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad float32 [C, S] audio to exactly `samples` along the last axis."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape[-1] >= samples:
        return np.ascontiguousarray(audio[..., :samples])
    pad = np.zeros((*audio.shape[:-1], samples - audio.shape[-1]), dtype=np.float32)
    return np.concatenate([audio, pad], axis=-1)


def _stereo(audio: np.ndarray, role: str) -> np.ndarray:
    """Check that input audio is [2, S] float (as acefarm.infra.audio.decode_audio returns it)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = np.stack([audio, audio])
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise InvalidInput(f"{role} audio must be [2, samples] at 48 kHz, got shape {audio.shape}")
    return np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio
