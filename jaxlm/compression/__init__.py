"""Making a trained model smaller and faster.

    distill      knowledge distillation from a fine-tuned teacher (Hinton et al. 2015), the
                 student initialised from every k-th teacher layer (DistilBERT)
    quantize     post-training int8: weights per output channel, or weights and activations
                 (w8a8), saved as int8 and loaded by every inference command
"""
