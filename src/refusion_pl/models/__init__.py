"""Networks: the conditional noise network and the latent autoencoder (pure torch)."""

from refusion_pl.models.inference import prepare_for_inference
from refusion_pl.models.nafnet import ConditionalNAFNet, NAFBlock, StereoFusion
from refusion_pl.models.prediction import PREDICTIONS, NoiseFromX0, noise_model
from refusion_pl.models.unet_ae import AEHidden, UNetAutoencoder

__all__ = [
    "PREDICTIONS",
    "AEHidden",
    "ConditionalNAFNet",
    "NAFBlock",
    "NoiseFromX0",
    "StereoFusion",
    "UNetAutoencoder",
    "noise_model",
    "prepare_for_inference",
]
