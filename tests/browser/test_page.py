"""The web page in a real headless Chromium (Debian's package, driven by Playwright) against the whole
service: embedded broker, gateway, streams and one GPU consumer running the deterministic tone engine.

Screenshots land in `test-artifacts/` (gitignored) for people to look at.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from playwright.sync_api import Browser, FilePayload, Locator, Page, Route, ViewportSize, expect, sync_playwright

from acefarm.devtools.broker import free_port
from acefarm.devtools.keys_cli import publish_key
from acefarm.infra.settings import Settings
from schemas.keys import ApiKeyRecord
from tests.lora.zips import tone_dataset
from tests.support.processes import ROOT, Service, start_service, wait_until_ready

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox, and no background calls home (refused, and slow to fail).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
TONE_ENGINE = "tests.support.tone_engine:ToneEngine"
# Dataset limits that admit a zip of a few short tones (the LoRA tests use the same).
SHORT_TONE_LIMITS = {
    "LORA_MIN_TRACKS": "2",
    "LORA_MAX_TRACKS": "4",
    "LORA_MIN_TRACK_SECONDS": "1",
    "LORA_MAX_TRACK_SECONDS": "8",
}
PHONE: ViewportSize = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's Chromium is missing: install it with `apt-get install -y chromium`"
    ),
    pytest.mark.timeout(300),
]


@dataclass
class Stack:
    """The service processes behind one gateway URL; the gateway can be restarted on the same port."""

    url: str
    port: int
    env: dict[str, str]
    log_dir: Path
    services: dict[str, Service]

    def start_gateway(self) -> None:
        argv = ["-m", "acefarm", "gateway", "--port", str(self.port)]
        gateway = start_service("gateway", argv, self.env, self.log_dir)
        self.services["gateway"] = gateway
        wait_until_ready(f"{self.url}/readyz", gateway, timeout_s=120)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{service.log()[-3000:]}" for name, service in self.services.items())


@pytest.fixture(scope="module")
def stack(kafka_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Gateway, streams and one GPU consumer with the tone engine, as separate processes."""
    work = tmp_path_factory.mktemp("page")
    port = free_port()
    env = {
        **kafka_env,
        "ENGINE": TONE_ENGINE,
        "DEVICE": "cpu",
        "OUTPUT_DIR": str(work / "data"),
        "AUTH_MODE": "off",
        # One signing secret for every gateway started here, so signed links survive a gateway restart.
        "LINK_SIGNING_SECRET": "p" * 48,
        # Slow fake diffusion steps so that the progress bar visibly moves.
        "TONE_ENGINE_STEP_S": "0.4",
        **SHORT_TONE_LIMITS,
    }
    stack = Stack(f"http://127.0.0.1:{port}", port, env, work / "logs", {})
    try:
        stack.services["streams"] = start_service("streams", ["-m", "acefarm", "streams"], env, stack.log_dir)
        stack.services["scheduler"] = start_service("scheduler", ["-m", "acefarm", "scheduler"], env, stack.log_dir)
        stack.services["gpu"] = start_service("gpu", ["-m", "acefarm", "gpu-consumer"], env, stack.log_dir)
        stack.start_gateway()
        yield stack
    finally:
        for service in stack.services.values():
            service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A phone-sized page on a fresh profile; fails the test on any uncaught script error."""
    context = browser.new_context(viewport=PHONE, base_url=stack.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not script_errors, f"script errors on the page: {script_errors}\n{stack.logs()}"


def fill_form(page: Page, *, prompt: str, duration: str, audio_format: str = "flac", steps: str = "10") -> None:
    form = page.locator("#generate-form")
    form.get_by_label("Prompt").fill(prompt)
    form.get_by_label("Lyrics").fill("[verse]\nrain on the window\n[chorus]\nla la la")
    form.get_by_label("Duration (s)").fill(duration)
    form.get_by_label("Format").select_option(audio_format)
    form.get_by_text("More options").click()
    form.get_by_label("Seed").fill("7")
    form.get_by_label("Steps", exact=True).fill(steps)


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


# How many pixels of a canvas something was drawn on (its background is CSS, not pixels).
DRAWN_PIXELS = """
(canvas) => {
  if (!canvas.width || !canvas.height) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn += 1;
  return drawn;
}
"""


def expect_waveform(card: Locator) -> Locator:
    """The card's first take has a drawn waveform; returns its canvas."""
    canvas = card.locator("canvas.waveform").first
    expect(canvas).to_have_attribute("data-waveform", "drawn", timeout=30_000)
    drawn = canvas.evaluate(DRAWN_PIXELS)
    box = canvas.bounding_box()
    assert box and drawn > box["width"], f"a blank waveform: {drawn} pixels drawn"
    return canvas


