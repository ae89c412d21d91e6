"""A Hydra-configured MLP GAN for MNIST digits."""

from gan.config import compose
from gan.models import Discriminator, Generator, MlpDiscriminator, MlpGenerator
from gan.sampling import generate_and_plot_samples, load_generator

__all__ = ["Discriminator", "Generator", "MlpDiscriminator", "MlpGenerator", "compose", "generate_and_plot_samples", "load_generator"]
