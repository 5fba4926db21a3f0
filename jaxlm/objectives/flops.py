"""Matmul FLOPs of one training step of each model, for MFU (PaLM appendix B).

Only matmuls count; backward is twice the forward (Kaplan et al. 2020), so a step is 3x
the forward.
"""

from __future__ import annotations

from jaxlm.config import ModelConfig


def layer_flops(cfg: ModelConfig, length: int, layer: int = 0) -> int:
    """Forward matmul FLOPs of one encoder or decoder self-attention layer per token: Q, K,
    V, output projections 4*2*D*A, MLP 2*2*D*F, attention scores and mix 2*2*T*A, where the
    attention width A = N*H is D unless the layer's heads were pruned."""
    D, F, A = cfg.hidden_size, cfg.intermediate(layer), cfg.heads(layer) * cfg.head_dim
    return 8 * D * A + 4 * D * F + 4 * length * A


def encoder_flops(cfg: ModelConfig, length: int) -> int:
    """Forward matmul FLOPs per token of all L encoder layers, each at its own width."""
    return sum(layer_flops(cfg, length, i) for i in range(cfg.num_layers))


def bert_train_flops(cfg: ModelConfig, batch: int, length: int, predictions: int) -> float:
    """Matmul FLOPs of one training step of BertForPreTraining (forward + backward).

    Per token and layer: Q, K, V, output projections 4*2*D*D, MLP 2*2*D*F, attention scores
    and mix 2*2*T*D. Per masked position: transform 2*D*D and tied output 2*D*V. Per
    sequence: pooler 2*D*D and NSP 2*D*2. Backward is twice the forward (Kaplan et al. 2020).
    """
    D, V = cfg.hidden_size, cfg.vocab_size
    per_token = encoder_flops(cfg, length)
    per_prediction = 2 * D * D + 2 * D * V
    per_sequence = 2 * D * D + 4 * D
    forward = batch * (length * per_token + predictions * per_prediction + per_sequence)
    return 3.0 * forward


def gpt_train_flops(cfg: ModelConfig, batch: int, length: int) -> float:
    """Matmul FLOPs of one training step of GPTLanguageModel: the encoder's per-token
    count (causal attention still computes all T x T scores) plus the tied output 2*D*V at
    every position; times 3 for forward + backward."""
    per_token = cfg.num_layers * layer_flops(cfg, length) + 2 * cfg.hidden_size * cfg.vocab_size
    return 3.0 * batch * length * per_token


def encoder_decoder_train_flops(cfg: ModelConfig, batch: int, source: int,
                                target: int) -> float:
    """Encoder layers over S source tokens; decoder layers over T target tokens, each with
    cross-attention (Q and output projections on T, K and V on S: 2*2*D*D per token each,
    scores and mix 2*2*S*D per target token); the tied output 2*D*V per target token."""
    D, L, V = cfg.hidden_size, cfg.num_layers, cfg.vocab_size
    encoder = source * L * layer_flops(cfg, source)
    cross = L * (target * (4 * D * D + 4 * source * D) + source * 4 * D * D)
    decoder = target * (L * layer_flops(cfg, target) + 2 * D * V) + cross
    return 3.0 * batch * (encoder + decoder)


def classify_train_flops(cfg: ModelConfig, batch: int, length: int, num_labels: int) -> float:
    """The encoder's matmul FLOPs plus pooler 2*D*D and classifier 2*D*K per sequence, times
    3 for forward + backward (an upper bound under LoRA, where frozen weights get no
    gradient)."""
    D = cfg.hidden_size
    encoder = length * encoder_flops(cfg, length)
    per_sequence = encoder + 2 * D * D + 2 * D * num_labels
    return 3.0 * batch * per_sequence


def token_head_train_flops(cfg: ModelConfig, batch: int, length: int, outputs: int) -> float:
    """The encoder's matmul FLOPs plus a linear head of `outputs` per position (K tags, or the
    2 start/end scores of question answering), 2*D*outputs per token, times 3."""
    per_token = encoder_flops(cfg, length) + 2 * cfg.hidden_size * outputs
    return 3.0 * batch * length * per_token
