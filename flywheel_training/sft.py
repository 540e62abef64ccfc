"""Supervised fine-tuning with TRL's ``SFTTrainer``: the round-0 cold start on teacher
trajectories, and the training step of rejection-sampled fine-tuning in later rounds.

Rows are conversations with a ``tools`` column (see ``data.py``); the loss covers assistant
tokens only. Defaults fit the embedded model on CPU; a real Qwen3 path with GPU settings
(``bf16=True``, a smaller learning rate, ``extra`` for any other ``SFTConfig`` field) goes
through the same entry point.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class SFTRunConfig:
    """Knobs of one SFT run. CPU defaults: from random init the usual 2e-5 learns nothing,
    ~2e-3 works; bf16 autocast and gradient checkpointing make CPU steps ~10x slower."""

    learning_rate: float = 2e-3
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int | None = 4096
    lr_scheduler_type: str = "cosine"
    warmup: float = 0.05  # a ratio of total steps in [0, 1), or a number of steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    max_seconds: float | None = None  # a safety cap on wall clock; hitting it is reported (stopped_by_budget)
    logging_steps: int = 5
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    dtype: str = "float32"  # how to load the model ("bfloat16" for a real Qwen3 on GPU)
    plain_loss: bool = True  # False: TRL's chunked log-prob kernel (for large vocabularies on GPU)
    assistant_only_loss: bool = True  # False: also learn to predict the user's and tools' text
    id_augment: int = 0  # renamed-id copies of each conversation (data.randomize_ids): ids must be copied, not recalled
    extra: dict[str, Any] = field(default_factory=dict)  # further SFTConfig fields, passed through


@dataclass
class TrainResult:
    """What a training run reports: enough to plot the loss curve and compare runs."""

    output_dir: str
    steps: int
    seconds: float
    examples: int
    train_tokens: int
    tokens_per_second: float
    losses: list[float]
    final_loss: float | None
    stopped_by_budget: bool
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _budget_callback(max_seconds: float | None) -> Any:
    """A safety cap on a stage's wall clock. Training runs by step count (the learning-rate
    schedule is planned for exactly ``max_steps``), so results never depend on the machine's
    speed; this only stops a stage that runs away, and ``hit`` tells the caller, which
    reports it loudly: a capped stage made a model that depends on the machine's load."""
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.hit = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()  # dataset preparation is not training time

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if max_seconds is not None and time.perf_counter() - self.started > max_seconds:
                self.hit = self.hit or state.global_step < state.max_steps
                control.should_training_stop = True
            return control

    return Budget()


def planned_cosine_schedule(base: type) -> type:
    """``base`` (a TRL trainer class) with the project's cosine schedule over exactly the
    planned steps: linear warm-up from (1/(w+1)), then cosine to zero at the last step."""
    import math

    from torch.optim.lr_scheduler import LambdaLR

    class PlannedCosineSchedule(base):  # type: ignore[misc, valid-type]
        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is not None or self.args.lr_scheduler_type != "cosine":
                return super().create_scheduler(num_training_steps, optimizer)
            warmup = self.args.get_warmup_steps(num_training_steps)

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / (warmup + 1)
                progress = (step - warmup) / max(1, num_training_steps - warmup)
                return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
            return self.lr_scheduler

    return PlannedCosineSchedule


def report_progress(trainer: Any, progress: Callable[[dict[str, Any]], None] | None) -> None:
    """Send ``trainer``'s logs to ``progress`` (the Dagster log) instead of printing them on
    stdout too; without ``progress`` the trainer prints as usual."""
    if progress is None:
        return
    from transformers import PrinterCallback, TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if logs:
                progress({"step": state.global_step, "max_steps": state.max_steps, **logs})

    trainer.add_callback(Progress())
    trainer.remove_callback(PrinterCallback)


