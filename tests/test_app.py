"""``python -m refusion_pl.app``: the web demo, driven through Gradio's Python client on a loopback port.

One server for the module: a checkpoint trained here with the smoke preset, a small pixel limit so that a
"too large" upload is cheap to make. Results must equal the CLI's files byte for byte.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

from refusion_pl.config import CONFIG_DIR
from refusion_pl.data.io import read_image, write_image
from refusion_pl.restore import RestoreError, restore
from refusion_pl.train import train
from tests.conftest import FAST_SMOKE

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

MAX_PIXELS = 4000  # the server's limit in this test: 40x45 passes, 80x80 is refused
SETTINGS = {"sampler": "sde", "spacing": "ou", "steps": 3, "tile": "auto", "seed": 7}  # the page's order


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose_entry(name: str, *overrides: str, output_dir: Path | None = None) -> Any:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir / "logs")
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pixel model trained for two steps with the smoke preset (a real training checkpoint)."""
    run = tmp_path_factory.mktemp("train")
    train(compose_entry("train", *FAST_SMOKE, "logger=none", output_dir=run))
    return run / "diffusion" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Any]]:
    from refusion_pl.app import serve

    port = free_port()
    cfg = compose_entry(
        "app",
        f"ckpt={checkpoint}",
        f"port={port}",
        "device=cpu",
        f"max_pixels={MAX_PIXELS}",
        "max_upload=1mb",
    )
    # gradio's file cache of this server only (the default /tmp/gradio is shared with any other test run)
    saved_cache = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    demo = serve(cfg, block=False)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=tmp_path_factory.mktemp("dl"))
    yield client, demo
    demo.close()
    shutil.rmtree(demo.refusion_service.workdir, ignore_errors=True)
    if saved_cache is None:
        os.environ.pop("GRADIO_TEMP_DIR")
    else:
        os.environ["GRADIO_TEMP_DIR"] = saved_cache
    with socket.socket() as sock:  # the port is free again: nothing listens (closed connections may linger)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def page_inputs(*files: Path, **settings: Any) -> list[Any]:
    """The restore event's inputs: uploads, SETTINGS (overridden by ``settings``), empty lens fields."""
    return [[handle_file(str(f)) for f in files], *{**SETTINGS, **settings}.values(), "", "", None]


def restore_page(client: Client, *files: Path, **settings: Any) -> tuple[Any, list[str], str]:
    return client.predict(*page_inputs(*files, **settings), api_name="/restore")


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def test_page_result_equals_the_cli_file(server, checkpoint, tmp_path):
    client, _ = server
    source = tmp_path / "in"
    write_image(source / "deep.png", photo(37, 45), bit_depth=16)  # odd size, 16 bits
    Image.fromarray((photo(40, 32, seed=1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
        source / "snap.jpg", quality=90
    )
    comparison, downloads, status = restore_page(client, source / "deep.png", source / "snap.jpg")
    assert status.startswith("Restored 2 file(s) in **") and "3 steps" in status and "seed 7" in status, (
        status
    )
    by_name = {Path(path).name: Path(path) for path in downloads}
    assert sorted(by_name) == ["deep-restored.png", "snap-restored.jpg"]
    before, after = (Image.open(path) for path in comparison)
    assert before.size == after.size == (45, 37)

    # The CLI's entry config and function, in-process (a second interpreter start costs ~20 s on 2 cores).
    cli_cfg = compose_entry(
        "restore", f"ckpt={checkpoint}", f"input={source}", f"output={tmp_path / 'cli'}", "device=cpu",
        "sampler=sde", "sample_steps=3", "tile=auto", "seed=7", "progress=false",
    )  # fmt: skip
    assert restore(cli_cfg).ok
    for name in ("deep", "snap"):
        cli = next((tmp_path / "cli").glob(f"{name}.*"))
        page = by_name[f"{name}-restored{cli.suffix}"]
        assert page.read_bytes() == cli.read_bytes(), name
    assert read_image(by_name["deep-restored.png"])[1].bit_depth == 16
    # A different seed gives a different result: the comparison above could fail.
    _, other, _ = restore_page(client, source / "deep.png", seed=8)
    assert Path(other[0]).read_bytes() != by_name["deep-restored.png"].read_bytes()


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(server, tmp_path):
    client, _ = server
    good = tmp_path / "good.png"
    write_image(good, photo(40, 45))
    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    truncated = tmp_path / "cut.png"
    write_image(tmp_path / "whole.png", photo(40, 45, seed=3))
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:-2000])
    large = tmp_path / "large.png"
    write_image(large, photo(80, 80))
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    expected = {
        not_image: "not a readable image",
        truncated: "truncated",
        large: f"above the limit of {MAX_PIXELS}",
        text: "not an image file this app restores",
    }
    for upload, message in expected.items():
        with pytest.raises(AppError, match=message):
            restore_page(client, upload)
    with pytest.raises(AppError, match="upload an image first"):
        client.predict(*page_inputs(), api_name="/restore")
    with pytest.raises(AppError, match="tile"):
        restore_page(client, good, tile="tiny")
    _, downloads, status = restore_page(client, good, large)  # one good, one bad: the good one is restored
    assert [Path(p).name for p in downloads] == ["good-restored.png"]
    assert "Not restored" in status and "large.png" in status and "above the limit" in status, status


