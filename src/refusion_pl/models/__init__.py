"""Networks: the conditional noise network and the latent autoencoder (pure torch)."""

from refusion_pl.models.nafnet import ConditionalNAFNet, NAFBlock, StereoFusion
from refusion_pl.models.unet_ae import AEHidden, UNetAutoencoder

__all__ = ["AEHidden", "ConditionalNAFNet", "NAFBlock", "StereoFusion", "UNetAutoencoder"]
