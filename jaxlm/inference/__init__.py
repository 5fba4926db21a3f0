"""Using trained models: `load` (a jaxlm run or a Hugging Face directory), `generate` (KV
cache, greedy or sampled), `beam_search` (encoder-decoder), `fill_mask`, `classify`."""
