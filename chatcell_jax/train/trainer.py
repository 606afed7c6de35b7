"""`train(config)`: the whole run, from the config to RUN/model.

    RUN/config.json        the resolved config (what `--resume` continues)
    RUN/metrics.jsonl      one line per logged step: loss (token-mean cross entropy), objective (what
                           is minimised), loss_<task>, lr, grad norm, steps/s, tokens/s, MFU, truncated
                           rows so far; at evaluations valid_loss, valid_loss_<task> and the
                           per-task answers of `train.generation_eval`
    RUN/tensorboard/       event files with the same scalars
    RUN/checkpoints/<step> Orbax: train state + data iterator position (latest K and the best)
    RUN/model/             the final model directory with its tokenizer (written last, atomically)
    RUN/manifest.json      the data's manifest, for the commands that use the model
    RUN/loss_curve.png

Every process runs this same function; process 0 writes the files. Load the result with
`chatcell_jax.model.directory.load_model(RUN / "model")` (or pass RUN to any command taking a model).
"""

from __future__ import annotations

import logging
import shutil
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np

from chatcell_jax.errors import InputError
from chatcell_jax.model.directory import write_step_files
from chatcell_jax.model.sharding import batch_sharding, batch_shards, make_mesh, param_shardings
from chatcell_jax.tokenizer import check_covers
from chatcell_jax.train import data as data_lib
from chatcell_jax.train import distributed
from chatcell_jax.train.checkpoint import Checkpoints
from chatcell_jax.train.config import TrainConfig, read_saved_config, save_config
from chatcell_jax.train.gene_init import with_gene_rows
from chatcell_jax.train.metrics import MetricsLog, peak_flops, plot_losses, train_flops
from chatcell_jax.train.model_init import build_params
from chatcell_jax.train.optimizer import make_optimizer, make_schedule
from chatcell_jax.train.step import Objective, compile_steps, init_state, state_shardings

log = logging.getLogger(__name__)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def prepare_run_dir(config: TrainConfig, resume: bool) -> Path:
    """Create (or, with resume, reuse) the run directory and write config.json."""
    run_dir = Path(config.out)
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    # Every process looks before process 0 writes: a process that looked afterwards would find
    # the directory process 0 just created and refuse to start (and leave process 0 waiting).
    _sync("run_dir looked at")
    if exists and resume:
        saved = read_saved_config(run_dir)
        changed = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
        if changed:
            log.warning("resuming %s with changed config keys %s", run_dir, changed)
    elif exists and not config.overwrite:
        raise InputError(
            f"run directory {run_dir} exists; pass --resume to continue it, --set overwrite=true to "
            "replace it, or choose another out"
        )
    elif exists and jax.process_index() == 0:
        if not (run_dir / "config.json").is_file():
            raise InputError(
                f"{run_dir} is not a training run (no config.json); refusing to delete it, choose another out"
            )
        shutil.rmtree(run_dir)
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir)
    _sync("run_dir")
    return run_dir


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise InputError(f"tokenizer directory {path} does not exist; build it with `chatcell tokenizer`")
    return AutoTokenizer.from_pretrained(path)


def _check_data_dir(path: str) -> None:
    if not Path(path).is_dir():
        raise InputError(
            f"data directory {path} does not exist; create it with `chatcell prepare` (or point data at "
            "a ChatCell-Instructions directory with train.json / valid.json)"
        )


def check_batch(config: TrainConfig, mesh: jax.sharding.Mesh) -> None:
    data_parallel = batch_shards(mesh)
    per_step = data_parallel * config.grad_accum_steps
    if config.batch_size % per_step:
        raise InputError(
            f"batch_size {config.batch_size} is not divisible by the data-parallel devices "
            f"(data x fsdp = {data_parallel}) x grad_accum_steps ({config.grad_accum_steps}) = {per_step}; "
            f"use a multiple of {per_step} or change mesh"
        )


