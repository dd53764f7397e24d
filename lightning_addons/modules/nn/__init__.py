"""Pure-torch building blocks and FLOP counting (no Lightning import). Names load lazily (PEP 562)."""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "AlexNetSmall": "lightning_addons.modules.nn.cnn",
    "LeNet5": "lightning_addons.modules.nn.cnn",
    "FlopsReport": "lightning_addons.modules.nn.flops",
    "CacheModel": "lightning_addons.modules.nn.cache",
    "CacheSetSource": "lightning_addons.modules.nn.cache",
    "EncoderClient": "lightning_addons.modules.nn.cache",
    "count_flops": "lightning_addons.modules.nn.flops",
    "AttentionAdapter": "lightning_addons.modules.nn.clip_tuning",
    "PromptLearner": "lightning_addons.modules.nn.clip_tuning",
    "encode_prompt_embeddings": "lightning_addons.modules.nn.clip_tuning",
    "AttentionReplacement": "lightning_addons.modules.nn.ram",
    "FeedForward": "lightning_addons.modules.nn.ram",
    "ITransformer": "lightning_addons.modules.nn.ram",
    "LinearForecaster": "lightning_addons.modules.nn.ram",
    "MixerEncoderLayer": "lightning_addons.modules.nn.ram",
    "MultiHeadSelfAttention": "lightning_addons.modules.nn.ram",
    "PatchTST": "lightning_addons.modules.nn.ram",
    "ReplacementReport": "lightning_addons.modules.nn.ram",
    "SeasonalNaive": "lightning_addons.modules.nn.ram",
    "STAEformer": "lightning_addons.modules.nn.ram",
    "TorchEncoderLayerRAM": "lightning_addons.modules.nn.ram",
    "replace_attention_with_mlp": "lightning_addons.modules.nn.ram",
    "DLinear": "lightning_addons.modules.nn.baselines",
    "fit_least_squares": "lightning_addons.modules.nn.baselines",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
