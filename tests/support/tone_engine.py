"""A deterministic test engine: the null engine's loop with audible, seed-dependent tones, no torch.

Environment knobs (read per job): `TONE_ENGINE_STEP_S` sleeps that long per fake diffusion step; a
token `step_s=<seconds>` in the prompt overrides it for one job (so one process serves fast and slow jobs).
Prompts containing 'explode' raise `EngineError`, 'oom' raises `OutOfMemory`, 'crash' raises a
plain `RuntimeError` (an unexpected bug), 'unsupported' raises `UnsupportedTask`; 'hang_forever' blocks
the engine thread for good (a stuck native call), 'exit_process' ends the whole process at once (a
segfault or the kernel's OOM killer) with status `EXIT_PROCESS_CODE`.
"""

from __future__ import annotations

import os
import re
import threading
import time

import numpy as np

from gpu_consumer.engine.base import EngineError, Job, OutOfMemory, Take, UnsupportedTask
from gpu_consumer.engine.null import SAMPLE_RATE, NullEngine

EXIT_PROCESS_CODE = 86


class ToneEngine(NullEngine):
    """Writes `batch_size` stereo sine tones of `duration` seconds at 48 kHz (frequency from seed and take)."""

    name = "tone"

    def on_step(self, jobs: list[Job], step: int) -> None:
        """Sleep the longest configured step time of the jobs (once: a batch costs one job's time); on the first
        step, fail if a prompt asks for it (failing the whole call, as a real engine would)."""
        prompts = [job.params.prompt.lower() for job in jobs]
        step_s = max(_step_seconds(prompt) for prompt in prompts)
        if step_s:
            time.sleep(step_s)
        if step == 1:
            for prompt in prompts:
                _maybe_fail(prompt)

    def take(self, job: Job, index: int) -> Take:
        """A 0.3-amplitude sine whose frequency depends on the seed and the take."""
        samples = round(job.params.duration * SAMPLE_RATE)
        freq = 220.0 + ((job.params.seed or 0) % 440) + 110.0 * index
        t = np.arange(samples, dtype=np.float64) / SAMPLE_RATE
        wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        return Take(audio=np.stack([wave, wave]), sample_rate=SAMPLE_RATE)


def _maybe_fail(prompt: str) -> None:
    if "hang_forever" in prompt:
        threading.Event().wait()  # never set: ignores cancellation like a stuck CUDA call
    if "exit_process" in prompt:
        os._exit(EXIT_PROCESS_CODE)
    if "explode" in prompt:
        raise EngineError("the tone engine exploded on purpose (prompt contains 'explode')")
    if "oom" in prompt:
        raise OutOfMemory("CUDA out of memory: tried to allocate 20.00 GiB (test engine)")
    if "unsupported" in prompt:
        raise UnsupportedTask("this checkpoint cannot do that (test engine)")
    if "crash" in prompt:
        raise RuntimeError("unexpected bug in the test engine")


def _step_seconds(prompt: str) -> float:
    found = re.search(r"step_s=([0-9.]+)", prompt)
    if found:
        return float(found.group(1))
    return float(os.environ.get("TONE_ENGINE_STEP_S", "0") or 0)
