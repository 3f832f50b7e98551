"""The STARK encoder-decoder transformer: post-norm layers, ReLU feed-forward, sequence-first.

Position encodings are added to queries and keys, never to values. The encoder has no final
norm; the decoder has one. By default attention computes its weights as the original does
(need_weights=True, averaged over heads): PyTorch then runs the explicit softmax(QK^T)V, whose
rounding is the original's. Inside `fused_attention()` it runs the fused kernel instead
(need_weights=False): the same function, faster, but rounded differently.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
from torch import nn

# Whether attention may use PyTorch's fused kernel; a context variable, so that trackers sharing one
# network (or threads running it) each choose for themselves.
_FUSED_ATTENTION = contextvars.ContextVar('stark_fused_attention', default=False)


@contextlib.contextmanager
def fused_attention(enabled: bool = True) -> Iterator[None]:
    """Within this block attention skips computing its weights (the fused kernel) when enabled."""
    token = _FUSED_ATTENTION.set(enabled)
    try:
        yield
    finally:
        _FUSED_ATTENTION.reset(token)


def _need_weights() -> bool:
    # The original asks nn.MultiheadAttention for the weights (its default), which selects the
    # unfused computation; the weights themselves are discarded.
    return not _FUSED_ATTENTION.get()


def _dropout(p: float) -> nn.Module:
    """Dropout, or nothing at p = 0 (torch's Dropout still draws a full random mask at p = 0, which
    costs half of a CPU training step of the light models)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, feedforward_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.linear1 = nn.Linear(dim, feedforward_dim)
        self.dropout = _dropout(dropout)
        self.linear2 = nn.Linear(feedforward_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = _dropout(dropout)
        self.dropout2 = _dropout(dropout)

    def forward(self, src: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        attended = self.self_attn(q, k, value=src, key_padding_mask=padding_mask,
                                  need_weights=_need_weights())[0]
        src = self.norm1(src + self.dropout1(attended))
        fed = self.linear2(self.dropout(torch.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(fed))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, feedforward_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.linear1 = nn.Linear(dim, feedforward_dim)
        self.dropout = _dropout(dropout)
        self.linear2 = nn.Linear(feedforward_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = _dropout(dropout)
        self.dropout2 = _dropout(dropout)
        self.dropout3 = _dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor,
                pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        attended = self.self_attn(q, k, value=tgt, need_weights=_need_weights())[0]
        tgt = self.norm1(tgt + self.dropout1(attended))
        attended = self.multihead_attn(tgt + query_pos, memory + pos, value=memory,
                                       key_padding_mask=memory_padding_mask, need_weights=_need_weights())[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        fed = self.linear2(self.dropout(torch.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(fed))


class Encoder(nn.Module):
    def __init__(self, num_layers: int, **layer_args) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_args) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, padding_mask, pos)
        return src


class Decoder(nn.Module):
    def __init__(self, num_layers: int, dim: int, **layer_args) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim=dim, **layer_args) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor,
                pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_padding_mask, pos, query_pos)
        return self.norm(tgt)


class Transformer(nn.Module):
    """Encoder over [templates..., search] tokens, decoder with learned target queries."""

    def __init__(self, dim: int, heads: int, encoder_layers: int, decoder_layers: int,
                 feedforward_dim: int, dropout: float) -> None:
        super().__init__()
        layer_args = dict(heads=heads, feedforward_dim=feedforward_dim, dropout=dropout)
        self.encoder = Encoder(encoder_layers, dim=dim, **layer_args)
        self.decoder = Decoder(decoder_layers, dim, **layer_args)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor,
                query_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens, pos: (L, B, C); padding_mask: (B, L); query_embed: (Nq, C).

        Returns the decoder output (B, Nq, C) and the encoder memory (L, B, C).
        """
        batch = tokens.shape[1]
        query_pos = query_embed.unsqueeze(1).repeat(1, batch, 1)
        memory = self.encoder(tokens, padding_mask, pos)
        decoded = self.decoder(torch.zeros_like(query_pos), memory, padding_mask, pos, query_pos)
        return decoded.transpose(0, 1), memory
