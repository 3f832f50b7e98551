"""Shared set-up for the backend tests: a small STARK network with reproducible random weights."""
from __future__ import annotations

import torch

from stark_model import load_model
from stark_model.factory import LoadedModel


def lite_model(seed: int = 0) -> LoadedModel:
    """STARK-Lite with seeded random weights, in eval mode (untrained: same work, any function)."""
    torch.manual_seed(seed)
    model = load_model(variant='lite', allow_untrained=True)
    model.network.eval()
    return model


def random_crops(batch: int, size: int, padded_rows: int = 0, seed: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking images and masks whose last `padded_rows` rows are padding."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.zeros(batch, size, size, dtype=torch.bool)
    if padded_rows:
        masks[:, -padded_rows:] = True
    return images, masks
