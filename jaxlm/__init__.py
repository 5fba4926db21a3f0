"""jaxlm: Transformer language models (BERT, GPT, encoder-decoder) in JAX and Flax NNX.

Every array name carries its shape as a suffix, with one letter per dimension:

    B batch              T query length        S key/value length    D model width
    N attention heads    H head width          F MLP hidden width    V vocabulary
    P masked positions per sequence            L layers
    K classes or tags    R LoRA rank           E a teacher's width D (distillation)
    M, I, O rows, input width and output width of a 2-D matmul (M = B*T in a projection)

In the host-side data and scoring code, which has no attention heads, N counts the rows of
a whole split (examples, or question-answering windows): `logits_NTK`, `start_logits_NT`.

So `x_BTD` is a [batch, length, width] activation, `scores_BNTS` holds attention scores
and `logits_BPV` the masked-LM logits at the gathered masked positions.

The package, from the bottom layer up (a layer imports only the ones below it; the
contracts in pyproject.toml say so and `lint-imports` checks them):

    config       frozen dataclasses read from configs/*.yaml, key.sub=value overrides
    nn           building blocks: Linear, attention and its masks, transformer blocks
    models       BERT, GPT, the encoder-decoder; data: corpora, tokenizer, instances, loader
    objectives   losses, each kind's loss sums, FLOPs, the registry of model kinds
    training     train state, jitted steps, the shared loop, sharding, checkpoints, metrics
    hf           Hugging Face checkpoints in and out, one table per architecture and head
    finetuning   each fine-tuning task's data and scores: classification, tagging, QA
    compression  knowledge distillation (teacher, soft targets, student from its layers,
                 layer transfer), int8 quantization, pruning (heads, neurons, weights)
    inference    loading runs, generation, beam search, fill-mask, classification, tagging,
                 question answering

The modules at the top level are the command-line entry points, one per job
(`python -m jaxlm.<job>`): pretrain (`train.py`), finetune, prepare, generate, fill_mask,
classify, tag, answer, evaluate, export, make_pairs, plot, quantize, prune (fine-tuning while
pruning), and distill (fine-tuning with a teacher, one layer above them).
"""

__version__ = "0.1.0"
