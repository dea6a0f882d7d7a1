"""`AsyncClient`: the asyncio acefarm client (httpx), the same calls as `Client` awaited."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from acefarm.client import calls
from acefarm.client.calls import STREAM, Call, OnStatus, Outcome, check_deadline, retry_delay
from acefarm.client.config import USER_AGENT, ClientConfig, RetryPolicy
from acefarm.client.errors import AcefarmError, TaskFailed
from acefarm.client.files import is_directory, name_from_url, partial_path, result_paths
from acefarm.client.models import GenerateResult, TrainingResult, UploadedAudio
from acefarm.client.sse import EventDecoder
from schemas.generation import GenerateRequest
from schemas.status import TaskAccepted, TaskState, TaskStatusResponse
from schemas.training import LoraManifest, TrainingOptions
from schemas.webhooks import WebhookEvent


class AsyncClient:
    """Talks to an acefarm gateway from asyncio: submit and follow jobs, download results, train and manage LoRAs.

    `url` and `api_key` default to `ACEFARM_URL` and `ACEFARM_API_KEY` (then `http://127.0.0.1:8000`, no key).
    Connection errors and 429/5xx answers are retried with backoff (honouring `Retry-After`) where repeating
    is safe; a submit is always sent with an `Idempotency-Key`, the same on every retry, so it never queues twice.
    Failures raise `AcefarmError` (HTTP status and the API's message). Methods are those of `Client`, awaited;
    `events` is an async iterator.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(url, api_key, timeout_s, retry)
        self._http = httpx.AsyncClient(base_url=self.config.url, timeout=timeout_s, headers={"User-Agent": USER_AGENT})

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        """`call`'s successful answer, after the retries its policy allows; `AcefarmError` otherwise."""
        retry = 0
        while True:
            outcome: Outcome
            with ExitStack() as stack:
                request = call.build(self._http, self.config, stack)
                try:
                    outcome = await self._http.send(request)
                except httpx.TransportError as error:
                    outcome = error
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                return outcome
            delay = retry_delay(call, self.config.retry, retry, outcome)
            if delay is None:
                raise AcefarmError.after(f"{call.method} {request.url}", outcome)
            await asyncio.sleep(delay)
            retry += 1

    async def submit(
        self, request: GenerateRequest | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> TaskAccepted:
        """Queue a generation job: a `GenerateRequest`, or its fields as keywords (`prompt=..., duration=...`).

        `idempotency_key` (default: a new UUID) names the job: retries, these and the client's own, get the
        same task back."""
        call = calls.submit(calls.generate_request(request, fields), idempotency_key or str(uuid.uuid4()))
        return TaskAccepted.model_validate_json((await self._send(call)).content)

    async def status(self, task_id: str) -> TaskStatusResponse:
        """The job's current status."""
        return TaskStatusResponse.model_validate_json((await self._send(calls.status(task_id))).content)

    async def cancel(self, task_id: str) -> TaskStatusResponse:
        """Cancel an unfinished job; on a job that already ended, delete its files instead (its status stays).
        Returns the status as it is now."""
        response = await self._send(calls.cancel(task_id))
        if response.status_code == calls.FILES_DELETED:
            return await self.status(task_id)
        return TaskStatusResponse.model_validate_json(response.content)

    async def events(
        self, task_id: str, *, last_event_id: int | None = None, deadline: float | None = None
    ) -> AsyncIterator[TaskStatusResponse]:
        """The job's statuses as they change, over server-sent events, ending with the final one.

        A dropped or silent stream is reopened with `Last-Event-ID`, so nothing is missed or repeated.
        `deadline` (`time.monotonic()` value) raises `TimeoutError` once passed (checked at every line and
        keep-alive)."""
        last, retry = last_event_id, 0
        while True:
            outcome: Outcome = httpx.RemoteProtocolError("the event stream ended before the job did")
            headers = {**self.config.auth_headers(), "Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self._http.stream(
                    "GET", calls.events_path(task_id), headers=headers, timeout=self.config.stream_timeout_s
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        outcome = response
                    else:
                        decoder = EventDecoder()
                        async for line in response.aiter_lines():
                            check_deadline(deadline, task_id)
                            event = decoder.feed(line)
                            if event is None:
                                continue
                            status = TaskStatusResponse.model_validate_json(event.data)
                            last, retry = status.version, 0
                            yield status
                            if status.status.is_final:
                                return
            except httpx.TransportError as error:
                outcome = error
            delay = retry_delay(STREAM, self.config.retry, retry, outcome)
            if delay is None:
                raise AcefarmError.after(f"GET {calls.events_path(task_id)}", outcome)
            check_deadline(deadline, task_id)
            await asyncio.sleep(delay)
            retry += 1

    async def wait(
        self, task_id: str, *, on_status: OnStatus | None = None, timeout_s: float | None = None
    ) -> TaskStatusResponse:
        """Follow the job until it ends and return its final status (whatever the outcome); `on_status` sees
        every change. `TimeoutError` after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        async for status in self.events(task_id, deadline=deadline):
            if on_status is not None:
                on_status(status)
            if status.status.is_final:
                return status
        raise AcefarmError(None, f"the event stream of {task_id} ended before the job did")

    async def generate(
        self,
        request: GenerateRequest | None = None,
        *,
        download_to: str | Path | None = None,
        on_status: OnStatus | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        **fields: Any,
    ) -> GenerateResult:
        """Submit a job (like `submit`), follow it to the end, and download its takes into `download_to` (a
        directory, or a file path: take n > 0 gets `-n` before the suffix). Raises `TaskFailed` unless it
        succeeded."""
        accepted = await self.submit(request, idempotency_key=idempotency_key, **fields)
        final = await self.wait(accepted.task_id, on_status=on_status, timeout_s=timeout_s)
        if final.status is not TaskState.SUCCESS:
            raise TaskFailed(final)
        files = await self.download_results(final, download_to) if download_to is not None else []
        return GenerateResult(status=final, files=files)

    async def download_results(self, status: TaskStatusResponse, dest: str | Path) -> list[Path]:
        """Download every result file of a finished job (see `generate` for how they are named)."""
        urls = status.file_urls
        return [await self.download(url, path) for url, path in zip(urls, result_paths(dest, urls), strict=True)]

    async def download(self, file_url: str, dest: str | Path) -> Path:
        """Download one result URL (relative or absolute; redirects to S3 followed) to `dest` (a file, or a
        directory to put it in, created if missing); written to a temporary file first, so `dest` is whole or
        absent."""
        url = self.config.absolute(file_url)
        target = Path(dest)
        if await asyncio.to_thread(is_directory, dest):
            target = target / name_from_url(url)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        part, retry = partial_path(target), 0
        while True:
            outcome: Outcome
            try:
                async with self._http.stream(
                    "GET", url, headers=self.config.auth_headers(url), follow_redirects=True
                ) as response:
                    if response.is_success:
                        out = await asyncio.to_thread(part.open, "wb")
                        try:
                            async for chunk in response.aiter_bytes(1 << 16):
                                await asyncio.to_thread(out.write, chunk)
                        finally:
                            await asyncio.to_thread(out.close)
                        await asyncio.to_thread(part.replace, target)
                        return target
                    await response.aread()
                    outcome = response
            except httpx.TransportError as error:
                outcome = error
            delay = retry_delay(STREAM, self.config.retry, retry, outcome)
            if delay is None:
                await asyncio.to_thread(part.unlink, missing_ok=True)
                raise AcefarmError.after(f"GET {url}", outcome)
            await asyncio.sleep(delay)
            retry += 1

    async def upload(self, path: str | Path) -> UploadedAudio:
        """Upload an input audio file; pass the answer's `key` as `src_audio_key` or `reference_audio_key`."""
        return UploadedAudio.model_validate_json((await self._send(calls.upload(Path(path)))).content)

    async def train_lora(
        self,
        dataset_zip: str | Path,
        style_name: str,
        options: TrainingOptions | None = None,
        *,
        webhook: str | None = None,
        webhook_events: list[WebhookEvent] | None = None,
    ) -> TaskAccepted:
        """Queue LoRA training on a zip of tracks (docs/lora.md); the answer names the task and the future `lora_id`."""
        call = calls.train_lora(Path(dataset_zip), style_name, options, webhook, webhook_events)
        return TaskAccepted.model_validate_json((await self._send(call)).content)

    async def train(
        self,
        dataset_zip: str | Path,
        style_name: str,
        options: TrainingOptions | None = None,
        *,
        on_status: OnStatus | None = None,
        timeout_s: float | None = None,
    ) -> TrainingResult:
        """Queue LoRA training, follow it to the end and return the new LoRA's manifest; `TaskFailed` unless it
        succeeded."""
        accepted = await self.train_lora(dataset_zip, style_name, options)
        final = await self.wait(accepted.task_id, on_status=on_status, timeout_s=timeout_s)
        if final.status is not TaskState.SUCCESS or final.lora_id is None:
            raise TaskFailed(final)
        return TrainingResult(status=final, lora=await self.lora(final.lora_id))

    async def loras(self) -> list[LoraManifest]:
        """Your finished LoRAs and the public ones, newest first."""
        return [LoraManifest.model_validate(item) for item in (await self._send(calls.loras())).json()]

    async def lora(self, lora_id: str) -> LoraManifest:
        """One LoRA's manifest (404 `AcefarmError` while it is unknown or still training)."""
        return LoraManifest.model_validate_json((await self._send(calls.lora(lora_id))).content)

    async def publish_lora(self, lora_id: str, public: bool = True) -> LoraManifest:
        """Share your LoRA with every user (`public=False`: make it private again)."""
        return LoraManifest.model_validate_json((await self._send(calls.publish_lora(lora_id, public))).content)

    async def delete_lora(self, lora_id: str) -> None:
        """Delete your LoRA."""
        await self._send(calls.delete_lora(lora_id))
