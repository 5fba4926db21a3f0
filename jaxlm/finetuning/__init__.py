"""The fine-tuning tasks (BERT 4): what each reads and how it is scored.

`jaxlm.finetune` runs every task the same way (the shared loop, checkpoints, early stopping,
LoRA); a task module here supplies the rest:

    data = module.read(cfg, tokenizer)       # TaskData: encoded splits, labels, notes
    scores = data.score("validation", outputs)       # from the head's outputs per row

    sequence_classification  classification.py  accuracy, macro-F1, confusion matrix
    token_classification     tagging.py          entity F1 (seqeval's), token accuracy
    question_answering       question_answering.py  SQuAD exact match and F1
"""

from jaxlm.finetuning import classification, question_answering, tagging

TASK_MODULES = {
    "sequence_classification": classification,
    "token_classification": tagging,
    "question_answering": question_answering,
}
