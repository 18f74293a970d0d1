"""``python -m refusion_pl.app ckpt=PATH [host=127.0.0.1] [port=7860]``: a local web page to restore photos.

Upload one or more images, pick sampler, steps, tiling and seed, and compare before and after. Every image
goes through ``restore.run_folder``, the CLI's own path (tiling, memory budget, trained settings from the
checkpoint, atomic writes, input bit depth), so a page result equals ``refusion_pl.restore``'s file for the
same settings. Gradio's queue runs one restoration at a time; nothing is fetched from the network (no
analytics, no share links). Needs the ``app`` extra: ``pip install -e '.[app]'``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from refusion_pl.config import CONFIG_DIR
from refusion_pl.data.io import IMAGE_EXTENSIONS, DataError, read_image
from refusion_pl.files import OutputError
from refusion_pl.restore import (
    LensSettings,
    RestoreError,
    Restorer,
    autocast,
    inference_settings,
    load_model,
    parse_memory,
    parse_tile,
    pick_device,
    run_folder,
)
from refusion_pl.sampling import SAMPLERS, SPACINGS

log = logging.getLogger("refusion_pl.app")

PREVIEW_SIDE = 2048  # the comparison shows at most this many pixels a side; downloads are full resolution
EXAMPLE_PHOTOS = {3: ("chelsea.png", "coffee.png"), 1: ("camera.png",)}


class AppError(RuntimeError):
    """The app cannot start (gradio missing, bad setting); the message says what to do."""


def _gradio() -> Any:
    """gradio, imported with its network calls off: no version check, no telemetry, no hub look-ups."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gradio
    except ImportError:
        raise AppError("the web demo needs gradio: pip install -e '.[app]'") from None
    return gradio


@dataclasses.dataclass
class Service:
    """A loaded model and the page's defaults; ``restore`` serves one request."""

    restorer: Restorer
    workdir: Path
    max_pixels: int | None

    @property
    def steps_max(self) -> int:
        return int(self.restorer.module.sde.T)

    @property
    def default_steps(self) -> int:
        return int(self.restorer.steps or self.steps_max)  # Restorer.from_config: the CLI's default

    def settings(self, sampler: str, spacing: str, steps: float, tile: Any, seed: float) -> Restorer:
        """A copy of the loaded restorer with this request's sampling settings (the model is shared)."""
        if sampler not in SAMPLERS:
            raise RestoreError(f"sampler={sampler!r} is unknown; allowed: {', '.join(SAMPLERS)}")
        if spacing not in SPACINGS:
            raise RestoreError(f"spacing={spacing!r} is unknown; allowed: {', '.join(SPACINGS)}")
        if steps is None or not 1 <= int(steps) <= self.steps_max:
            raise RestoreError(f"steps must be 1..{self.steps_max} (this checkpoint's T), got {steps}")
        if seed is None:
            raise RestoreError("seed must be a whole number")
        return dataclasses.replace(
            self.restorer,
            sampler=sampler,
            spacing=spacing,
            steps=int(steps),
            seed=int(seed),
            tile=parse_tile(tile),
        )

    def lenses(self, src_lens: str, tgt_lens: str, disparity: float | None) -> LensSettings | None:
        if not self.restorer.needs_scalars:
            return None
        cfg = OmegaConf.create(
            {"src_lens": src_lens or None, "tgt_lens": tgt_lens or None, "disparity": disparity, "meta": None}
        )
        lenses = LensSettings.from_config(cfg)
        if lenses is None:
            raise RestoreError(
                "this bokeh checkpoint needs the lens settings: source lens, target lens, disparity"
            )
        return lenses

    def restore(
        self,
        uploads: list[str] | None,
        restorer: Restorer,
        lenses: LensSettings | None = None,
    ) -> tuple[list[Path], dict[str, str], float, tuple[Path, Path] | None]:
        """Restore uploaded files into a fresh folder: (outputs, failures by name, seconds, first pair)."""
        if not uploads:
            raise RestoreError("upload an image first")
        request = Path(tempfile.mkdtemp(prefix="request-", dir=self.workdir))
        source_dir, out_dir = request / "in", request / "out"
        source_dir.mkdir()
        failures: dict[str, str] = {}
        files: list[Path] = []
        for upload in uploads:
            name = Path(upload).name
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                failures[name] = (
                    f"not an image file this app restores (allowed: {', '.join(IMAGE_EXTENSIONS)})"
                )
                continue
            target = source_dir / name
            if target.exists():  # two uploads with one name: keep both
                target = source_dir / f"{len(files)}-{name}"
            shutil.copyfile(upload, target)
            files.append(target)
        summary = run_folder(restorer, files, source_dir, out_dir, None, True, lenses, self.max_pixels)
        failures |= {Path(name).name: reason for name, reason in summary.failed.items()}
        outputs, first = [], None
        for source in files:
            restored = out_dir / source.relative_to(source_dir)
            if not restored.is_file():
                continue
            named = restored.with_name(f"{restored.stem}-restored{restored.suffix}")
            os.replace(restored, named)
            outputs.append(named)
            first = first or (source, named)
        return outputs, failures, summary.seconds, first


