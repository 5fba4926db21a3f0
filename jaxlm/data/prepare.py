"""Command line: `python -m jaxlm.data.prepare --config configs/bert_tiny.yaml data.k=v ...`.

Builds the tokenizer and instances a config needs and prints where they went. The code
lives in `jaxlm.data.pipeline`; in Python, call `jaxlm.data.prepare(cfg.data, seed=...)`
(the package attribute is that function, this module is only the entry point).
"""

from jaxlm.data.pipeline import main

if __name__ == "__main__":
    main()
