"""The training loop: a jitted AdamW step over the functional T5, validation loss, the final model.

The step takes (params, optimizer state, batch, step number) and derives its dropout key from the
seed and the step number, so no random state needs carrying. The loss is Hugging Face's: the mean
cross entropy over non-ignored target tokens, in float32.

Output (the run directory): `config.json`, `metrics.jsonl` (one line per logged step),
`manifest.json` (the data's, for the commands that use the model), and `model/` (our model
directory with its tokenizer), written when training ends.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from chatcell_jax.errors import InputError
from chatcell_jax.model import T5, extend_vocab, load_preset
from chatcell_jax.model.config import T5Config
from chatcell_jax.model.t5 import forward
from chatcell_jax.records import load_split
from chatcell_jax.train.batches import IGNORE, Examples, epoch_batches, pad_batch, tokenize
from chatcell_jax.train.config import TrainConfig, save_config

log = logging.getLogger(__name__)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean token cross entropy over labels != IGNORE (float32)."""
    mask = labels != IGNORE
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(mask, picked, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def loss_fn(cfg: T5Config, params, batch: dict, dropout_rng: jax.Array | None) -> jax.Array:
    logits = forward(cfg, params, batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"],
                     dropout_rng=dropout_rng)
    return cross_entropy(logits, batch["labels"])


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    warmup = min(config.warmup_steps, max(config.steps - 1, 1))
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, config.steps,
                                                  end_value=config.learning_rate * 0.1)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                       optax.adamw(schedule, weight_decay=config.weight_decay))


def build_model(config: TrainConfig, tokenizer) -> tuple[T5Config, dict]:
    """A fresh preset sized to the tokenizer, or a pretrained model grown by the new tokens."""
    path = Path(config.model)
    vocab = len(tokenizer)
    if path.is_dir():
        from chatcell_jax.hf import load_model

        model_cfg, model, _ = load_model(path, dtype=config.dtype, dropout_rate=config.dropout_rate)
        if vocab < model_cfg.vocab_size:
            raise InputError(f"the tokenizer has {vocab} ids but the model {vocab and model_cfg.vocab_size}; use the "
                             "tokenizer built on this model's base (chatcell tokenizer --base MODEL)")
        if vocab > model_cfg.vocab_size:
            model = extend_vocab(model, vocab - model_cfg.vocab_size, init=config.vocab_init, seed=config.seed)
        return model.config, model.params()
    model_cfg = load_preset(config.model, vocab_size=vocab, dtype=config.dtype, dropout_rate=config.dropout_rate)
    return model_cfg, T5(model_cfg, rngs=nnx.Rngs(config.seed)).params()


def _examples(config: TrainConfig, tokenizer, split: str) -> Examples:
    records = load_split(config.data, split)
    if not records:
        raise InputError(f"{config.data}/{split} has no records")
    return tokenize(records, tokenizer, config.max_source_length, config.max_target_length)


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Train and write the run directory; returns its path."""
    from transformers import AutoTokenizer

    run_dir = Path(config.out)
    if run_dir.exists() and not config.overwrite:
        raise InputError(f"run directory {run_dir} exists; pass --set overwrite=true to replace it")
    if not Path(config.tokenizer).is_dir():
        raise InputError(f"tokenizer directory {config.tokenizer} does not exist; build it with `chatcell tokenizer`")
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    train_set, valid_set = _examples(config, tokenizer, "train"), _examples(config, tokenizer, "valid")
    if len(train_set.sources) < config.batch_size:
        raise InputError(f"batch_size {config.batch_size} exceeds the {len(train_set.sources)} training examples")
    model_cfg, params = build_model(config, tokenizer)
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    save_config(config, run_dir)
    step_fn = jax.jit(partial(_train_step, model_cfg, tx, config.seed), donate_argnums=(0, 1))
    eval_fn = jax.jit(partial(loss_fn, model_cfg), static_argnums=())
    metrics = (run_dir / "metrics.jsonl").open("w")
    bar = tqdm(total=config.steps, desc="training", unit="step", disable=not progress)
    step, epoch, started, tokens = 0, 0, time.perf_counter(), 0
    try:
        while step < config.steps:
            for index in epoch_batches(train_set, config.batch_size, config.seed, epoch):
                batch = pad_batch(train_set, index, model_cfg.decoder_start_token_id)
                params, opt_state, loss = step_fn(params, opt_state, batch, jnp.int32(step))
                step += 1
                tokens += int(batch["attention_mask"].sum() + (batch["labels"] != IGNORE).sum())
                record = {"step": step, "loss": None}
                if step % 10 == 0 or step == config.steps:
                    record["loss"] = float(loss)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tokens / (time.perf_counter() - started):.0f}")
                if step % config.eval_every == 0 or step == config.steps:
                    record["valid_loss"] = validation_loss(eval_fn, params, valid_set, config, model_cfg)
                    log.info("step %d: valid loss %.4f", step, record["valid_loss"])
                if record["loss"] is not None or "valid_loss" in record:
                    record["seconds"] = round(time.perf_counter() - started, 2)
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                bar.update(1)
                if step >= config.steps:
                    break
            epoch += 1
    finally:
        bar.close()
        metrics.close()
    _save(run_dir, model_cfg, params, config)
    return run_dir


def _train_step(model_cfg: T5Config, tx, seed: int, params, opt_state, batch, step):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model_cfg, p, batch, rng))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def validation_loss(eval_fn, params, examples: Examples, config: TrainConfig, model_cfg: T5Config) -> float:
    """Token-weighted mean loss over up to `eval_batches` fixed batches of the split."""
    n = len(examples.sources)
    order = np.arange(n)
    total, weight = 0.0, 0
    for start in range(0, min(n, config.eval_batches * config.batch_size), config.batch_size):
        index = order[start : start + config.batch_size]
        batch = pad_batch(examples, index, model_cfg.decoder_start_token_id)
        count = int((batch["labels"] != IGNORE).sum())
        total += float(eval_fn(params, batch, None)) * count
        weight += count
    return total / max(weight, 1)


def _save(run_dir: Path, model_cfg: T5Config, params, config: TrainConfig) -> None:
    from chatcell_jax.hf import save_model

    model = T5.from_params(model_cfg.replace(dropout_rate=config.dropout_rate), jax.device_get(params))
    save_model(model, None, run_dir / "model", tokenizer_dir=config.tokenizer)
    manifest = Path(config.data) / "manifest.json"
    if manifest.is_file():
        shutil.copyfile(manifest, run_dir / "manifest.json")
        shutil.copyfile(manifest, run_dir / "model" / "manifest.json")
    _plot_losses(run_dir)


def _plot_losses(run_dir: Path) -> None:
    """loss_curve.png when matplotlib is installed (it is an optional nicety here)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no loss_curve.png")
        return
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    valid = [(r["step"], r["valid_loss"]) for r in rows if "valid_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    for points, label in ((train, "train"), (valid, "validation")):
        if points:
            ax.plot(*zip(*points), label=label, marker="o" if label == "validation" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("cross entropy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss_curve.png", dpi=100)
    plt.close(fig)
