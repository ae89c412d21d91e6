"""The networks: the reference architecture, its options, the interface the step uses, and the conditional model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gan.errors import GanError
from gan.models import Discriminator, Dropout, Generator, MinibatchStd, MlpDiscriminator, MlpGenerator, build_discriminator, build_generator
from helpers.runs import assert_same_training_state, config, last_checkpoint, run_quick


def test_base_model_is_the_reference_architecture_with_minibatch_std_in_d():
    model = config().model
    generator, discriminator = build_generator(model), build_discriminator(model)
    assert isinstance(generator, MlpGenerator) and isinstance(discriminator, MlpDiscriminator)
    g_layers = [(m.in_features, m.out_features) for m in generator.modules() if hasattr(m, "in_features")]
    d_layers = [(m.in_features, m.out_features) for m in discriminator.modules() if hasattr(m, "in_features")]
    assert g_layers == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert d_layers == [(784, 1024), (1024, 512), (512, 256), (256 + 1, 1)], "the last layer also reads the group's spread"
    assert [m.group for m in discriminator.modules() if isinstance(m, MinibatchStd)] == [4]
    assert [type(m).__name__ for m in generator.net if not hasattr(m, "in_features")] == ["ReLU", "ReLU", "ReLU", "Tanh"]
    assert [m.negative_slope for m in discriminator.net if type(m).__name__ == "LeakyReLU"] == [0.2, 0.2, 0.2]


def test_dropout_factor_is_the_one_its_forward_applied():
    dropout = Dropout(0.3)
    x = torch.randn(500, 200)
    torch.manual_seed(5)
    out, factor = dropout.with_factor(x)
    torch.testing.assert_close(out, x * factor)
    kept = factor != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01 and torch.allclose(factor[kept], torch.tensor(1 / 0.7))
    torch.manual_seed(5)
    torch.testing.assert_close(dropout(x), out, msg="the same masks as nn.Dropout's forward from the same RNG state")
    out, factor = dropout.eval().with_factor(x)
    assert out is x and factor is None


def test_packed_discriminator_judges_consecutive_images_together():
    torch.manual_seed(0)
    packed = build_discriminator(config("model.d_pack=2", "model.d_mbstd_group=0").model)  # packing alone
    images = torch.randn(8, 1, 28, 28)
    assert packed(images).shape == (4,) and packed.images_per_logit == 2
    # Output i depends on images 2i and 2i+1 only.
    changed = images.clone()
    changed[3] += 1
    before, after = packed(images), packed(changed)
    assert torch.equal(before[[0, 2, 3]], after[[0, 2, 3]]) and not torch.equal(before[1], after[1])


def test_minibatch_std_lets_d_see_the_variety_of_its_group():
    torch.manual_seed(0)
    discriminator = build_discriminator(config("model.d_mbstd_group=4").model)
    images = torch.randn(8, 1, 28, 28)
    # Groups of 4 are samples 0-3 and 4-7: making sample 2 a copy of sample 0 leaves the other group, and
    # so its logits, as they were.
    changed = images.clone()
    changed[2] = changed[0]
    before, after = discriminator(images), discriminator(changed)
    assert not torch.equal(before[1], after[1]), "an untouched sample's logit depends on its group's variety"
    assert torch.equal(before[4:], after[4:])
    # A group of identical samples has zero spread: the gradient must stay finite there.
    same = images[:1].expand(8, -1, -1, -1).clone().requires_grad_(True)
    discriminator(same).sum().backward()
    assert torch.isfinite(same.grad).all() and all(torch.isfinite(p.grad).all() for p in discriminator.parameters())


def test_minibatch_std_gradient_stays_finite_in_fp16():
    # Deviations of 1e-4 square to 1e-8, under fp16's smallest number: the spread must be computed wider.
    mbstd = MinibatchStd(4)
    x = (1 + 1e-4 * torch.randn(8, 16)).half().requires_grad_(True)
    out = mbstd(x)
    out.float().sum().backward()
    assert out.dtype == torch.float16 and torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(mbstd.feature_gradient(x.detach(), torch.ones(8))).all()


@pytest.mark.parametrize("overrides", [("model.d_mbstd_group=4",), ("model.d_pack=2",), ("model.d_pack=2", "model.d_mbstd_group=4")])
def test_d_judges_real_images_apart_from_the_fake_ones_in_the_same_forward(overrides):
    # The D step runs one forward over real images followed by fake ones: no pack and no minibatch-std
    # group may mix them, or D could not tell a batch of real images by its variety.
    torch.manual_seed(0)
    discriminator = build_discriminator(config(*overrides).model)
    with torch.no_grad():
        discriminator.net[-1].weight.fill_(1.0)  # so the group's spread, one input of the last layer, counts
    real, fake = torch.randn(16, 1, 28, 28), 0.1 * torch.randn(16, 1, 28, 28)  # fakes that vary less
    real_logits, fake_logits = discriminator(torch.cat([real, fake])).split(16 // discriminator.images_per_logit)
    torch.testing.assert_close(real_logits, discriminator(real))
    torch.testing.assert_close(fake_logits, discriminator(fake))


def autograd_input_gradient(discriminator: Discriminator, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    leaf = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(leaf, labels).sum(), leaf, create_graph=True)
    return grad


@pytest.mark.parametrize("overrides", [("model.d_dropout=0.3",), ("model.d_dropout=0.3", "model.d_pack=2"),
                                       ("model=conditional", "model.d_dropout=0.3"), ("model.d_mbstd_group=4", "model.d_dropout=0.3"),
                                       ("model.d_mbstd_group=4", "model.d_pack=2"), ("model=conditional", "model.d_mbstd_group=4")])
def test_discriminator_input_gradient_is_autograds_with_the_same_dropout_masks(overrides):
    discriminator = build_discriminator(config(*overrides).model)
    images = torch.randn(16, 1, 28, 28)
    labels = torch.arange(16) % 10 if discriminator.num_classes else None
    torch.manual_seed(5)
    ours = discriminator.input_gradient(images, labels)
    torch.manual_seed(5)  # the same masks
    theirs = autograd_input_gradient(discriminator, images, labels)
    torch.testing.assert_close(ours.reshape(theirs.shape), theirs)
    torch.manual_seed(5)  # the interface's general way, a new model's until it writes its own, is autograd's too
    torch.testing.assert_close(Discriminator.input_gradient(discriminator, images, labels), theirs)
    # The penalty's gradient in the weights (the label embedding's too) equals autograd's double backward.
    params = list(discriminator.parameters())
    ours_by_weight = torch.autograd.grad(ours.pow(2).sum(), params, allow_unused=True)
    theirs_by_weight = torch.autograd.grad(theirs.pow(2).sum(), params, allow_unused=True)
    for a, b, param in zip(ours_by_weight, theirs_by_weight, params):
        torch.testing.assert_close(torch.zeros_like(param) if a is None else a, torch.zeros_like(param) if b is None else b)
    assert ours_by_weight[0].abs().sum() > 0


def test_conditional_generator_draws_what_its_label_asks_for():
    torch.manual_seed(0)
    generator = build_generator(config("model=conditional").model)
    z = torch.randn(4, 100)
    threes, sevens = generator(z, torch.full((4,), 3)), generator(z, torch.full((4,), 7))
    assert threes.shape == (4, 1, 28, 28) and not torch.allclose(threes, sevens)
    torch.testing.assert_close(generator(z[:1], torch.tensor([3])), threes[:1]), "a sample depends on its own label only"


def test_projection_discriminator_scores_an_image_by_its_label():
    torch.manual_seed(0)
    discriminator = build_discriminator(config("model=conditional").model)
    images = torch.randn(6, 1, 28, 28)
    as_labelled = discriminator(images, torch.tensor([0, 1, 2, 3, 4, 5]))
    relabelled = discriminator(images, torch.tensor([0, 1, 2, 3, 4, 9]))
    assert torch.equal(as_labelled[:5], relabelled[:5]) and not torch.equal(as_labelled[5], relabelled[5])
    # The label's term is the projection: the inner product of D's last features with the label's embedding.
    features = discriminator.net[:-1](images.reshape(6, -1))
    unconditional = discriminator.net[-1](features).squeeze(1)
    projection = (discriminator.label_embedding.weight[5] * features[5]).sum()
    torch.testing.assert_close(as_labelled[5], unconditional[5] + projection)


@pytest.mark.parametrize(("key", "path", "message"), [
    ("generator", "gan.models.NoSuchModel", "model.generator=gan.models.NoSuchModel is not an importable gan.models.Generator class"),
    ("discriminator", "helpers.toy_models.NotAModel", "is not an importable gan.models.Discriminator class"),
    ("generator", "nomodule", "model.generator=nomodule is not an importable"),
])
def test_a_model_class_that_cannot_be_built_is_one_sentence(key, path, message):
    model = dataclasses.replace(config().model, **{key: path})
    with pytest.raises(GanError, match=message):
        (build_generator if key == "generator" else build_discriminator)(model)


TOY_MODEL = ("model.generator=helpers.toy_models.LinearGenerator", "model.discriminator=helpers.toy_models.LinearDiscriminator")


@pytest.mark.parametrize("conditional", [(), pytest.param(("model=conditional",), marks=pytest.mark.slow)])
def test_a_new_model_is_a_class_named_in_the_config(tiny_mnist, tmp_path, conditional):
    """A model the step and the loop have never seen trains, resumes exactly and samples through the same code."""
    run_quick(tiny_mnist, tmp_path / "straight", "epochs=2", *conditional, *TOY_MODEL)
    run_quick(tiny_mnist, tmp_path / "split", "epochs=1", *conditional, *TOY_MODEL)
    run_quick(tiny_mnist, tmp_path / "split", "epochs=2", "resume=auto", *conditional, *TOY_MODEL)
    straight = last_checkpoint(tmp_path / "straight")
    assert set(straight["generator"]) == {"linear.weight", "linear.bias", "label_bias.weight"}
    assert_same_training_state(straight, last_checkpoint(tmp_path / "split"))
    assert isinstance(build_generator(config(*conditional, *TOY_MODEL).model), Generator)