def _preview(path: Path, size: tuple[int, int] | None = None) -> Image.Image:
    """An 8-bit picture for the browser (16-bit files and TIFFs do not display), at most PREVIEW_SIDE a side."""
    image, _ = read_image(path, channels=3)
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    if size is not None and picture.size != size:
        picture = picture.resize(size, Image.Resampling.BICUBIC)  # super-resolution: the input at output size
    if max(picture.size) > PREVIEW_SIDE:
        picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    return picture


def _comparison(source: Path, restored: Path) -> tuple[str, str]:
    """Before/after previews as PNG files in the request's folder.

    Files, not pictures: gradio caches a returned picture by rewriting one shared path in place, so two requests
    showing the same image could serve each other a half-written file; a returned file is copied atomically.
    """
    folder = restored.parent.parent / "preview"
    folder.mkdir(exist_ok=True)
    after = _preview(restored)
    paths = (folder / "before.png", folder / "after.png")
    for picture, path in zip((_preview(source, after.size), after), paths, strict=True):
        picture.save(path)
    return str(paths[0]), str(paths[1])


def load_service(cfg: DictConfig) -> Service:
    """Check the settings, load the checkpoint once and make the folder requests write into."""
    device = pick_device(str(cfg.device))
    autocast(device, str(cfg.precision))  # validate before the (slow) model load
    parse_tile(cfg.tile), parse_memory(cfg.max_memory)
    inference = inference_settings(cfg)  # the CLI's network preparation, so results equal its files
    module = load_model(cfg.ckpt, cfg.sampler, cfg.sample_steps, device, cfg.get("spacing"))
    module.prepare_for_inference(device, inference)
    restorer = Restorer.from_config(cfg, module, device, progress=True)
    workdir = Path(tempfile.mkdtemp(prefix="refusion-app-"))
    max_pixels = None if cfg.get("max_pixels") is None else int(cfg.max_pixels)
    return Service(restorer=restorer, workdir=workdir, max_pixels=max_pixels)


def _examples(channels: int) -> list[str]:
    """scikit-image's bundled photos (part of its wheel: nothing is downloaded)."""
    try:
        import skimage.data
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    return [str(folder / name) for name in EXAMPLE_PHOTOS.get(channels, ()) if (folder / name).is_file()]


