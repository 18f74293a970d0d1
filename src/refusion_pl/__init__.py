"""refusion_pl: Refusion (IR-SDE latent diffusion for image restoration) on PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