def plain_loss_trainer(base: type) -> type:
    """``base`` (an SFT trainer class) with a plain masked cross-entropy.

    TRL computes the loss with a chunked log-prob kernel meant to avoid materialising huge
    logits on GPU; for a 3k vocabulary on CPU it was half of every step. Here the LM head
    runs only on the positions that carry a label (assistant tokens), in one matmul.
    """
    import torch
    import torch.nn.functional as F

    class PlainLossTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs["labels"]
            core = model.get_base_model() if hasattr(model, "get_base_model") else model
            core = getattr(core, "module", core)
            hidden = core.model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                                position_ids=inputs.get("position_ids"), use_cache=False).last_hidden_state
            targets = labels[:, 1:]
            keep = targets != -100
            logits = core.lm_head(hidden[:, :-1][keep]).float()
            count = keep.sum() if num_items_in_batch is None else num_items_in_batch
            loss = F.cross_entropy(logits, targets[keep], reduction="sum") / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            with torch.no_grad():
                mode = "train" if model.training else "eval"
                correct = (logits.argmax(-1) == targets[keep]).float()
                self._metrics[mode]["mean_token_accuracy"].append(correct.mean().item() if correct.numel() else 0.0)
            return (loss, None) if return_outputs else loss

    return PlainLossTrainer


def load_for_training(model_path: str | os.PathLike[str], dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flywheel_training.attention import use_flywheel_attention

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    use_flywheel_attention(model)
    return model, tokenizer


def train_sft(
    model_path: str | os.PathLike[str],
    rows: Sequence[dict[str, Any]] | Any,
    output_dir: str | os.PathLike[str],
    config: SFTRunConfig | None = None,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fine-tune the model at ``model_path`` on conversation ``rows`` (or a ready
    ``datasets.Dataset``) and save the result (model + tokenizer) to ``output_dir``."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from flywheel_training.data import augment_ids, to_dataset, view_rows

    config = config or SFTRunConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer = load_for_training(model_path, config.dtype)
    if hasattr(rows, "column_names"):
        dataset = rows
    else:
        # TRL tokenises every row it is given, and a continuation round's steps draw a few
        # hundred of several thousand (measured: 74 s of tokenising for 600 rows used of 4,782):
        # give it only the rows the planned steps draw, a seeded draw without replacement.
        drawn = (config.max_steps * config.per_device_train_batch_size * config.gradient_accumulation_steps
                 if config.max_steps > 0 else None)
        rows = augment_ids(list(rows), config.id_augment, seed=config.seed)
        dataset = to_dataset(view_rows(rows, tokenizer), seed=config.seed, limit=drawn)
    out = Path(output_dir)
    scratch = tempfile.TemporaryDirectory(prefix="flywheel-sft-")  # trainer files stay out of the checkpoint
    settings: dict[str, Any] = dict(
        output_dir=scratch.name,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        assistant_only_loss=config.assistant_only_loss,
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    settings.update(config.extra)  # extra wins: GPU runs may change any default here
    args = SFTConfig(**settings)
    budget = _budget_callback(config.max_seconds)
    trainer_class = planned_cosine_schedule(plain_loss_trainer(SFTTrainer) if config.plain_loss else SFTTrainer)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[budget])
    report_progress(trainer, progress)
    train_tokens = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]))
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    steps = int(output.global_step)
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    # Tokens actually processed: the epoch's tokens scaled by the share of steps run.
    steps_per_epoch = max(1, -(-len(trainer.train_dataset) // (args.per_device_train_batch_size
                                                              * args.gradient_accumulation_steps)))
    seen_tokens = train_tokens * steps / steps_per_epoch
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    scratch.cleanup()
    return TrainResult(
        output_dir=str(out), steps=steps, seconds=round(seconds, 2), examples=len(trainer.train_dataset),
        train_tokens=train_tokens, tokens_per_second=round(seen_tokens / seconds, 1) if seconds else 0.0,
        losses=losses, final_loss=losses[-1] if losses else None, stopped_by_budget=budget.hit,
        config=asdict(config),
    )
