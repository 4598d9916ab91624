"""Plots refuse bad sizes and tables without the columns they need, by name; the model-taking plots draw a
single-modality VAE and refuse models of other kinds with a TypeError naming the kinds."""
from __future__ import annotations

import io

import pandas as pd
import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from mmvae_lite import build_model, get_config
from mmvae_lite import evaluation as ev
from mmvae_lite import plotting as pl
from mmvae_lite.models import VAE


@pytest.fixture(scope="module")
def ms():
    torch.manual_seed(0)
    return build_model(get_config("mnist-svhn", "quick", latent_dim=3))


def test_image_plots_of_a_single_modality_vae(ms):
    vae = VAE(ms.modalities["mnist"], ms.prior)
    x = torch.rand(5, 1, 28, 28)
    cross = pl.plot_cross_generation(vae, x, n=4)                   # inputs and reconstructions
    joint = pl.plot_joint_generation(vae, n=6)                      # prior samples
    for fig in (cross, joint):
        assert isinstance(fig, Figure)
        fig.savefig(io.BytesIO(), format="png", dpi=30)
    labels = [t.get_text() for t in cross.axes[0].get_yticklabels()]
    assert labels == ["mnist (input)", "mnist \u2192 mnist"]
    assert [t.get_text() for t in joint.axes[0].get_yticklabels()] == ["mnist"]
    # the same panel as the multimodal model's mnist panel without the svhn row
    batch = {"mnist": x, "svhn": torch.rand(5, 3, 32, 32)}
    labels_mm = [t.get_text() for t in pl.plot_cross_generation(ms, batch, n=4).axes[0].get_yticklabels()]
    assert labels_mm == ["mnist (input)", "mnist \u2192 mnist", "mnist \u2192 svhn"]


def test_model_plots_refuse_other_kinds_and_models_without_images(ms):
    from conftest import make_tiny_mm
    with pytest.raises(TypeError, match=r"takes a VAE or a MultimodalVAE \(MMVAE or MVAE\), got a Linear"):
        pl.plot_joint_generation(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="shows image modalities; this model has none"):
        pl.plot_joint_generation(make_tiny_mm())
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        pl.plot_cross_generation(ms, {"mnist": torch.rand(2, 1, 28, 28)}, n=0)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got -2"):
        pl.plot_joint_generation(ms, n=-2)
    with pytest.raises(ValueError, match="plot_cross_generation: batch holds no examples"):
        pl.plot_cross_generation(ms, {"mnist": torch.rand(0, 1, 28, 28)})


def test_image_grids_refuse_bad_sizes():
    with pytest.raises(ValueError, match="images holds no image"):
        pl.image_grid(torch.rand(0, 1, 8, 8))
    with pytest.raises(ValueError, match="nrow must be an integer >= 1, got 0"):
        pl.show_images(torch.rand(2, 1, 8, 8), nrow=0)
    with pytest.raises(ValueError, match="pad must be an integer >= 0, got -1"):
        pl.image_grid(torch.rand(2, 1, 8, 8), pad=-1)
    with pytest.raises(ValueError, match="max_width must be a finite number > 0"):
        pl.show_images(torch.rand(2, 1, 8, 8), max_width=0)
    with pytest.raises(ValueError, match=r"images must be a tensor \(..., C, H, W\) with C = 1 or 3, got shape \(8, 8\)"):
        pl.to_rgb(torch.rand(8, 8))
    with pytest.raises(ValueError, match="max_rows must be an integer >= 0 or None"):
        pl.caption_table({"in": torch.tensor([[3, 2]])}, ["<exc>", "<pad>", "<eos>", "a"], max_rows=-1)
    with pytest.raises(ValueError, match="token id 9 is outside the vocabulary of 4 words"):
        pl.caption_table({"in": torch.tensor([[9, 2]])}, ["<exc>", "<pad>", "<eos>", "a"])
    with pytest.raises(TypeError, match="images must be a tensor or an array of numbers, got str"):
        pl.show_images("abc")


def test_table_plots_name_the_missing_columns():
    with pytest.raises(ValueError, match=r"plot_kl: the table is empty"):
        pl.plot_kl(pd.DataFrame())
    with pytest.raises(ValueError, match=r"plot_snr: the table lacks columns \['which'\]"):
        pl.plot_snr(pd.DataFrame({"estimator": ["iwae"], "K": [1], "snr": [1.0]}))
    with pytest.raises(ValueError, match=r"plot_embedding: the table lacks columns \['source'\]"):
        pl.plot_embedding(pd.DataFrame({"x": [0.0], "y": [1.0]}))
    with pytest.raises(TypeError, match="plot_coherence takes the DataFrame"):
        pl.plot_coherence({"joint": 0.5})
    with pytest.raises(ValueError, match="plot_history needs at least one epoch"):
        pl.plot_history([])


def test_traversal_plot_names_what_exists(ms):
    tr = ev.latent_traversals(ms, {"mnist": torch.rand(2, 1, 28, 28)}, steps=3)
    with pytest.raises(ValueError, match=r"no mnist->cub traversals; source and target must be among"):
        pl.plot_traversals(tr, "mnist", "cub")
    with pytest.raises(ValueError, match=r"example must be in \[0, 1\]"):
        pl.plot_traversals(tr, "mnist", "svhn", example=2)
    assert isinstance(pl.plot_traversals(tr, "mnist", "svhn", example=1), Figure)
