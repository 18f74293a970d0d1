"""Stage 2: IR-SDE diffusion with a ConditionalNAFNet noise network, on latents or on pixels."""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from refusion_pl.checkpoints import safe_torch_load
from refusion_pl.config import ConfigError
from refusion_pl.lit.base import CHECKPOINT_KEY, RestorationModule
from refusion_pl.lit.metrics import RestorationMetrics, side_by_side, view_metrics
from refusion_pl.models import PREDICTIONS, AEHidden, ConditionalNAFNet, UNetAutoencoder, noise_model
from refusion_pl.models.inference import inference_switches, prepare_for_inference
from refusion_pl.models.nafnet import photo_stats_count, photo_stats_kind
from refusion_pl.pipeline import restore
from refusion_pl.sde import IRSDE, LOSS_NORMS, LOSSES

# SDE settings fixed by training; a checkpoint is never sampled with different ones.
TRAINED_SDE_KEYS = ("max_sigma", "steps", "schedule", "eps", "prediction")
# The last `sde.echo` loads in diffusion space, saved with the training state.
ECHO_KEY = "refusion_pl_echo"
# Checkpoints written before `sde.prediction` existed predicted noise.
TRAINED_SDE_DEFAULTS = {"prediction": "noise"}
# Network variants each model can hold (the method page, sections 2 and 8).
NETWORK_VARIANTS = {"pixel": ("pixel", "stereo"), "latent": ("latent", "bokeh")}