PROGRESS_BETWEEN_0_AND_1 = """
() => [...document.querySelectorAll('.job progress')].some(
  (bar) => bar.hasAttribute('value') && bar.value > 0 && bar.value < 1)
"""


def test_generate_follow_progress_and_play(page: Page, stack: Stack) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="Make a track")).to_be_visible()
    fill_form(page, prompt="warm lofi piano, vinyl crackle", duration="3")

    with page.expect_response("**/generate") as submitted:
        page.get_by_role("button", name="Generate").click()
    assert submitted.value.status == 202
    task_id = submitted.value.json()["task_id"]
    card = page.locator(f'.job[data-task-id="{task_id}"]')
    expect(card).to_be_visible()

    # Live progress from the event stream: the bar is seen strictly between 0 and 1 while running.
    page.wait_for_function(PROGRESS_BETWEEN_0_AND_1, polling="raf", timeout=60_000)
    expect(card).to_have_attribute("data-status", "running")
    expect(card.locator('[data-role="stage"]')).to_contain_text(re.compile(r"step \d+ / 10"))
    screenshot(page, "page-running-390.png")

    # Success: one player per file, a download link, and no cancel button any more.
    expect(card).to_have_attribute("data-status", "success", timeout=60_000)
    audio = card.locator("audio")
    expect(audio).to_have_count(1)
    expect(card.locator('[data-role="cancel"]')).to_be_hidden()
    src = audio.get_attribute("src")
    assert src
    expect(card.get_by_role("link", name=re.compile("Download"))).to_have_attribute("href", src)
    # What the take used: its seed, the metadata with where each value came from, the model.
    used = card.locator(".result-meta")
    expect(used).to_contain_text("Seed7")
    expect(used).to_contain_text("BPMmodel's choice (default)")
    expect(used).to_contain_text("Duration3 s (yours)")
    expect(used).to_contain_text("Modeldefault")

    # The browser itself loads the file's metadata, and the server serves it as audio.
    duration = page.wait_for_function(
        "(el) => el.readyState >= 1 && el.duration", arg=audio.element_handle(), timeout=30_000
    ).json_value()
    assert abs(float(duration) - 3.0) < 0.1

    # The take's waveform is drawn from the decoded file, and a click on it seeks the player.
    canvas = expect_waveform(card)
    box = canvas.bounding_box()
    assert box
    canvas.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    assert abs(float(audio.evaluate("(el) => el.currentTime")) - 1.5) < 0.2
    response = httpx.get(httpx.URL(stack.url).join(src), follow_redirects=True, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("audio/"), response.headers["content-type"]
    data, rate = sf.read(io.BytesIO(response.content), always_2d=True)
    assert abs(len(data) / rate - 3.0) < 0.1

    shot = screenshot(page, "page-success-390.png")
    assert shot.stat().st_size > 0
    page.set_viewport_size({"width": 1280, "height": 900})
    screenshot(page, "page-success-1280.png")


def test_a_bad_duration_is_shown_next_to_the_field(page: Page) -> None:
    page.goto("/")
    fill_form(page, prompt="too long", duration="9999")
    with page.expect_response("**/generate") as submitted:
        page.get_by_role("button", name="Generate").click()
    assert submitted.value.status == 400
    assert "duration" in submitted.value.json()["detail"]

    field = page.locator('.field[data-field="duration"]')
    error = field.locator(".error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("600")
    expect(page.get_by_label("Duration (s)")).to_have_attribute("aria-invalid", "true")
    # Nothing else is blamed, and no job was created.
    expect(page.locator(".field.invalid")).to_have_count(1)
    expect(page.locator("#generate-form-error")).to_be_hidden()
    expect(page.locator(".job")).to_have_count(0)
    screenshot(page, "page-bad-duration-390.png")

    # Fixing the value clears the message on the next submit.
    page.get_by_label("Duration (s)").fill("2")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".job")).to_have_count(1)
    expect(error).to_be_hidden()
    expect(page.locator(".job")).to_have_attribute("data-status", "success", timeout=60_000)


