"""What a model learns and how it is scored: `losses` (cross entropy, top-1 hits), `tasks`
(each kind's loss sums and counts, eval metrics), `flops` (matmul FLOPs per step),
`registry` (the model kinds: module, loss terms, FLOPs, data recipe), `bleu`."""
