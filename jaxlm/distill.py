"""Knowledge distillation of a fine-tuned BERT into a smaller one: `python -m jaxlm.distill`.

    python -m jaxlm.distill distill.teacher=runs/classify distill.student_layers=1
    python -m jaxlm.distill --config configs/finetune_ner.yaml distill.teacher=path/to/hf_ner \
        init_from=runs/bert_tiny distill.alpha=0.7 distill.temperature=4

Fine-tuning (`jaxlm.finetune`: the same config, data, loop, checkpoints and results) with
the teacher's softened outputs as extra targets (`jaxlm.compression.distill`); the default
config is configs/distill_classify.yaml. The student is `init_from` when given, else
`distill.student_layers` of the teacher's layers (DistilBERT);
the result loads in `jaxlm.classify`, `jaxlm.tag`, `jaxlm.answer` and `jaxlm.export` as any
fine-tuned run.
"""

import sys

from jaxlm import finetune

if __name__ == "__main__":
    sys.exit(finetune.main(command="distill"))