def test_several_jobs_each_with_its_own_state_and_cancel(page: Page) -> None:
    page.goto("/")

    def submit() -> Locator:
        with page.expect_response("**/generate") as submitted:
            page.get_by_role("button", name="Generate").click()
        return page.locator(f'.job[data-task-id="{submitted.value.json()["task_id"]}"]')

    fill_form(page, prompt="slow one step_s=1", duration="2", steps="30")
    slow = submit()
    expect(slow).to_have_attribute("data-status", "running", timeout=60_000)
    page.get_by_label("Prompt").fill("quick one")
    page.locator("#generate-form").get_by_label("Steps", exact=True).fill("4")
    quick = submit()

    expect(page.locator(".job")).to_have_count(2)
    expect(page.locator(".job").first).to_have_attribute("data-task-id", quick.get_attribute("data-task-id") or "")
    expect(slow.locator(".job-title")).to_have_text("slow one step_s=1")
    # One consumer runs one job at a time: the second waits while the first runs.
    expect(quick).to_have_attribute("data-status", "pending")
    expect(slow).to_have_attribute("data-status", "running")

    slow.get_by_role("button", name="Cancel").click()
    expect(slow).to_have_attribute("data-status", "cancelled", timeout=60_000)
    expect(slow.locator("audio")).to_have_count(0)
    expect(quick).to_have_attribute("data-status", "success", timeout=60_000)
    expect(quick.locator("audio")).to_have_count(1)
    screenshot(page, "page-two-jobs-390.png")


def test_a_waiting_job_shows_its_place_in_the_queue(page: Page) -> None:
    """One GPU busy with a long job: one job waits in the GPU's queue, the ones after it in the scheduler's,
    and the last card says how many jobs are ahead of it."""
    page.goto("/")

    def submit() -> Locator:
        with page.expect_response("**/generate") as submitted:
            page.get_by_role("button", name="Generate").click()
        return page.locator(f'.job[data-task-id="{submitted.value.json()["task_id"]}"]')

    fill_form(page, prompt="long one step_s=1", duration="2", steps="30")
    long = submit()
    expect(long).to_have_attribute("data-status", "running", timeout=60_000)
    page.get_by_label("Prompt").fill("waiting in line")
    page.locator("#generate-form").get_by_label("Steps", exact=True).fill("2")
    waiting = [submit() for _ in range(3)]
    expect(waiting[-1].locator('[data-role="stage"]')).to_have_text(
        re.compile(r"^Waiting for a GPU · (next in line|\d+ jobs? ahead)( · starts in about .+)?$")
    )
    screenshot(page, "page-queue-position-390.png")
    for card in [long, *waiting]:
        card.get_by_role("button", name="Cancel").click()
    for card in [long, *waiting]:
        expect(card).to_have_attribute("data-status", re.compile("cancelled|success"), timeout=60_000)


# Records what the page's EventSources go through, without changing how they behave.
WATCH_EVENT_SOURCES = """
window.__sse = { opened: 0, errors: 0, gaveUp: 0 };
window.EventSource = class extends window.EventSource {
  constructor(...args) {
    super(...args);
    window.__sse.opened += 1;
    this.addEventListener("error", () => {
      window.__sse.errors += 1;
      if (this.readyState === EventSource.CLOSED) window.__sse.gaveUp += 1;
    });
  }
};
"""


