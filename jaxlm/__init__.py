"""jaxlm: Transformer language models (BERT, GPT, encoder-decoder) in JAX and Flax NNX.

Every array name carries its shape as a suffix, with one letter per dimension:

    B batch              T query length        S key/value length    D model width
    N attention heads    H head width          F MLP hidden width    V vocabulary
    P masked positions per sequence            L layers
    K classes            R LoRA rank
    M, I, O rows, input width and output width of a 2-D matmul (M = B*T in a projection)

So `x_BTD` is a [batch, length, width] activation, `scores_BNTS` holds attention scores
and `logits_BPV` the masked-LM logits at the gathered masked positions.
"""

__version__ = "0.1.0"
