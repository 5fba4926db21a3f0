"""Making a trained model smaller and faster.

    distill      knowledge distillation from a fine-tuned teacher (Hinton et al. 2015), the
                 student initialised from every k-th teacher layer (DistilBERT)
"""