class Trainer:
    """Holds what one run needs; `run()` trains to `config.steps`."""

    def __init__(
        self, config: TrainConfig, *, resume: bool = False, progress: bool = True, devices: list | None = None
    ):
        distributed.initialize(config)
        self.config, self.progress = config, progress
        _check_data_dir(config.data)
        self.tokenizer = _load_tokenizer(config.tokenizer)
        self.data_manifest = _data_manifest(config.data)  # None for ChatCell-Instructions data
        if self.data_manifest is not None:
            check_covers(self.tokenizer, self.data_manifest, config.tokenizer)
        self.train_records = data_lib.load_records(config.data, "train")
        # Interleaved, so the `eval_batches` first batches measure every task.
        self.valid_records = (
            data_lib.interleave_tasks(data_lib.load_records(config.data, "valid")) if config.eval_every else []
        )
        self.mesh = make_mesh(config.mesh, devices)
        check_batch(config, self.mesh)
        self.model_cfg, params = build_params(config, len(self.tokenizer), self.mesh)
        if config.gene_init == "svd":  # a resumed run's restored state replaces these rows
            params, _ = with_gene_rows(params, self.train_records, config.tokenizer, config.seed)
        self.shapes = data_lib.Shapes(
            config.max_source_length,
            config.max_target_length,
            config.padding,
            config.bucket_multiple,
            self.model_cfg.decoder_start_token_id,
        )
        self.batch_sharding = batch_sharding(self.mesh)
        self.batches = data_lib.train_batches(
            self.train_records,
            self.tokenizer,
            self.batch_sharding,
            config.batch_size,
            self.shapes,
            config.seed,
            config.shuffle,
            config.data_threads,
            config.task_sampling,
        )
        # Only now, when inputs, model and data have passed their checks: a failed start leaves no
        # run directory behind that would refuse the corrected rerun.
        self.run_dir = prepare_run_dir(config, resume)
        if jax.process_index() == 0:
            write_step_files(self.run_dir, self.model_cfg, config.tokenizer)
        tx, self.schedule = make_optimizer(config), make_schedule(config)
        make_state = partial(init_state, tx=tx, seed=config.seed)
        abstract = jax.eval_shape(make_state, params)
        self.shardings = state_shardings(abstract, param_shardings(self.model_cfg, self.mesh), self.mesh, tx)
        self.checkpoints = Checkpoints(
            self.run_dir / "checkpoints", config.keep_checkpoints, config.keep_best, config.async_checkpoint
        )
        latest = self.checkpoints.latest_step() if resume else None
        if latest is None:
            self.state = jax.jit(make_state, out_shardings=self.shardings)(params)
        else:
            target = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.shardings
            )
            del params
            self.state = self.checkpoints.restore(latest, target, self.batches.grain_iterator)
        self.start_step = int(self.state.step)
        objective = Objective(
            config.loss_normalization,
            config.task_weight_vector(),
            config.label_smoothing,
            config.z_loss,
            config.decoder_input_dropout,
            self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 2,
        )
        self.step_fn, self.eval_fn = compile_steps(
            self.model_cfg, tx, self.schedule, config.grad_accum_steps, objective, self.shardings, self.batch_sharding
        )
        self.metrics = MetricsLog(self.run_dir, config.tensorboard, resume_step=self.start_step if latest else None)
        self._eval_cache: list | None = None
        self._generation: tuple | None = None  # (Generator, samples, manifest), built at the first evaluation

    # --- evaluation -------------------------------------------------------------------------------

    def validation_losses(self) -> dict[str, float]:
        """Token-mean cross entropy over the first `eval_batches` validation batches (fixed, cached):
        `valid_loss` over all of them and `valid_loss_<task>` per task."""
        if self._eval_cache is None:
            self._eval_cache = list(
                data_lib.eval_batches(
                    self.valid_records,
                    self.tokenizer,
                    self.batch_sharding,
                    self.config.batch_size,
                    self.shapes,
                    self.config.eval_batches,
                    self.config.data_threads,
                )
            )
            distributed.compile_in_step(self.eval_fn, self.state.params, self._eval_cache[0])
        sums = [jax.device_get(self.eval_fn(self.state.params, batch)) for batch in self._eval_cache]
        total = {k: np.sum([s[k] for s in sums], axis=0) for k in ("ce", "tokens", "task_ce", "task_tokens")}
        return {
            "valid_loss": float(total["ce"]) / max(float(total["tokens"]), 1.0),
            **per_task_losses("valid_loss", total["task_ce"], total["task_tokens"]),
        }

    def generation_scores(self) -> dict[str, float]:
        """Per-task greedy-decoding metrics on a fixed validation sample (`eval_generate` per task)."""
        if not self.config.eval_generate or not self.valid_records:
            return {}
        from chatcell_jax.serve.generation import Generator
        from chatcell_jax.train import generation_eval

        if self._generation is None:  # one Generator for the run, so its search compiles once
            generator = Generator(
                self.model_cfg,
                None,
                self.tokenizer,
                max_source_length=self.config.max_source_length,
                batch_size=16,
                length_bucket=self.config.bucket_multiple,
            )
            samples = generation_eval.sample_tasks(self.valid_records, self.config.eval_generate, self.config.seed)
            self._generation = (generator, samples, self.data_manifest)
        generator, samples, manifest = self._generation
        # With several processes every one decodes the same sample from a full copy of the parameters.
        params = self.state.params
        generator.params = params if jax.process_count() == 1 else gather(params)
        return generation_eval.generation_metrics(generator, samples, self.config.max_target_length, manifest)

    def evaluate(self) -> dict[str, float]:
        record = {**self.validation_losses(), **self.generation_scores()}
        log.info("validation: %s", ", ".join(f"{k} {v:.4g}" for k, v in record.items()))
        return record

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> Path:
        config = self.config
        bar = _progress_bar(config.steps, self.start_step, self.progress and jax.process_index() == 0)
        peak = peak_flops(config.peak_tflops, config.dtype)
        window: list = []
        flops = padded_tokens = 0.0
        last = time.perf_counter()
        if self.start_step == 0 and config.eval_every:
            self._log(0, self.evaluate())
            last = time.perf_counter()
        try:
            for step in range(self.start_step + 1, config.steps + 1):
                batch = next(self.batches)
                b, s = batch["input_ids"].shape
                t = batch["labels"].shape[1]
                flops += train_flops(self.model_cfg, b, s, t)
                padded_tokens += b * (s + t)
                if step == self.start_step + 1:
                    distributed.compile_in_step(self.step_fn, self.state, batch)
                self.state, metrics = self.step_fn(self.state, batch)
                window.append(metrics)
                record = {}
                if step % config.log_every == 0 or step == config.steps:
                    values = jax.device_get(window)
                    elapsed = time.perf_counter() - last
                    record = {
                        "loss": float(np.mean([v["loss"] for v in values])),
                        "objective": float(np.mean([v["objective"] for v in values])),
                        **per_task_losses(
                            "loss",
                            np.sum([v["task_ce"] for v in values], axis=0),
                            np.sum([v["task_tokens"] for v in values], axis=0),
                        ),
                        "learning_rate": float(values[-1]["learning_rate"]),
                        "grad_norm": float(values[-1]["grad_norm"]),
                        "steps_per_s": len(values) / elapsed,
                        "tokens_per_s": padded_tokens / elapsed,
                        "truncated": self.batches.truncated,
                    }
                    if peak:
                        record["mfu"] = flops / elapsed / (peak * jax.device_count())
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        steps_s=f"{record['steps_per_s']:.2f}",
                        tok_s=f"{record['tokens_per_s']:.0f}",
                        **({"mfu": f"{100 * record['mfu']:.1f}%"} if peak else {}),
                    )
                    window, flops, padded_tokens = [], 0.0, 0.0
                if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                    record.update(self.evaluate())
                if record:
                    self._log(step, record)
                    last = time.perf_counter()
                if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps:
                    self.checkpoints.save(step, self.state, self.batches.grain_iterator, record.get("valid_loss"))
                bar.update(1)
        finally:
            bar.close()
            self.checkpoints.wait()
        self._finish()
        return self.run_dir

    def _log(self, step: int, record: dict) -> None:
        self.metrics.write(step, record)

    def _finish(self) -> None:
        if self.batches.truncated:
            log.warning(
                "%d of %d training rows read by this process were truncated to %d source / %d target tokens",
                self.batches.truncated,
                self.batches.examples,
                self.config.max_source_length,
                self.config.max_target_length,
            )
        params = gather(self.state.params)
        self.checkpoints.close()
        self.metrics.close()
        if jax.process_index() == 0:
            save_trained_model(self.run_dir, self.model_cfg, params, self.config)
        _sync("model_saved")