def trained_sde_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``sde.key=wanted (checkpoint: stored)`` for every trained SDE setting on which the two disagree."""
    stored, wanted = {**TRAINED_SDE_DEFAULTS, **stored}, {**TRAINED_SDE_DEFAULTS, **wanted}
    return [
        f"sde.{key}={wanted.get(key)!r} (checkpoint: {stored.get(key)!r})"
        for key in TRAINED_SDE_KEYS
        if stored.get(key) != wanted.get(key)
    ]


def build_sde(cfg: dict[str, Any]) -> IRSDE:
    return IRSDE(max_sigma=cfg["max_sigma"], T=cfg["steps"], schedule=cfg["schedule"], eps=cfg["eps"])


class DiffusionModule(RestorationModule):
    """Latent (default; frozen autoencoder from stage 1) or pixel-space Refusion.

    Everything needed to sample travels with the checkpoint: SDE and network settings in the hyper-parameters,
    the frozen autoencoder's weights in the state dict.
    """

    kind = "diffusion"

    def __init__(
        self,
        model: str = "latent",
        channels: int = 3,
        nafnet: dict[str, Any] | None = None,
        autoencoder: dict[str, Any] | None = None,
        sde: dict[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        lr: float | None = None,
        max_steps: int = 1000,
        val: dict[str, Any] | None = None,
        crop_border: int = 0,
        variant: str | None = None,
    ) -> None:
        super().__init__(crop_border)
        self.save_hyperparameters()
        if model not in ("latent", "pixel"):
            raise ValueError(f"model={model!r} is not supported; choose one of: latent, pixel")
        # The network variant defaults to the model; stereo (pixel) and bokeh (latent) networks come from
        # their tasks (`net.nafnet.variant`) or from converted checkpoints (`refusion_pl.convert`).
        nafnet = dict(nafnet or {})
        net_variant = nafnet.pop("variant", None)
        if variant and net_variant and variant != net_variant:
            raise ValueError(f"variant={variant!r} and nafnet.variant={net_variant!r} disagree")
        variant = variant or net_variant or model
        # net.nafnet.photo_stats: condition on the whole input photo's statistics (photo_statistics), all views'
        photo_kind = photo_stats_kind(nafnet.pop("photo_stats", False))
        photo_stats = photo_stats_count(photo_kind, channels * (2 if variant == "stereo" else 1))
        if variant not in NETWORK_VARIANTS[model]:
            raise ValueError(
                f"variant={variant!r} does not fit model={model!r}; choose one of: "
                + ", ".join(NETWORK_VARIANTS[model])
            )
        sde = sde or {"max_sigma": 50, "steps": 100, "schedule": "cosine", "eps": 0.005, "sampler": "sde"}
        self.sde = build_sde(sde)
        self.prediction = sde.get("prediction", "noise")
        self.loss_name = sde.get("loss", "mean")
        if self.loss_name not in LOSSES:
            raise ValueError(f"sde.loss={self.loss_name!r}; choose one of: {', '.join(LOSSES)}")
        self.loss_norm = sde.get("loss_norm", "l1")
        if self.loss_norm not in LOSS_NORMS:
            raise ValueError(f"sde.loss_norm={self.loss_norm!r}; choose one of: {', '.join(LOSS_NORMS)}")
        self.image_loss_weight = float(sde.get("image_loss", 0.0))
        if self.image_loss_weight < 0:
            raise ValueError(f"sde.image_loss={self.image_loss_weight!r} must be >= 0")
        self.mean_path = float(sde.get("mean_path", 0.0))
        if not 0.0 <= self.mean_path <= 1.0:
            raise ValueError(f"sde.mean_path={sde.get('mean_path')!r} must be in [0, 1]")
        self.echo = int(sde.get("echo", 1))
        if self.echo < 1:
            raise ValueError(f"sde.echo={self.echo!r} must be >= 1")
        if self.echo > 1 and self.image_loss_weight:
            raise ValueError(
                "sde.echo > 1 cannot be combined with sde.image_loss (echoed latents carry no hidden maps)"
            )
        # the last `echo` loaded batches in diffusion space (saved in checkpoints: ECHO_KEY)
        self._echoed: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = deque(maxlen=self.echo)
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"sde.prediction={self.prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
        self.autoencoder: UNetAutoencoder | None = None
        net_channels = channels
        if model == "latent":
            if autoencoder is None:
                raise ValueError("model='latent' needs the autoencoder's settings (net.autoencoder)")
            self.autoencoder = UNetAutoencoder(in_ch=channels, out_ch=channels, **autoencoder)
            self.autoencoder.requires_grad_(False).eval()
            net_channels = autoencoder["embed_dim"]
        self.net = ConditionalNAFNet(
            img_channel=net_channels,
            variant=variant,
            photo_stats=photo_stats,
            photo_kind=photo_kind or "means",
            **nafnet,
        )
        if sde.get("icnr", False):
            self.net.init_icnr_upsampling()
        # Stereo samples hold two views on channels: metrics per view and their mean (the challenge's number).
        self.views = 2 if variant == "stereo" else 1
        if self.views > 1:
            self.val_metrics = RestorationMetrics(crop=crop_border, views=self.views)
        if self.prediction == "x0":
            # Start from the identity restoration (x0 = mu) rather than from a random colour shift.
            torch.nn.init.zeros_(self.net.ending.weight)
            torch.nn.init.zeros_(self.net.ending.bias)
        self.val_cfg = {
            "num_images": 2,
            "sample_steps": None,
            "sampler": sde.get("sampler", "sde"),
            "spacing": sde.get("spacing", "ou"),
            **(val or {}),
        }
        self._val_seen = 0
        self._val_input_psnr: list[torch.Tensor] = []
        self._validating_compiled = False

    @property
    def noise_model(self) -> torch.nn.Module:
        """The network as the samplers and the loss see it: always predicting the IR-SDE noise."""
        net = self.__dict__.get("_compiled_net", self.net) if self._validating_compiled else self.net
        return noise_model(net, self.sde, self.prediction)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also the echoed loads (``sde.echo``), so that a resumed run trains on the batches it would have."""
        super().on_save_checkpoint(checkpoint)
        if self._echoed:
            checkpoint[ECHO_KEY] = [tuple(load) for load in self._echoed]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to resume training with SDE settings that differ from the ones the weights learned."""
        super().on_load_checkpoint(checkpoint)  # task/model/network check, random states
        self._echoed.clear()
        self._echoed.extend(tuple(load) for load in checkpoint.get(ECHO_KEY, [])[-self.echo :])
        stored = checkpoint.get("hyper_parameters", {}).get("sde") or {}
        differences = trained_sde_differences(stored, dict(self.hparams.sde or {}))
        if differences:
            raise ConfigError(
                f"cannot resume with {', '.join(differences)}; "
                "resume with the checkpoint's settings or start a new run"
            )

    # ---- stage-1 weights -------------------------------------------------------------------------------------
    def load_autoencoder(self, path: str | Path) -> None:
        """Copy the frozen autoencoder from a stage-1 checkpoint, refusing one built with other settings."""
        if self.autoencoder is None:
            raise ValueError("a pixel-space model has no autoencoder to load")
        checkpoint = safe_torch_load(path)
        meta = checkpoint.get(CHECKPOINT_KEY) or {}
        if meta.get("kind") != "autoencoder":
            raise ValueError(
                f"{path} is not a refusion_pl autoencoder checkpoint (kind={meta.get('kind')!r})"
            )
        stored = _as_lists(checkpoint["hyper_parameters"]["net"])
        wanted = _as_lists(self.hparams.autoencoder)
        if stored != wanted:
            raise ValueError(
                f"autoencoder checkpoint {path} was trained with net={stored}, this run wants {wanted}"
            )
        prefix = "autoencoder."
        weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        self.autoencoder.load_state_dict(weights, strict=True)

    def train(self, mode: bool = True) -> DiffusionModule:
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen: always in inference mode
        return self

    # ---- training ----------------------------------------------------------------------------------------------
    def to_diffusion_space(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, x0): the LQ and GT themselves, or their latents under the frozen autoencoder."""
        mu, x0, _ = self.encode_pair(lq, gt)
        return mu, x0

    @torch.no_grad()
    def encode_pair(
        self, lq: torch.Tensor, gt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, AEHidden | None]:
        """``to_diffusion_space`` plus the LQ's hidden maps (None for pixel models), which decoding needs.

        No graph: the autoencoder is frozen; ``sde.image_loss`` differentiates only the decoding of the estimate.
        """
        if self.autoencoder is None:
            return lq, gt, None
        mu, hidden = self.autoencoder.encode(lq)
        return mu, self.autoencoder.encode(gt)[0], hidden

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        lq, gt = self.split_batch(batch)
        mu, x0, hidden = self.encode_pair(lq, gt)
        scalars = batch.get("cond_scalars")  # bokeh: (source lens, target lens, disparity) per image
        if self.echo > 1:
            mu, x0, scalars = self.echoed(mu, x0, scalars)
        t = self.sde.sample_timesteps(x0.shape[0], device=x0.device)
        noise = self.training_noise(x0)
        xt = self.sde.forward_sample(x0, mu, t, noise)
        noise_pred = self.noise_model(xt, mu, t, *([] if scalars is None else [scalars]))
        loss = self.sde.loss(self.loss_name, noise_pred, xt, x0, mu, t, self.loss_norm)
        if self.image_loss_weight and hidden is not None:
            image_loss = self.decoded_x0_loss(noise_pred, xt, mu, t, hidden, gt)
            self.log("train/image_loss", image_loss, batch_size=x0.shape[0])
            self.log("train/latent_loss", loss, batch_size=x0.shape[0])
            loss = loss + self.image_loss_weight * image_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def training_noise(self, x0: torch.Tensor) -> torch.Tensor:
        """Standard normal noise, zeroed for a random ``sde.mean_path`` share of the samples.

        At temperature 0 the sampler starts from the LQ itself and follows the noise-free mean of the forward
        marginals, inputs the network never sees when every training ``x_t`` carries noise; noise-free samples
        put that path in the training distribution (README, "Sampling temperature").
        """
        noise = torch.randn_like(x0)
        if self.mean_path > 0:
            keep = torch.rand(x0.shape[0], device=x0.device) >= self.mean_path
            noise = noise * keep.to(noise.dtype).view(-1, *([1] * (noise.dim() - 1)))
        return noise

    def echoed(
        self, mu: torch.Tensor, x0: torch.Tensor, scalars: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This load plus the previous `echo - 1` ones (``sde.echo``, data echoing).

        In the latent model, loading a crop and encoding it with the frozen autoencoder costs several times the
        noise network's step; here every encoded pair trains `echo` consecutive steps, with a fresh timestep
        and noise each time, so a step loads and encodes only `batch_size / echo` new pairs.
        """
        self._echoed.append((mu, x0, scalars))
        loads = list(self._echoed)
        cat_scalars = None if scalars is None else torch.cat([s for _, _, s in loads])
        return torch.cat([m for m, _, _ in loads]), torch.cat([x for _, x, _ in loads]), cat_scalars

    def decoded_x0_loss(
        self,
        noise_pred: torch.Tensor,
        xt: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        hidden: AEHidden,
        gt: torch.Tensor,
    ) -> torch.Tensor:
        """L1 between the image the network's clean-latent estimate decodes to and the GT (``sde.image_loss``).

        A latent loss weighs every latent channel alike, but the frozen decoder does not: small errors along the
        directions it is sensitive to become colour casts and blotches. This weighs them by what a user sees.
        """
        x0_estimate = self.sde.x0_from_noise(xt, mu, noise_pred, t)
        return F.l1_loss(self.autoencoder.decode_restored(x0_estimate, hidden), gt)

    # ---- restoration and validation ---------------------------------------------------------------------------
    def restore(
        self,
        lq: torch.Tensor,
        sampler: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        cond_scalars: torch.Tensor | None = None,
        spacing: str | None = None,
        edge_margin: int | None = None,
        samples: int | None = None,
        temperature: float | None = None,
        shift_jitter: bool | None = None,
    ) -> torch.Tensor:
        """Restore ``lq`` (stereo: both views on channels); bokeh networks also take ``cond_scalars`` (B, 3).

        ``steps``, ``sampler``, ``spacing``, ``edge_margin``, ``samples``, ``temperature`` and ``shift_jitter``
        default to the checkpoint's ``val`` settings (``sde.sample_steps``: all T when unset, as
        ``refusion-restore`` samples; ``sde.sampler``, ``sde.spacing``, ``val.edge_margin``: 0 for checkpoints
        that predate it and for converted originals, ``val.samples``, ``val.temperature``: 1 unless set, and
        ``val.shift_jitter``: off unless set).
        """
        return restore(
            self.sde,
            self.noise_model,
            lq,
            autoencoder=self.autoencoder,
            sampler=sampler or self.val_cfg["sampler"],
            steps=self.sample_steps if steps is None else steps,
            generator=generator,
            progress=progress,
            cond_scalars=cond_scalars,
            spacing=spacing or self.val_cfg.get("spacing", "ou"),
            edge_margin=self.edge_margin if edge_margin is None else edge_margin,
            samples=self.samples if samples is None else samples,
            temperature=self.temperature if temperature is None else temperature,
            shift_jitter=self.shift_jitter if shift_jitter is None else shift_jitter,
        )

    @property
    def sample_steps(self) -> int | None:
        """The steps the checkpoint was trained to be sampled with (``sde.sample_steps``; None: all T)."""
        return (self.hparams.get("sde") or {}).get("sample_steps")

    @property
    def edge_margin(self) -> int:
        """Mirrored margin restored around every image (``pipeline.add_edge_margin``): ``val.edge_margin``."""
        return int(self.val_cfg.get("edge_margin", 0))

    @property
    def samples(self) -> int:
        """Reverse-SDE draws averaged per restoration (``pipeline.sample_mean``): ``val.samples``."""
        return int(self.val_cfg.get("samples", 1))

    @property
    def temperature(self) -> float:
        """Scale of the sampler's noise (``sampling.sample``; 0: deterministic): ``val.temperature``."""
        return float(self.val_cfg.get("temperature", 1.0))

    @property
    def shift_jitter(self) -> bool:
        """Evaluate the network at a fresh grid phase every step (``pipeline.ShiftJitter``): ``val.shift_jitter``."""
        return bool(self.val_cfg.get("shift_jitter", False))

    def prepare_for_inference(
        self, device: torch.device | str | None = None, settings: dict[str, Any] | None = None
    ) -> DiffusionModule:
        """Both networks in their fastest same-output form (`models.prepare_for_inference`), in place.

        `settings`: an `inference:` config node (`compile`, `channels_last`; null: the device's default).
        """
        switches = inference_switches(settings)
        for net in (self.net, self.autoencoder):
            if net is not None:
                prepare_for_inference(net, device, **switches)
        return self

    def _validation_memory_format(self, validating: bool) -> None:
        """`val.channels_last`: NHWC weights while validation samples, the training format again afterwards."""
        if not self.val_cfg.get("channels_last", True):
            return
        if validating:
            # Training in channels-last (lit.speed.ChannelsLast)?
            nhwc = not self.net.intro.weight.is_contiguous()
            self._training_memory_format = torch.channels_last if nhwc else torch.contiguous_format
            memory_format = torch.channels_last
        else:
            memory_format = getattr(self, "_training_memory_format", torch.contiguous_format)
        for net in (self.net, self.autoencoder):
            if net is not None:
                net.to(memory_format=memory_format)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_seen = 0
        self._val_input_psnr = []
        self._validation_memory_format(True)
        if self.val_cfg.get("compile", False):
            # A compiled view of the training network, kept out of the module tree (no new state-dict keys,
            # training itself stays eager); its graphs are reused by every later validation.
            if "_compiled_net" not in self.__dict__:
                self.__dict__["_compiled_net"] = torch.compile(self.net)
            self._validating_compiled = True

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self._val_seen >= self.val_cfg["num_images"]:
            return
        lq, gt = self.split_batch(batch)
        generator = torch.Generator(device=lq.device).manual_seed(
            1000 + batch_idx
        )  # same noise every validation
        restored = self.restore(
            lq,
            steps=self.val_cfg["sample_steps"],
            generator=generator,
            cond_scalars=batch.get("cond_scalars"),
        )
        self.val_metrics.update(restored, gt)
        self._val_input_psnr.append(view_metrics(lq, gt, views=self.views)["psnr"])
        self._val_seen += lq.shape[0]
        for index in range(lq.shape[0]):
            images = (batch["lq"][index], restored[index], gt[index])
            self.add_panel(*(side_by_side(image, self.views) for image in images))

    def on_validation_epoch_end(self) -> None:
        self._validation_memory_format(False)
        self._validating_compiled = False
        if self.val_metrics.count == 0:
            return
        self.log_metrics("val", self.val_metrics)
        self.log("val/psnr_input", torch.cat(self._val_input_psnr).mean(), sync_dist=True)
        self.log_panels("val/panels")

    # ---- loading for inference -------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, sde_overrides: dict[str, Any] | None = None, map_location: str = "cpu"
    ) -> DiffusionModule:
        """Load a diffusion checkpoint safely; settings fixed by training always come from the checkpoint.

        A trained setting in ``sde_overrides`` that differs from the checkpoint's is ignored with a warning;
        sampling settings (``sampler``, ``sample_steps``, ``spacing``) are applied.
        """
        checkpoint = safe_torch_load(path, map_location=map_location)
        return cls.from_checkpoint_data(checkpoint, str(path), sde_overrides)

    @classmethod
    def from_checkpoint_data(
        cls, checkpoint: dict[str, Any], source: str, sde_overrides: dict[str, Any] | None = None
    ) -> DiffusionModule:
        """`from_checkpoint` on a checkpoint already in memory (also a safetensors export's contents)."""
        meta = checkpoint.get(CHECKPOINT_KEY) or {}
        if meta.get("kind") != "diffusion" or "hyper_parameters" not in checkpoint:
            raise ValueError(
                f"{source} is not a refusion_pl diffusion checkpoint (found kind={meta.get('kind')!r}); "
                "pass the checkpoint written by the diffusion stage of `python -m refusion_pl.train`"
            )
        hparams = dict(checkpoint["hyper_parameters"])
        sde = {**TRAINED_SDE_DEFAULTS, **hparams["sde"]}
        for key, value in (sde_overrides or {}).items():
            if key in TRAINED_SDE_KEYS:
                if value is not None and value != sde[key]:
                    warnings.warn(
                        f"sde.{key}={value} ignored: the checkpoint was trained with sde.{key}={sde[key]}",
                        stacklevel=2,
                    )
            elif value is not None:
                sde[key] = value
        hparams["sde"] = sde
        hparams["val"] = {
            **(hparams.get("val") or {}),
            "sampler": sde.get("sampler", "sde"),
            "spacing": sde.get("spacing", "ou"),
        }
        if sde.get("sample_steps") is not None:
            hparams["val"]["sample_steps"] = sde["sample_steps"]
        module = cls(**hparams)
        module.load_state_dict(checkpoint["state_dict"], strict=True)
        module.run_config = meta.get("config")
        return module.eval()


# Autoencoder settings that change how a restored latent is decoded, not the weights a checkpoint holds.
AUTOENCODER_INFERENCE_KEYS = ("decode_mode",)


def _as_lists(settings: dict[str, Any]) -> dict[str, Any]:
    """Weight-shaping network settings with tuples as lists, so YAML, code and checkpoints compare equal."""
    return {
        k: list(v) if isinstance(v, (list, tuple)) else v
        for k, v in settings.items()
        if k not in AUTOENCODER_INFERENCE_KEYS
    }
