"""Building blocks, with no knowledge of any particular model: `layers` (Linear as an einsum,
Embedding, LayerNorm, Dropout, LoRA), `attention` (masks, the KV cache, multi-head
attention), `transformer` (feed-forward, encoder and decoder blocks, the layer stack),
`positions` (left-padded positions, sinusoids)."""
