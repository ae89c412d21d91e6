"""A Hydra-configured MLP GAN for MNIST digits."""

from gan.models import Discriminator, Generator
from gan.sampling import generate_and_plot_samples, load_generator

__all__ = ["Discriminator", "Generator", "generate_and_plot_samples", "load_generator"]
