"""The STARK network: backbone + bottleneck per crop, one transformer pass over all crops, heads.

The work is split the way the tracker uses it: `encode` turns image crops into token sequences
(run once per template, once per frame for the search region) and `decode` runs the transformer
and heads on [template tokens..., search tokens]. Every call is batched over targets.
Parameter names equal the original's, so official state dicts load as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import STRIDE, BackboneWithPosition
from .box_ops import xyxy_to_cxcywh
from .config import ModelConfig
from .heads import CornerHead, ScoreHead, corner_certainty
from .transformer import Transformer


@dataclass
class Tokens:
    """One crop per batch element as transformer input: features and positions (HW, B, C),
    padding mask (B, HW) with True = padding."""

    features: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor

    @staticmethod
    def concat(parts: list['Tokens']) -> 'Tokens':
        """Join several crops of the same targets along the sequence."""
        return Tokens(torch.cat([p.features for p in parts]), torch.cat([p.mask for p in parts], dim=1),
                      torch.cat([p.pos for p in parts]))

    @staticmethod
    def stack(parts: list['Tokens']) -> 'Tokens':
        """Join the same crop of several targets along the batch."""
        return Tokens(torch.cat([p.features for p in parts], dim=1), torch.cat([p.mask for p in parts]),
                      torch.cat([p.pos for p in parts], dim=1))

    def select(self, index: int) -> 'Tokens':
        """Batch element `index`, kept as a batch of one."""
        return Tokens(self.features[:, index:index + 1], self.mask[index:index + 1],
                      self.pos[:, index:index + 1])


@dataclass
class NetworkOutput:
    """Per target: boxes (B, Nq, 4) normalised cxcywh in the search crop; logits (B, Nq, 1) or None
    without a score head; corner score maps (B*Nq, 1, H, W); decoder output (B, Nq, C)."""

    boxes: torch.Tensor
    logits: torch.Tensor | None
    score_map_tl: torch.Tensor
    score_map_br: torch.Tensor
    decoded: torch.Tensor

    def confidence(self) -> torch.Tensor:
        """Per-target confidence in [0, 1], shape (B,): sigmoid of the score head (mean over
        queries), or for STARK-S the corner-map certainty (see heads.corner_certainty)."""
        if self.logits is not None:
            return self.logits.float().sigmoid().mean(dim=(1, 2))
        certainty = corner_certainty(self.score_map_tl, self.score_map_br)
        return certainty.view(self.boxes.shape[0], -1).mean(dim=1)

    def corner_logits(self) -> torch.Tensor:
        """(B, 2, HW) float32: both corner maps' logits per target (top-left, bottom-right), averaged
        over its queries."""
        targets = self.boxes.shape[0]
        maps = [m.float().reshape(targets, -1, m.shape[-2] * m.shape[-1]).mean(dim=1)
                for m in (self.score_map_tl, self.score_map_br)]
        return torch.stack(maps, dim=1)


class MatchPrior(nn.Module):
    """Template matching as extra input (ours): each search token gains a projection of its cosine
    similarities to the target's cells of the first template, i.e. the centre half of its
    `template_cells` x `template_cells` grid (the crop is twice the target), one per cell."""

    def __init__(self, template_cells: int, dim: int) -> None:
        super().__init__()
        low, high = template_cells // 4, template_cells - template_cells // 4
        centre = [row * template_cells + col for row in range(low, high) for col in range(low, high)]
        self.register_buffer('centre', torch.tensor(centre, dtype=torch.long), persistent=False)
        self.proj = nn.Linear(len(centre), dim)

    def forward(self, tokens: Tokens, search_cells: int) -> Tokens:
        search = tokens.features[-search_cells:]                        # (S, B, C)
        kernel = tokens.features.index_select(0, self.centre)           # (K, B, C), first template
        similarity = torch.matmul(F.normalize(search, dim=-1).transpose(0, 1),
                                  F.normalize(kernel, dim=-1).permute(1, 2, 0))  # (B, S, K)
        boosted = search + self.proj(similarity.transpose(0, 1))
        return Tokens(torch.cat([tokens.features[:-search_cells], boosted]), tokens.mask, tokens.pos)


class StarkNetwork(nn.Module):
    """STARK-S (no score head) or STARK-ST (score head) for a given ModelConfig."""

    def __init__(self, config: ModelConfig, search_size: int = 320, template_size: int = 128) -> None:
        super().__init__()
        self.config = config
        self.search_size = search_size
        self.template_size = template_size
        dim = config.hidden_dim
        # Registration order equals the original's, so state_dict() lists keys in its order.
        self.backbone = BackboneWithPosition(config.backbone, dim)
        self.transformer = Transformer(dim, config.heads, config.encoder_layers, config.decoder_layers,
                                       config.feedforward_dim, config.dropout)
        self.box_head = CornerHead(dim, config.head_channels, search_size // STRIDE, STRIDE)
        self.query_embed = nn.Embedding(config.num_queries, dim)
        self.bottleneck = nn.Conv2d(self.backbone.num_channels, dim, kernel_size=1)
        self.cls_head = ScoreHead(dim) if config.score_head else None
        # Registered last, so that the original variants' key order is untouched.
        self.match_proj = MatchPrior(template_size // STRIDE, dim) if config.match_prior else None

    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        """images: (B, 3, S, S) normalised; masks: (B, S, S) bool, True = padding."""
        features, small_masks = self.backbone[0](images, masks)
        return self.encode_features(features, small_masks)

    def encode_features(self, features: torch.Tensor, small_masks: torch.Tensor) -> Tokens:
        """Tokens from backbone features (B, C, H, W) and their padding masks (B, H, W): the part of
        `encode` after the backbone (training from cached backbone features starts here)."""
        pos = self.backbone[1](small_masks).to(features.dtype)
        features = self.bottleneck(features)
        return Tokens(features.flatten(2).permute(2, 0, 1), small_masks.flatten(1),
                      pos.flatten(2).permute(2, 0, 1))

    def decode(self, tokens: Tokens) -> NetworkOutput:
        """tokens: [template tokens..., search tokens] joined by Tokens.concat; the search crop
        must be last (the box head reads the last search_size/16 squared memory cells)."""
        if self.match_proj is not None:
            tokens = self.match_proj(tokens, self.box_head.feature_size ** 2)
        decoded, memory = self.transformer(tokens.features, tokens.mask, tokens.pos, self.query_embed.weight)
        boxes, score_tl, score_br = self._predict_boxes(decoded, memory)
        logits = self.cls_head(decoded) if self.cls_head is not None else None
        return NetworkOutput(boxes, logits, score_tl, score_br, decoded)

    def box_head_input(self, decoded: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Search-region memory re-weighted by its similarity to each query: (B*Nq, C, H, W)."""
        cells = self.box_head.feature_size
        search_memory = memory[-cells * cells:].transpose(0, 1)  # (B, HW, C)
        attention = torch.matmul(search_memory, decoded.transpose(1, 2))  # (B, HW, Nq)
        weighted = search_memory.unsqueeze(-1) * attention.unsqueeze(-2)  # (B, HW, C, Nq)
        weighted = weighted.permute(0, 3, 2, 1).contiguous()  # (B, Nq, C, HW)
        return weighted.view(-1, memory.shape[-1], cells, cells)

    def _predict_boxes(self, decoded: torch.Tensor, memory: torch.Tensor):
        xyxy, score_tl, score_br = self.box_head(self.box_head_input(decoded, memory))
        return xyxy_to_cxcywh(xyxy).view(decoded.shape[0], decoded.shape[1], 4), score_tl, score_br

    def forward(self, templates: list[tuple[torch.Tensor, torch.Tensor]], search: tuple[torch.Tensor, torch.Tensor]
                ) -> NetworkOutput:
        """Whole pass from crops: templates [(images, masks), ...] then the search (images, masks)."""
        parts = [self.encode(images, masks) for images, masks in templates]
        parts.append(self.encode(*search))
        return self.decode(Tokens.concat(parts))


def build_network(config: ModelConfig, search_size: int = 320, template_size: int = 128) -> StarkNetwork:
    """A STARK network with fresh weights (load a checkpoint to make it useful)."""
    return StarkNetwork(config, search_size, template_size)