def test_concurrent_requests_wait_in_the_queue(server, tmp_path, monkeypatch):
    client, demo = server
    service = demo.refusion_service
    spans: list[tuple[float, float]] = []
    original = service.restore

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spans.append((start, time.perf_counter()))

    monkeypatch.setattr(service, "restore", timed)
    write_image(tmp_path / "a.png", photo(40, 45))
    jobs = [client.submit(*page_inputs(tmp_path / "a.png"), api_name="/restore") for _ in range(3)]
    results = [job.result(timeout=120) for job in jobs]
    outputs = [Path(result[1][0]).read_bytes() for result in results]
    assert outputs[0] == outputs[1] == outputs[2]
    spans.sort()
    assert len(spans) == 3
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


def test_the_page_shows_sampling_progress(server, tmp_path):
    client, demo = server
    write_image(tmp_path / "p.png", photo(48, 48))
    steps = demo.refusion_service.steps_max
    job = client.submit(
        *page_inputs(tmp_path / "p.png", steps=steps, tile="none", seed=0), api_name="/restore"
    )
    seen: set[str] = set()
    while not job.done():
        status = job.status()
        seen |= {unit.desc or "" for unit in status.progress_data or []}
        time.sleep(0.01)
    assert job.result(timeout=60)[2].startswith("Restored 1"), job.result()
    assert "sde sampling" in seen, seen


@pytest.mark.parametrize("task", ["bokeh", "stereo_sr"])
def test_stereo_and_bokeh_checkpoints_restore_like_the_cli(task, tmp_path):
    """The page's request path (``Service``) for the paper's other tasks: lens fields, a left/right pair."""
    from refusion_pl.app import build_app, load_service

    run = tmp_path / "run"
    fast = ("trainer.max_steps=2", "trainer.val_check_interval=2", "figure.enabled=false", "logger=none")
    train(compose_entry("train", f"task={task}", "experiment=smoke", *fast, output_dir=run))
    ckpt = run / "diffusion" / "checkpoints" / "last.ckpt"
    service = load_service(compose_entry("app", f"ckpt={ckpt}", "device=cpu"))
    try:
        build_app(service, compose_entry("app", f"ckpt={ckpt}", "device=cpu"))  # the page builds for it
        request = service.settings("sde", "ou", 2, "auto", 3)
        source = tmp_path / "in"
        lenses: dict[str, Any] = {}
        if task == "stereo_sr":
            files = [source / "pair_L.png", source / "pair_R.png"]
        else:
            files = [source / "x.png"]
            lenses = {"src_lens": "Sony50mmf16.0AS", "tgt_lens": "Sony50mmf1.8BS", "disparity": 20}
            with pytest.raises(RestoreError, match="lens settings"):
                service.lenses("", "", None)
        for index, file in enumerate(files):
            write_image(file, photo(16, 20, seed=index))
        outputs, failures, _, _ = service.restore(
            [str(f) for f in files], request, service.lenses(**lenses) if lenses else None
        )
        assert not failures and [p.name for p in outputs] == [f"{f.stem}-restored.png" for f in files]
        cli = tmp_path / "cli"
        overrides = [f"{key}={value}" for key, value in lenses.items()]
        cli_cfg = compose_entry(
            "restore", f"ckpt={ckpt}", f"input={source}", f"output={cli}", "device=cpu", "sampler=sde",
            "sample_steps=2", "tile=auto", "seed=3", "progress=false", *overrides,
        )  # fmt: skip
        assert restore(cli_cfg).ok
        for file, output in zip(files, outputs):
            assert output.read_bytes() == (cli / file.name).read_bytes(), file.name
    finally:
        shutil.rmtree(service.workdir, ignore_errors=True)