def wait_for_log(service: Service, *needles: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(all(needle in line for needle in needles) for line in service.log().splitlines()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{service.name} never logged {needles}:\n{service.log()[-3000:]}")


@pytest.mark.parametrize("reconnect", ["by-the-browser", "by-the-page"])
def test_the_stream_resumes_after_the_gateway_restarts(page: Page, stack: Stack, reconnect: str) -> None:
    """The event stream drops mid-job; the job finishes while no gateway runs; once one is back the
    page shows the final state it missed.

    by-the-browser: EventSource's own reconnect (it sends Last-Event-ID). by-the-page: the first
    reconnect is answered 503, so the browser gives up (readyState CLOSED) and the page must resume
    by itself (GET /status, then a new EventSource).
    """
    page.add_init_script(WATCH_EVENT_SOURCES)
    if reconnect == "by-the-page":
        streams_opened: list[str] = []

        def refuse_first_reconnect(route: Route) -> None:
            streams_opened.append(route.request.url)
            if len(streams_opened) == 2:
                route.fulfill(status=503, json={"status_code": 503, "detail": "restarting"})
            else:
                route.continue_()

        page.route(re.compile(r"/tasks/[^/?]+/events"), refuse_first_reconnect)
    page.goto("/")
    fill_form(page, prompt="survives a restart step_s=0.3", duration="2", steps="12")
    with page.expect_response("**/generate") as submitted:
        page.get_by_role("button", name="Generate").click()
    task_id = submitted.value.json()["task_id"]
    card = page.locator(f'.job[data-task-id="{task_id}"]')
    page.wait_for_function(PROGRESS_BETWEEN_0_AND_1, polling="raf", timeout=60_000)

    stack.services["gateway"].kill()  # the stream drops mid-job
    wait_for_log(stack.services["gpu"], "job.finished", task_id)
    assert card.get_attribute("data-status") == "running"  # nothing told the page yet
    assert page.evaluate("window.__sse.errors") >= 1

    if reconnect == "by-the-page":
        page.wait_for_function("window.__sse.gaveUp >= 1")

    stack.start_gateway()
    expect(card).to_have_attribute("data-status", "success", timeout=60_000)
    expect(card.locator("audio")).to_have_count(1)
    expect(card.locator('[data-role="percent"]')).to_have_text("100%")


def test_jobs_survive_a_page_reload(page: Page) -> None:
    page.goto("/")
    fill_form(page, prompt="remember me", duration="1", steps="2")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".job")).to_have_attribute("data-status", "success", timeout=60_000)
    page.reload()
    card = page.locator(".job")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-status", "success")
    expect(card.locator("audio")).to_have_count(1)


def test_the_model_picker_follows_get_models(page: Page, stack: Stack) -> None:
    """One model: no picker. Several (as a farm with pools answers): a picker whose choice is sent as `model`."""
    with page.expect_response("**/models"):
        page.goto("/")
    expect(page.locator("#model-field")).to_be_hidden()

    pools = {
        "default": "turbo",
        "models": [
            {"name": "turbo", "default": True, "task_types": ["text2music"]},
            {"name": "base", "default": False, "task_types": ["extract", "text2music"]},
        ],
    }
    page.route("**/models", lambda route: route.fulfill(json=pools))
    with page.expect_response("**/models"):
        page.reload()
    picker = page.locator("#model-field")
    expect(picker).to_be_visible()
    expect(picker.get_by_role("option")).to_have_text(["turbo (default)", "base"])
    fill_form(page, prompt="on another model", duration="2")
    picker.get_by_label("Model").select_option("base")
    with page.expect_request("**/generate") as sent:
        page.get_by_role("button", name="Generate").click()
    assert sent.value.post_data_json["model"] == "base"
    # This farm serves one model: the gateway says so next to the picker.
    expect(picker.locator(".error")).to_contain_text("no pool serves the model 'base'")