def per_task_losses(prefix: str, task_ce: np.ndarray, task_tokens: np.ndarray) -> dict[str, float]:
    """{prefix_<task>: token-mean cross entropy} for the tasks that had target tokens."""
    return {
        f"{prefix}_{name}": float(ce) / float(n)
        for name, ce, n in zip(data_lib.TASK_NAMES, task_ce, task_tokens)
        if n > 0
    }


def _data_manifest(data_dir: str):
    """Our prepared data's manifest; None for ChatCell-Instructions data, which has none."""
    from chatcell_jax.singlecell import manifest

    return manifest.load(data_dir) if (Path(data_dir) / "manifest.json").is_file() else None


def gather(tree):
    """Full host (numpy) copies of sharded arrays, also when they span processes."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def save_trained_model(run_dir: Path, model_cfg, params, config: TrainConfig) -> None:
    """RUN/model (with the tokenizer and the data manifest), RUN/manifest.json and the loss curve."""
    from chatcell_jax.model import T5
    from chatcell_jax.model.directory import save_model

    save_model(T5.from_params(model_cfg, params), None, run_dir / "model", tokenizer_dir=config.tokenizer)
    manifest = Path(config.data) / "manifest.json"
    if manifest.is_file():
        shutil.copyfile(manifest, run_dir / "manifest.json")
        shutil.copyfile(manifest, run_dir / "model" / "manifest.json")
    plot_losses(run_dir)


def _progress_bar(total: int, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="training", unit="step", disable=not enabled)


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True, devices: list | None = None) -> Path:
    """Train (or, with `resume`, continue) the run described by `config`; returns the run directory.

    `devices` (default: all) are laid out as `config.mesh`."""
    return Trainer(config, resume=resume, progress=progress, devices=devices).run()