def blocked_restores(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Hold every restoration at a gate: (started, gate); the first request occupies the queue's one worker."""
    started, gate = threading.Event(), threading.Event()
    original = service.restore

    def held(*args: Any, **kwargs: Any) -> Any:
        started.set()
        gate.wait(timeout=30)  # a test that never opens the gate still ends (and fails its assertions)
        return original(*args, **kwargs)

    monkeypatch.setattr(service, "restore", held)
    return started, gate


def test_a_queued_job_reports_its_position(server, tmp_path, monkeypatch):
    client, demo = server
    started, gate = blocked_restores(demo.refusion_service, monkeypatch)
    write_image(tmp_path / "q.png", photo(16, 16))
    jobs = [client.submit(*page_inputs(tmp_path / "q.png", steps=1), api_name="/restore")]
    try:
        assert started.wait(timeout=30)  # the first job holds the worker
        statuses = []
        for rank in (0, 1):  # join one at a time, so the order in the queue is known
            jobs.append(client.submit(*page_inputs(tmp_path / "q.png", steps=1), api_name="/restore"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and jobs[-1].status().rank != rank:
                time.sleep(0.02)
            statuses.append(jobs[-1].status())
    finally:
        gate.set()
        results = [job.result(timeout=60) for job in jobs]
    first, second = statuses
    assert (first.code, first.rank, first.queue_size) == (Status.IN_QUEUE, 0, 1), first  # next in line
    assert (second.code, second.rank, second.queue_size) == (Status.IN_QUEUE, 1, 2), second  # one ahead of it
    assert all(result[2].startswith("Restored 1") for result in results)


def test_the_page_in_a_browser_restores_and_shows_the_queue(server, tmp_path, monkeypatch):
    """Headless Chromium from the distribution: upload, queue behind a running job, result, screenshot."""
    from refusion_pl import app_browser

    if app_browser.find_browser() is None or importlib.util.find_spec("selenium") is None:
        message = "no chromium/chromedriver or selenium (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: the browser test must run in CI")
        pytest.skip(message)
    client, demo = server
    url = f"http://127.0.0.1:{demo.server_port}/"
    started, gate = blocked_restores(demo.refusion_service, monkeypatch)
    write_image(tmp_path / "photo.png", photo(40, 45))
    jobs = []

    def occupy_the_worker() -> None:
        jobs.append(client.submit(*page_inputs(tmp_path / "photo.png"), api_name="/restore"))
        assert started.wait(timeout=30)

    def open_gate_once_queued(texts: list[str]) -> None:
        if any(text.startswith("queue:") for text in texts):
            gate.set()

    driver = app_browser.chromium()
    try:
        page = app_browser.restore_in_browser(
            driver, url, tmp_path / "photo.png", 60, occupy_the_worker, open_gate_once_queued
        )
        shot = app_browser.save_screenshot(driver, tmp_path / "page.png", width=800)
        not_image = tmp_path / "broken.png"
        not_image.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        refused = app_browser.restore_in_browser(driver, url, not_image, 60)
    finally:
        gate.set()
        driver.quit()
    assert page.errors == [], page.errors
    assert page.status.startswith("Restored 1 file(s) in"), page.status
    assert page.images == [(45, 40), (45, 40)]  # before and after, decoded by the browser
    assert page.downloads == ["photo-restored.png"]
    assert "queue: 1/1" in page.queue_texts, page.queue_texts  # queued behind the client's running job
    assert jobs[0].result(timeout=60)[2].startswith("Restored 1")
    with Image.open(shot) as picture:
        assert picture.format == "PNG" and picture.width == 800
    assert any("not a readable image" in error for error in refused.errors), refused
    assert refused.images == [] and not refused.status.startswith("Restored")


@pytest.mark.parametrize("source", ["options", "converted"])
def test_original_weights_restore_like_the_cli(source, tmp_path):
    """The original implementation's files, given as they are or converted: the page restores what the CLI does."""
    from refusion_pl.app import load_service
    from refusion_pl.original import convert_original
    from tests.original_format import original_files

    files = original_files("latent", tmp_path, seed=4)
    ckpt = files["options"]
    if source == "converted":
        ckpt = tmp_path / "converted.ckpt"
        convert_original(files["options"], ckpt)
    service = load_service(compose_entry("app", f"ckpt={ckpt}", "device=cpu"))
    try:
        image = tmp_path / "in" / "hazy.png"
        write_image(image, photo(24, 20, seed=1))
        outputs, failures, _, _ = service.restore(
            [str(image)], service.settings("ode", "ou", 3, "auto", 5), None
        )
        assert not failures
        cli = tmp_path / "cli"
        cli_cfg = compose_entry(
            "restore", f"ckpt={ckpt}", f"input={image.parent}", f"output={cli}", "device=cpu",
            "sampler=ode", "sample_steps=3", "tile=auto", "seed=5", "progress=false",
        )  # fmt: skip
        assert restore(cli_cfg).ok
        assert outputs[0].read_bytes() == (cli / "hazy.png").read_bytes()
    finally:
        shutil.rmtree(service.workdir, ignore_errors=True)
