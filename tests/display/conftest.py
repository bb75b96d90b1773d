"""Fixtures for the display tests: real nnterp outputs from the tiny Llama, and a PNG checker."""

from __future__ import annotations

import warnings
from pathlib import Path

import kaleido
import nnsight
import numpy as np
import pytest
import torch
from PIL import Image

PROMPT = "The capital of France is"


@pytest.fixture(scope="session")
def prompt() -> str:
    """The prompt behind `lens_probs` and `attention_probs`."""
    return PROMPT


@pytest.fixture(scope="module")
def lens_probs(llama):
    """Logit lens of the tiny Llama on PROMPT, by hand: (layers, positions, vocab) probabilities."""
    with llama.trace(PROMPT):
        per_layer = nnsight.save([])
        for layer in range(llama.num_layers):
            per_layer.append(llama.project_on_vocab(llama.layers_output[layer]).softmax(-1))
    return torch.stack([probs[0] for probs in per_layer]).detach()


@pytest.fixture(scope="module")
def attention_probs(llama):
    """Layer 0 attention probabilities of the tiny Llama on PROMPT: (1, heads, q, k)."""
    with llama.trace(PROMPT):
        probs = llama.attention_probabilities[0].save()
    return probs.detach()


#: kaleido >= 1.1 can keep one browser running between renders; the oldest release nnterp
#: accepts (1.0, in the floors environment) starts one for each image.
HAS_SYNC_SERVER = hasattr(kaleido, "start_sync_server")


def _start_server() -> None:
    if HAS_SYNC_SERVER:
        kaleido.start_sync_server(silence_warnings=True)


def _stop_server() -> None:
    if HAS_SYNC_SERVER:
        kaleido.stop_sync_server(silence_warnings=True)


@pytest.fixture(scope="session")
def image_server():
    """One headless browser for every render in the session (kaleido's sync server).

    `save_figure` is unchanged: plotly sends images to this server while it runs, which takes
    ~0.2 s an image instead of ~3 s to start a browser for each.
    """
    _start_server()
    yield
    _stop_server()


@pytest.fixture(autouse=True)
def _quiet_image_server():
    # plotly passes its kaleido options on every call; the running server already has them.
    warnings.filterwarnings("ignore", "The kopts argument is ignored if using a server", UserWarning)


@pytest.fixture
def no_image_server(image_server):
    """Render without the shared browser (each image starts its own, as for a user)."""
    _stop_server()
    yield
    _start_server()


@pytest.fixture
def check_png(image_server):
    """Assert a PNG has the given pixel size and shows something (not one flat colour)."""

    def check(path: Path, width: int, height: int) -> np.ndarray:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (width, height)
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        not_white = (pixels < 245).any(axis=-1).mean()
        colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
        assert pixels.std() > 20, f"image is nearly flat (std {pixels.std():.1f})"
        assert not_white > 0.05, f"only {not_white:.1%} of the image is drawn"
        assert colours > 50, f"only {colours} colours"
        return pixels

    return check
