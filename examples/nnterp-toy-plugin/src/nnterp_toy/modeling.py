"""A small pre-norm transformer whose module names match no HuggingFace model."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class ToyConfig(PretrainedConfig):
    """Sizes of the toy model (defaults are tiny)."""

    model_type = "nnterp_toy"

    def __init__(self, vocab=512, width=48, depth=3, heads=4, context=128, **kwargs):
        self.vocab = vocab
        self.width = width
        self.depth = depth
        self.heads = heads
        self.context = context
        kwargs.setdefault("pad_token_id", 0)
        kwargs.setdefault("bos_token_id", 1)
        kwargs.setdefault("eos_token_id", 2)
        super().__init__(**kwargs)


class ToyMixer(nn.Module):
    """Causal multi-head self-attention, written out by hand."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.out = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (width // self.heads) ** 0.5
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None, None] & padding_mask[:, None, None, :].bool()
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        return self.out(mixed)


class ToyBlock(nn.Module):
    """Pre-norm block: x + mixer(norm(x)), then x + feedforward(norm(x))."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.pre_mix = nn.RMSNorm(config.width)
        self.mixer = ToyMixer(config)
        self.pre_ff = nn.RMSNorm(config.width)
        self.feedforward = nn.Sequential(
            nn.Linear(config.width, 2 * config.width), nn.GELU(), nn.Linear(2 * config.width, config.width)
        )

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.pre_mix(x), padding_mask)
        return x + self.feedforward(self.pre_ff(x))


class ToyTrunk(nn.Module):
    """Embeddings, blocks and the final norm."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.token_table = nn.Embedding(config.vocab, config.width)
        self.position_table = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(ToyBlock(config) for _ in range(config.depth))
        self.final_rms = nn.RMSNorm(config.width)


class ToyForCausalLM(PreTrainedModel, GenerationMixin):
    """The toy causal LM: ``trunk.blocks[i].mixer`` / ``.feedforward``, ``readout`` unembedding."""

    config_class = ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.trunk = ToyTrunk(config)
        self.readout = nn.Linear(config.width, config.vocab, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs) -> CausalLMOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(input_ids)
        x = self.trunk.token_table(input_ids) + self.trunk.position_table(position_ids)
        for block in self.trunk.blocks:
            x = block(x, attention_mask)
        return CausalLMOutput(logits=self.readout(self.trunk.final_rms(x)))