def build_app(service: Service, cfg: DictConfig) -> Any:
    """The page: uploads and settings on the left, comparison, downloads and timing on the right."""
    gr = _gradio()
    restorer, module = service.restorer, service.restorer.module
    stereo, bokeh = restorer.views > 1, restorer.needs_scalars

    def run(
        uploads: list[str] | None,
        sampler: str,
        spacing: str,
        steps: float,
        tile: Any,
        seed: float,
        src_lens: str,
        tgt_lens: str,
        disparity: float | None,
        progress: Any = gr.Progress(track_tqdm=True),  # noqa: B008 - gradio injects the page's bar here
    ) -> tuple[Any, list[str], str]:
        progress(0, desc="starting")
        try:
            request = service.settings(sampler, spacing, steps, tile, seed)
            lenses = service.lenses(src_lens, tgt_lens, disparity)
            outputs, failures, seconds, first = service.restore(uploads, request, lenses)
        except (RestoreError, DataError, OutputError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:  # a bug or out of memory: tell the page, keep serving
            log.error("request failed:\n%s", traceback.format_exc())
            raise gr.Error(f"restoring failed: {type(err).__name__}: {err}", print_exception=False) from None
        problems = "\n".join(f"- **{name}**: {reason}" for name, reason in failures.items())
        if not outputs:
            raise gr.Error(f"nothing restored. {' '.join(f'{n}: {r}' for n, r in failures.items())}")
        tile_used = restorer_tile(request)
        status = (
            f"Restored {len(outputs)} file(s) in **{seconds:.1f} s** "
            f"({request.sampler}, {request.steps} steps, {request.spacing} spacing, tile {tile_used}, "
            f"seed {request.seed})."
        )
        if problems:
            status += f"\n\nNot restored:\n{problems}"
        comparison = _comparison(*first)
        return comparison, [str(path) for path in outputs], status

    intro = (
        f"# Restore photos\n`{Path(str(cfg.ckpt)).name}`: {module.hparams.get('model', 'diffusion')} model, "
        f"T={service.steps_max}. Downloads are full resolution at the input's bit depth."
    )
    if stereo:
        intro += "\n\nStereo checkpoint: upload both views of a pair, named `<id>_L` and `<id>_R`."
    with gr.Blocks(title="refusion_pl") as demo:
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column():
                uploads = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="uploads")
                examples = (
                    _examples(int(module.hparams.channels)) if cfg.get("examples") and not stereo else []
                )
                if examples:
                    gr.Examples([[[path]] for path in examples], inputs=[uploads], label="Bundled photos")
                sampler = gr.Dropdown(list(SAMPLERS), value=restorer.sampler, label="Sampler")
                spacing = gr.Dropdown(
                    list(SPACINGS),
                    value=restorer.spacing,
                    label="Timestep spacing with fewer steps (ou: process clock; logsnr: even log-SNR)",
                )
                steps = gr.Slider(
                    1,
                    service.steps_max,
                    value=service.default_steps,
                    step=1,
                    label="Steps (fewer are faster; the default is the checkpoint's own)",
                )
                tile = gr.Dropdown(
                    ["auto", "none"],
                    value=str(restorer.tile or "none"),
                    allow_custom_value=True,
                    label="Tiling (auto: sized from the memory budget; or a tile size in pixels)",
                )
                seed = gr.Number(value=restorer.seed, precision=0, label="Seed")
                src_lens = gr.Textbox(label="Source lens (e.g. Sony50mmf16.0AS)", visible=bokeh)
                tgt_lens = gr.Textbox(label="Target lens (e.g. Sony50mmf1.8BS)", visible=bokeh)
                disparity = gr.Number(label="Disparity", visible=bokeh)
                button = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column():
                comparison = gr.ImageSlider(
                    label="Before / after", type="pil", format="png", elem_id="comparison"
                )
                downloads = gr.File(
                    label="Full-resolution results", file_count="multiple", elem_id="downloads"
                )
                status = gr.Markdown(elem_id="status")
        button.click(
            run,
            inputs=[uploads, sampler, spacing, steps, tile, seed, src_lens, tgt_lens, disparity],
            outputs=[comparison, downloads, status],
            api_name="restore",
            concurrency_limit=1,  # one restoration at a time: the others wait in the queue
        )
    demo.queue(default_concurrency_limit=1, max_size=int(cfg.queue_size))
    return demo


def restorer_tile(restorer: Restorer) -> str:
    return str(restorer.last_tile) if restorer.last_tile else "none"


def serve(cfg: DictConfig, block: bool = True) -> Any:
    """Load the checkpoint and start the server on ``cfg.host:cfg.port``; returns the Blocks (``close()`` it)."""
    if not cfg.get("ckpt"):
        raise AppError("ckpt=PATH is required")
    _gradio()  # fail before the (slow) model load
    service = load_service(cfg)
    demo = build_app(service, cfg)
    demo.launch(
        server_name=str(cfg.host),
        server_port=int(cfg.port),
        share=False,
        inbrowser=False,
        show_error=True,
        ssr_mode=False,
        max_file_size=str(cfg.max_upload) if cfg.get("max_upload") else None,
        allowed_paths=[str(service.workdir)],
        prevent_thread_lock=not block,
        quiet=not block,
    )
    demo.refusion_service = service  # its workdir holds the requests' files: remove it after close()
    if block:
        shutil.rmtree(service.workdir, ignore_errors=True)
    return demo


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="app")
def main(cfg: DictConfig) -> None:
    try:
        serve(cfg)
    except (AppError, RestoreError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
