"""One file per architecture, built from `jaxlm.nn`: `bert` (BERT with its masked-LM,
next-sentence and classification heads), `gpt` (a causal decoder LM), `encoder_decoder`
(the Transformer of Vaswani et al. with cross-attention)."""