def test_lora_controls_follow_what_the_server_offers(page: Page, stack: Stack) -> None:
    """The LoRA picker and the training upload show only when the server answers GET /loras."""
    has_loras = httpx.get(f"{stack.url}/loras").status_code == 200
    with page.expect_response("**/loras"):
        page.goto("/")
    train, picker = page.locator("#train-section"), page.locator("#lora-field")
    if not has_loras:
        expect(train).to_be_hidden()
        expect(picker).to_be_hidden()
        return
    expect(train).to_be_visible()
    expect(picker).to_be_visible()
    # A file that is not a zip is refused by the gateway, and the reason shows under the file field.
    not_a_zip: FilePayload = {"name": "tracks.zip", "mimeType": "application/zip", "buffer": b"this is not a zip"}
    train.get_by_label("Tracks (.zip)").set_input_files(files=not_a_zip)
    train.get_by_label("Style name").fill("dream pop")
    with page.expect_response("**/train/lora") as answered:
        train.get_by_role("button", name="Start training").click()
    assert 400 <= answered.value.status < 500
    expect(train.locator('.field[data-field="file"] .error')).to_be_visible()
    expect(page.locator(".job")).to_have_count(0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ACE-Step checkpoint, with its tiny 5 Hz LM in `lm/`."""
    model = tmp_path_factory.mktemp("tiny") / "model"
    # In a child process, as `acefarm dev` does: keeps torch out of the test process.
    subprocess.run([sys.executable, "-m", "acefarm", "models", "make-tiny", str(model)], check=True, cwd=ROOT)
    return model


@pytest.fixture(scope="module")
def trainer(stack: Stack, tiny_model: Path) -> Iterator[Service]:
    """A LoRA trainer process on the tiny checkpoint, beside the stack."""
    # Progress up to 50 times a second: the tiny model trains in a second or two, and the page's loss chart
    # should see several steps rather than whichever one the default 10 Hz throttle lets through.
    env = {**stack.env, "MODEL_PATH": str(tiny_model), "PROGRESS_MAX_HZ": "50"}
    service = start_service("trainer", ["-m", "acefarm", "trainer", "--device", "cpu"], env, stack.log_dir)
    stack.services["trainer"] = service
    yield service
    service.stop()


# Keeps every text the job cards' stage lines show, however briefly.
RECORD_STAGE_LINES = """
window.__stages = [];
new MutationObserver(() => {
  for (const line of document.querySelectorAll('.job [data-role="stage"]')) {
    if (line.textContent && window.__stages.at(-1) !== line.textContent) window.__stages.push(line.textContent);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.mark.timeout(420)
def test_train_a_lora_then_generate_with_it(page: Page, stack: Stack, trainer: Service, tmp_path: Path) -> None:
    """Upload a zip of tones, follow training (step / total, loss) live, then pick the new style."""
    page.add_init_script(RECORD_STAGE_LINES)
    page.goto("/")
    train = page.locator("#train-section")
    train.get_by_label("Tracks (.zip)").set_input_files(tone_dataset(tmp_path / "tones.zip"))
    train.get_by_label("Style name").fill("Sine Waves")
    train.get_by_text("Training options").click()
    train.get_by_label("Rank").fill("4")
    train.get_by_label("Training steps").fill("40")
    with page.expect_response("**/train/lora") as answered:
        train.get_by_role("button", name="Start training").click()
    assert answered.value.status == 202, answered.value.text()
    lora_id = answered.value.json()["lora_id"]

    card = page.locator(".job").first
    expect(card.locator(".job-kind")).to_have_text("LoRA training")
    expect(card).to_have_attribute("data-status", "success", timeout=300_000)
    stages: list[str] = page.evaluate("window.__stages")
    assert any(re.search(r"step \d+ / 40 · loss \d+\.\d{4}", line) for line in stages), (stages, trainer.log()[-3000:])
    expect(card.locator('[data-role="results"]')).to_contain_text("Sine Waves")
    # The loss curve was drawn live from the progress events, one point per reported step.
    chart = card.locator(".loss-chart canvas")
    expect(chart).to_be_visible()
    points = int(chart.get_attribute("data-points") or 0)
    reported = {m.group(1) for line in stages if (m := re.search(r"step (\d+) / 40 · loss", line))}
    assert points >= max(2, len(reported)), (points, stages)
    assert chart.evaluate(DRAWN_PIXELS) > 0
    expect(chart).to_have_attribute(
        "aria-label", re.compile(r"^Training loss: \d+ points, \d+\.\d{4} at step \d+ of 40$")
    )
    screenshot(page, "page-lora-trained-390.png")

    # "Use this style" picks it for the next track, which the gateway accepts and a worker runs.
    card.get_by_role("button", name="Use this style").click()
    expect(page.locator("#lora_id")).to_have_value(lora_id)
    fill_form(page, prompt="in the new style", duration="1", steps="2")
    with page.expect_response("**/generate") as submitted:
        page.get_by_role("button", name="Generate").click()
    assert submitted.value.status == 202, submitted.value.text()
    generated = page.locator(".job").first
    expect(generated.locator(".job-kind")).to_contain_text("Sine Waves")
    expect(generated).to_have_attribute("data-status", "success", timeout=60_000)


def test_with_keys_on_the_page_asks_for_a_key_and_shows_only_its_own_jobs(browser: Browser, stack: Stack) -> None:
    """A gateway with AUTH_MODE=keys (the stack's workers run its jobs): the page asks for the key on the
    API's 401, keeps it, submits and follows the job with it, lists the key's unfinished job submitted
    elsewhere, and drops someone else's job planted in its list because the API answers 404 for it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**stack.env, "AUTH_MODE": "keys"}
    gateway = start_service("gateway-keys", ["-m", "acefarm", "gateway", "--port", str(port)], env, stack.log_dir)
    stack.services["gateway-keys"] = gateway
    try:
        settings = Settings(kafka_bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"])
        mine, secret = ApiKeyRecord.issue("page-user")
        theirs, their_secret = ApiKeyRecord.issue("someone-else")
        with ThreadPoolExecutor(1) as thread:  # Playwright's sync API keeps an event loop on this thread
            for record in (mine, theirs):
                thread.submit(asyncio.run, publish_key(settings, record)).result()
        wait_until_ready(f"{url}/readyz", gateway, timeout_s=120)
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/loras", headers={"X-API-Key": their_secret}).status_code != 200:
            assert time.monotonic() < deadline, "the gateway never saw the new keys"
            time.sleep(0.1)
        job = {"prompt": "not yours", "duration": 1}
        foreign = httpx.post(f"{url}/generate", json=job, headers={"X-API-Key": their_secret}).json()["task_id"]
        # Submitted elsewhere (curl, another browser): the page lists it once it knows the key.
        elsewhere_job = {"prompt": "from curl step_s=0.5", "duration": 1, "inference_steps": 12}
        elsewhere = httpx.post(f"{url}/generate", json=elsewhere_job, headers={"X-API-Key": secret}).json()["task_id"]
        planted = [{"id": foreign, "kind": "generation", "title": "someone else's"}]

        context = browser.new_context(viewport=PHONE, base_url=url)
        context.add_init_script(
            f"localStorage.setItem('acefarm.jobs.v1.{mine.key_id}', {json.dumps(json.dumps(planted))});"
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        try:
            page.goto("/")
            dialog = page.locator("#key-dialog")
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text("needs an API key")
            screenshot(page, "page-key-prompt-390.png")
            page.get_by_label("API key", exact=True).fill(secret)
            page.get_by_role("button", name="Use this key").click()
            expect(dialog).to_be_hidden()
            assert page.evaluate("localStorage.getItem('acefarm.key.v1')") == secret
            expect(page.locator(f'.job[data-task-id="{elsewhere}"]')).to_have_count(1)

            fill_form(page, prompt="mine, with a key", duration="2", steps="3")
            with page.expect_response("**/generate") as submitted:
                page.get_by_role("button", name="Generate").click()
            assert submitted.value.status == 202
            assert submitted.value.request.headers["authorization"] == f"Bearer {secret}"
            card = page.locator(f'.job[data-task-id="{submitted.value.json()["task_id"]}"]')
            expect(card).to_have_attribute("data-status", "success", timeout=60_000)
            audio = card.locator("audio")
            page.wait_for_function("(el) => el.readyState >= 1", arg=audio.element_handle(), timeout=30_000)
            expect(page.locator(f'.job[data-task-id="{foreign}"]')).to_have_count(0)
            expect(page.locator(f'.job[data-task-id="{elsewhere}"]')).to_have_attribute("data-status", "success")
            expect(page.locator(".job")).to_have_count(2)
        finally:
            context.close()
        assert not script_errors, f"script errors on the page: {script_errors}\n{stack.logs()}"
    finally:
        stack.services.pop("gateway-keys").stop()


@pytest.fixture(scope="module")
def planner(stack: Stack, tiny_model: Path) -> Iterator[Service]:
    """A planner process on the tiny 5 Hz LM, beside the stack (the stack's tone engine makes the songs)."""
    env = {
        **stack.env,
        "MODEL_PATH": str(tiny_model),
        "LM_MODEL_PATH": str(tiny_model / "lm"),
        "LM_LYRICS_MAX_TOKENS": "24",
    }
    service = start_service("planner", ["-m", "acefarm", "planner", "--device", "cpu"], env, stack.log_dir)
    stack.services["planner"] = service
    wait_for_log(service, "kafka.group_joined", timeout_s=180)
    yield service
    service.stop()


LM_FIELDS = ("bpm", "key", "time_signature", "vocal_language")


def expect_lm_metadata(card: Locator, result: dict[str, object]) -> None:
    """The card lists the metadata of the LM's `result`, the values the LM chose marked as such."""
    meta = card.locator(".lm-meta")
    for name in LM_FIELDS:
        item = meta.locator(f'[data-field="{name}"]')
        expect(item).to_contain_text(str(result[name]))
        if name in result["decided_by_lm"]:  # type: ignore[operator]
            expect(item).to_have_class(re.compile(r"\bby-lm\b"))
            expect(item.locator(".lm-mark")).to_have_text("LM")


@pytest.mark.timeout(420)
def test_thinking_switch_plans_with_the_lm_and_shows_what_it_chose(page: Page, stack: Stack, planner: Service) -> None:
    page.goto("/")
    fill_form(page, prompt="thinking piano step_s=0", duration="2", steps="2")
    page.get_by_role("switch", name="Thinking").check()
    with page.expect_response("**/generate") as submitted:
        page.get_by_role("button", name="Generate").click()
    assert submitted.value.status == 202, submitted.value.text()
    assert submitted.value.request.post_data_json["thinking"] is True
    task_id = submitted.value.json()["task_id"]
    card = page.locator(f'.job[data-task-id="{task_id}"]')
    expect(card).to_have_attribute("data-status", "success", timeout=240_000)

    result = httpx.get(f"{stack.url}/status/{task_id}").json()["result"]
    assert set(LM_FIELDS) <= set(result["decided_by_lm"]), result
    expect_lm_metadata(card, result)
    expect(card.locator(".lm-meta .by-lm")).to_have_count(len(LM_FIELDS))
    expect_waveform(card)
    screenshot(page, "page-thinking-390.png")


@pytest.mark.timeout(420)
def test_describe_it_posts_sample_and_shows_what_the_lm_wrote(page: Page, stack: Stack, planner: Service) -> None:
    page.goto("/")
    form = page.locator("#generate-form")
    form.get_by_text("Describe it").click()
    expect(form.get_by_label("Prompt")).to_be_hidden()
    form.get_by_label("Describe the song").fill("a soft love song for a rainy night")
    form.get_by_label("Duration (s)").fill("10")
    screenshot(page, "page-describe-it-390.png")
    with page.expect_response("**/sample") as submitted:
        form.get_by_role("button", name="Describe and generate").click()
    assert submitted.value.status == 202, submitted.value.text()
    body = submitted.value.request.post_data_json
    assert body == {"query": "a soft love song for a rainy night", "generate": True, "thinking": False, "duration": 10}
    task_id = submitted.value.json()["task_id"]
    card = page.locator(f'.job[data-task-id="{task_id}"]')
    expect(card.locator(".job-title")).to_have_text("a soft love song for a rainy night")
    expect(card).to_have_attribute("data-status", "success", timeout=240_000)

    status = httpx.get(f"{stack.url}/status/{task_id}").json()
    result = status["result"]
    expect_lm_metadata(card, result)
    expect(card.locator("audio")).to_have_count(len(status["file_urls"]))
    caption = card.locator('.lm-text[data-field="caption"]')
    caption.locator("summary").click()
    expect(caption.locator("p")).to_have_text(result["caption"])
    screenshot(page, "page-described-390.png")


def test_the_dashboard_link_shows_only_when_configured(browser: Browser, page: Page, stack: Stack) -> None:
    page.goto("/")
    expect(page.get_by_role("link", name="API docs")).to_be_visible()
    expect(page.locator("#dashboard-link")).to_be_hidden()

    port = free_port()
    dashboard = "https://grafana.example.com/d/acefarm-farm"
    env = {**stack.env, "DASHBOARD_URL": dashboard}
    gateway = start_service("gateway-dash", ["-m", "acefarm", "gateway", "--port", str(port)], env, stack.log_dir)
    stack.services["gateway-dash"] = gateway
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", gateway, timeout_s=120)
        context = browser.new_context(viewport=PHONE, base_url=f"http://127.0.0.1:{port}")
        try:
            other = context.new_page()
            other.goto("/")
            link = other.get_by_role("link", name="Dashboard")
            expect(link).to_be_visible()
            expect(link).to_have_attribute("href", dashboard)
            screenshot(other, "page-dashboard-link-390.png")
        finally:
            context.close()
    finally:
        stack.services.pop("gateway-dash").stop()
