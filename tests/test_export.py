"""export.py: a generator folder in the Hub's layout that loads back to the same samples, in PyTorch and in onnxruntime."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import gan.export
from gan.checkpoint import load_checkpoint
from gan.errors import GanError
from gan.export import export_generator, load_generator, upload
from gan.sampling import generate, noise, sample_labels
from helpers.runs import EVALUATED, run_quick, run_script


@pytest.fixture(scope="module", params=["unconditional", "conditional"])
def trained(request, tiny_mnist, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param)
    run_quick(tiny_mnist, run_dir, "epochs=1", *EVALUATED, *(("model=conditional",) if request.param == "conditional" else ()))
    return run_dir / "checkpoints" / "last.pt"


def test_an_export_loads_back_to_the_same_samples(trained, tmp_path):
    out = export_generator(trained, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "samples.png"]
    exported, original = load_generator(out), load_generator(trained)
    z = noise(32, exported.latent_dim, seed=3)
    labels = sample_labels(exported, 32)
    assert torch.equal(generate(exported, z, labels), generate(original, z, labels)), "bit-identical samples"
    config = json.loads((out / "config.json").read_text())
    assert (config["image_shape"], config["value_range"], config["weights"]) == ([1, 28, 28], [-1.0, 1.0], "ema")
    assert config["num_classes"] == original.num_classes and config["latent_dim"] == 100
    raw = export_generator(trained, tmp_path / "raw", ema=False)
    assert torch.equal(generate(load_generator(raw), z, labels), generate(load_generator(trained, ema=False), z, labels))


def test_the_model_card_states_the_runs_recipe_and_measured_evaluation(trained, tmp_path):
    out = export_generator(trained, tmp_path / "export")
    card = (out / "README.md").read_text()
    evaluation = json.loads((trained.parent.parent / "eval.json").read_text())["ema"]
    ckpt = load_checkpoint(trained)
    assert f"| fid | {evaluation['fid']:.4g} |" in card and f"| recall | {evaluation['recall']:.4g} |" in card
    assert "on 128 samples at epoch 1" in card and "built-in MNIST evaluator" in card
    assert f"lr={ckpt['config']['optim']['lr']}" in card and f"epochs: 1 ({ckpt['step']:,} steps), seed 0" in card
    assert ("| label_accuracy |" in card) == (ckpt["config"]["model"]["num_classes"] > 0)
    group = ckpt["config"]["model"]["d_mbstd_group"]
    assert ("D 784-1024-512-256-1 with minibatch standard deviation over groups of 4" in card) == (group == 4)
    assert "![samples](samples.png)" in card and Image.open(out / "samples.png").size[0] > 0
    assert 'load_generator("path/to/this/folder")' in card


@pytest.mark.slow  # the ONNX exporter takes seconds
def test_onnx_runs_the_same_generator_to_1e_5_with_any_batch(trained, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = export_generator(trained, tmp_path / "export", formats=("safetensors", "onnx"))
    session = onnxruntime.InferenceSession(str(out / "generator.onnx"))
    generator = load_generator(out)
    for n in (1, 7, 64):
        z = noise(n, generator.latent_dim, seed=n)
        labels = sample_labels(generator, n)
        feed = {"z": z.numpy()} if labels is None else {"z": z.numpy(), "labels": labels.numpy()}
        images = session.run(None, feed)[0]
        assert images.shape == (n, 1, 28, 28)
        np.testing.assert_allclose(images, generate(generator, z, labels).numpy(), rtol=0, atol=1e-5)
    assert "onnxruntime.InferenceSession(\"generator.onnx\")" in (out / "README.md").read_text()


@pytest.mark.slow
def test_export_and_sample_from_the_command_line(trained, tmp_path):
    out = tmp_path / "export"
    result = run_script("export.py", f"checkpoint={trained}", f"out={out}")
    assert result.returncode == 0, result.stderr
    assert f"to {out}" in result.stdout
    sampled = run_script("sample.py", f"checkpoint={out}", "n=8", f"out={tmp_path / 'x.pt'}", "device=cpu")
    assert sampled.returncode == 0, sampled.stderr
    assert torch.load(tmp_path / "x.pt").shape == (8, 1, 28, 28)


def test_bad_input_is_one_sentence_and_overwrites_nothing(trained, tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(GanError, match="exists and is not an empty folder"):
        export_generator(trained, taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(trained.read_bytes()[:4000])
    with pytest.raises(GanError, match="truncated or corrupt"):
        export_generator(damaged, tmp_path / "from-damaged")
    assert not (tmp_path / "from-damaged").exists()

    def failing_export(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate\nmore detail")

    monkeypatch.setattr(gan.export.torch.onnx, "export", failing_export)
    with pytest.raises(GanError, match=r"the ONNX export failed \(Unsupported operator aten::frobnicate\); .*Nothing was written to"):
        export_generator(trained, tmp_path / "onnx-failed", formats=("safetensors", "onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.pt", "taken"], "no folder, and no staging folder left behind"

    with pytest.raises(GanError, match="formats"):
        export_generator(trained, tmp_path / "x", formats=("pickle",))
    (tmp_path / "not-an-export").mkdir()
    with pytest.raises(GanError, match="without config.json and model.safetensors"):
        load_generator(tmp_path / "not-an-export")


def test_push_to_hub_needs_a_login_and_uploads_the_folder(trained, tmp_path, monkeypatch):
    import huggingface_hub

    out = export_generator(trained, tmp_path / "export")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(GanError, match=r"not logged in to the Hugging Face Hub, so .* was not uploaded; .* the same command again"):
        upload(out, "me/mnist-gan")

    calls = []
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw["folder_path"])))
    assert upload(out, "me/mnist-gan") == "https://huggingface.co/me/mnist-gan"
    assert calls == [("create", "me/mnist-gan", {"repo_type": "model", "exist_ok": True}), ("upload", "me/mnist-gan", str(out))]


def test_an_export_is_readable_as_the_umask_allows(trained, tmp_path):
    old = os.umask(0o022)
    try:
        out = export_generator(trained, tmp_path / "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {p.name: 0o644 for p in out.iterdir()}


def test_a_damaged_export_names_what_is_wrong(trained, tmp_path):
    out = export_generator(trained, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    config["model"]["g_hidden"] = [128, 256, 512]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(GanError, match=r"model.safetensors does not match its config.json \(differing weights: net.0.bias"):
        load_generator(out)
    (out / "config.json").unlink()
    with pytest.raises(GanError, match=r"is a folder without config.json, so it is not an export"):
        load_generator(out)


@pytest.mark.slow
def test_push_to_hub_without_a_login_gives_advice_that_works(trained, tmp_path):
    out = tmp_path / "export"
    command = ("export.py", f"checkpoint={trained}", f"out={out}", "push_to_hub=me/mnist-gan")
    env = {"HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": ""}
    first = run_script(*command, env=env)
    assert first.returncode == 1 and "not logged in" in first.stderr and "the same command again" in first.stderr, first.stderr
    assert (out / "model.safetensors").is_file()
    again = run_script(*command, env=env)  # as the advice says: the export is there, so only the upload is tried
    assert f"{out} holds an export already: uploading it as it is" in again.stdout
    assert "not logged in" in again.stderr and "exists" not in again.stderr, again.stderr
