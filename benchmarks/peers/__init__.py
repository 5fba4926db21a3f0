"""The reference libraries, one module each: `torch` (Hugging Face PyTorch), `flax` (Hugging
Face Flax), `keras_hub` (KerasHub, a script for another venv's Python).

The pretraining references run as peers, processes of their own started by
`python -m benchmarks.pretrain` (`common.start_peer`): `python -m benchmarks.peers.torch` and
`python -m benchmarks.peers.flax`, always as modules, since run as scripts their directory
would lead `sys.path` and shadow the real `torch` and `flax` packages. `keras_hub` imports
nothing from jaxlm or this package: KerasHub's venv need not have them.
"""
