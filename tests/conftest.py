"""Shared fixtures. Tests run on 8 fake CPU devices so every sharding path is exercised."""

import faulthandler
import os
import tempfile

# Must happen before jax is imported anywhere.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same small programs (and train.py subprocesses inherit this): XLA's
# persistent cache turns the repeats into loads.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"jaxlm-tests-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402

from jaxlm.config import ModelConfig  # noqa: E402


@pytest.fixture
def tiny_config() -> ModelConfig:
    """A BERT small enough to run in milliseconds, with every feature switched on."""
    return ModelConfig(
        vocab_size=99,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_dropout=0.1,
        attention_dropout=0.1,
    )


def _synthetic_corpus(path, num_documents=48, seed=0):
    """BERT-format text: documents of 6-14 sentences over a 120-word made-up vocabulary."""
    import numpy as np

    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ter", "an", "su", "ven", "ro", "di", "pa", "sho", "el"]
    words = sorted({"".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(200)})
    docs = []
    for _ in range(num_documents):
        sentences = [" ".join(rng.choice(words, rng.integers(4, 12))) + "."
                     for _ in range(rng.integers(6, 15))]
        docs.append("\n".join(sentences))
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="session")
def run_overrides(tmp_path_factory) -> list[str]:
    """`key=value` overrides for a tiny, fast pretraining run on a synthetic corpus.

    The data is prepared once per session (the same settings find it in `output_dir`);
    each test adds its own `run_dir=`.
    """
    root = tmp_path_factory.mktemp("pretrain")
    corpus = _synthetic_corpus(root / "corpus.txt")
    return [
        f"data.train_files=[{corpus}]", f"data.output_dir={root / 'prepared'}",
        "data.vocab_size=160", "data.max_seq_length=32", "data.max_predictions_per_seq=5",
        "data.dupe_factor=2", "data.eval_fraction=0.2", "data.num_workers=1",
        "model.hidden_size=32", "model.num_layers=2", "model.num_heads=4",
        "model.intermediate_size=64", "model.max_position_embeddings=32",
        "model.hidden_dropout=0.1", "model.attention_dropout=0.1",
        "train.batch_size=16", "train.steps=5", "train.warmup_steps=2",
        "train.learning_rate=1e-3", "train.log_every=1", "train.eval_every=0",
        "train.checkpoint_every=100", "train.progress_bar=false", "train.tensorboard=false",
        "train.async_checkpoint=false",
    ]


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory):
    """A tiny BERT fine-tuned for 3 epochs on 2 x 60 real polarity sentences, its data and
    base beside it (`data_fixtures.tiny_classifier_run`): a teacher, a run to quantize."""
    from data_fixtures import tiny_classifier_run

    return tiny_classifier_run(tmp_path_factory.mktemp("classifier"), epochs=3)


@pytest.fixture
def hang_guard():
    """Ends the test session with every thread's traceback if the test takes over 5 minutes:
    ArrayRecord's C++ reader waits forever on a bucket it cannot reach (as without
    CLOUD_STORAGE_EMULATOR_ENDPOINT), where no Python timeout can interrupt it."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def bucket():
    """"gs://jaxlm-test" on a Cloud Storage emulator for this test session (`gcs_emulator`)."""
    from benchmarks.gcs_emulator import emulator

    with emulator() as url:
        yield url
