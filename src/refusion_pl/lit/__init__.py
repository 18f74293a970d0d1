"""Lightning layer: the two training stages on top of the pure-torch library."""

from refusion_pl.lit.autoencoder import AutoencoderModule
from refusion_pl.lit.diffusion import DiffusionModule

__all__ = ["AutoencoderModule", "DiffusionModule"]
