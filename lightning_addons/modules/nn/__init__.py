"""Pure-torch building blocks (no Lightning import)."""

from lightning_addons.modules.nn.baselines import DLinear, fit_least_squares
from lightning_addons.modules.nn.cnn import AlexNetSmall, LeNet5
from lightning_addons.modules.nn.flops import FlopsReport, count_flops
from lightning_addons.modules.nn.ram import (
    AttentionReplacement,
    FeedForward,
    ITransformer,
    LinearForecaster,
    MixerEncoderLayer,
    MultiHeadSelfAttention,
    PatchTST,
    ReplacementReport,
    SeasonalNaive,
    STAEformer,
    TorchEncoderLayerRAM,
    replace_attention_with_mlp,
)

__all__ = [
    "AlexNetSmall",
    "AttentionReplacement",
    "DLinear",
    "FeedForward",
    "FlopsReport",
    "ITransformer",
    "LeNet5",
    "LinearForecaster",
    "MixerEncoderLayer",
    "MultiHeadSelfAttention",
    "PatchTST",
    "ReplacementReport",
    "STAEformer",
    "SeasonalNaive",
    "TorchEncoderLayerRAM",
    "count_flops",
    "fit_least_squares",
    "replace_attention_with_mlp",
]
