r"""Train a parameter generator (TFlow) or a static LoRA (ablation) with the receiver frozen.

    python -m tflow.tools.train --task relay --steps 1000
    python -m tflow.tools.train --task relay --steps 1000 --static      # PEFT LoRA, same rank/targets/data/steps
    python -m tflow.tools.train --task relay --arch release \
        --d-model 96 --head-dim 24 --token-dim 128   # the paper's architecture
    python -m tflow.tools.train --task kb --sender-model checkpoints/tiny-qwen3-kb   # senders on a specialist backbone
    accelerate launch --multi_gpu --num_processes 2 \
        -m tflow.tools.train --task relay  # data parallel (GPUs, or CPU processes with gloo)
    python -m tflow.tools.train --model Qwen/Qwen3-4B --task jsonl:gsm8k_train.jsonl --device cuda \
        --gradient-checkpointing --batch-size 8
    python -m tflow.tools.train --shape qwen3-0.6b --device cuda \
        --steps 20 --batch-size 8   # cost at a real shape, random receiver

On CUDA the frozen receiver runs in bf16 and the generator in fp32 (its weights, gradients and
AdamW state; `--generator-dtype bf16` halves them); the factors are cast to the receiver's
dtype where they are applied. A memory estimate (peaks measured at batch 1 and 2, extrapolated
to the batch) is printed before the first step and a configuration whose estimate exceeds the
free memory is refused with it; the peak memory and seconds per step are printed at the end.

Objective: teacher-forced cross-entropy of the reference answer under the receiver,
which sees only the question while the fused perturbation generated from the senders'
hidden states is applied (gradients flow through the LoRA factors into the generator,
layer aggregator and fusion gate). The static ablation trains one query-independent
PEFT LoRA on the same data. Progress via tqdm, periodic accuracy on a dev set drawn from
the *train* split with another seed (the test split is never used here), resumable
from the output directory (safetensors + JSON only, no pickles).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .. import lora, tasks
from ..agents import (
    Backbone,
    GenerationSettings,
    Roles,
    build_prompt,
    generate,
    load_backbone,
    pad_with_labels,
    resolve_device,
    resolve_dtype,
    sender_prompts,
    sender_states,
)
from ..checkpoints import ADAPTER_WEIGHTS, GENERATOR_WEIGHTS, TRAIN_STATE, TRAINING_RECORD
from ..errors import user_errors
from ..generators import ARCHES, GeneratorConfig, ReleaseConfig, build_generator, stack_conditions
from ..peft_io import target_regex
from ..pipeline import Pipeline, normalise_contexts, sender_shape
from . import train_memory
from .flags import add_config_flags
from .schedule import cosine_lr
from .shapes import get_shape, shape_backbone
from .train_memory import MemoryEstimate


@dataclass
class TrainConfig:
    task: str = "relay"
    model: str = "tiny"
    sender_model: str = ""  # the senders' backbone (default: the receiver's, --model)
    out: str = ""  # default: checkpoints/generators/<task> or checkpoints/static/<task>
    static: bool = False
    knows: bool = False  # with --static and a kb task: a specialist (group B's facts learned too)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.0
    seed: int = 0
    eval_every: int = 250
    eval_size: int = 100
    resume: bool = False
    init: str = ""  # start from the weights saved in this directory (fine-tune: fresh optimizer and schedule)
    threads: int = 2
    device: str = "auto"
    dtype: str = "auto"  # the frozen receiver's: bf16 on CUDA, fp32 on CPU
    generator_dtype: str = "fp32"  # the generator's weights and compute (AdamW state follows them)
    gradient_checkpointing: bool = False  # recompute the receiver's layers in backward (activations dominate at 4B)
    shape: str = ""  # train against a random receiver of this published shape (qwen3-0.6b, ...): cost only
    layers: int = 0  # with --shape: the first N layers (0: all)
    hash_split: bool = False  # jsonl: train on the 4/5 of the file outside the test hash bucket
    skip_bad_rows: bool = False  # jsonl: skip malformed rows instead of failing
    dataset_path: str = ""  # a benchmark's local copy in the hub's format (empty: the hub)
    arch: str = "grid"  # generator architecture: grid (ours) or release (the paper's)
    generator: GeneratorConfig | ReleaseConfig = field(
        default_factory=GeneratorConfig
    )  # the arch's; rank and alpha also shape --static

    HELP = {  # not annotated: a class attribute, not a field
        "task": "what to train on: note (a real model's), relay, split, arith, kb, kb@N, kb-words@N, jsonl:PATH, "
                "a benchmark with a train split (gsm8k) or rg:NAME",
        "model": "the frozen receiver: tiny, smollm2-135m-instruct (fetched once), "
                 "a GGUF file, a directory or a hub name",
        "sender_model": "the senders' backbone (default: the receiver's); "
                        "a PEFT adapter directory on the receiver's base shares its weights",
        "out": "output directory (default: checkpoints/generators/<task> or checkpoints/static/<task>)",
        "static": "train one query-independent PEFT LoRA instead (the ablation), same rank, targets, data and steps",
        "knows": "with --static and a kb task: train a specialist instead, an adapter that also learns the held-out "
        "people's facts (group B), for --sender-model; never the static ablation",
        "steps": "optimizer steps",
        "batch_size": "examples per step (split across processes)",
        "lr": "peak learning rate (AdamW)",
        "warmup": "linear warm-up steps before the cosine decay",
        "weight_decay": "AdamW weight decay",
        "seed": "seed of the data stream and initialisation",
        "eval_every": "steps between dev evaluations (each writes a checkpoint)",
        "eval_size": "dev examples (drawn from the train split)",
        "resume": "continue from the checkpoint and optimizer state in the output directory",
        "init": "start from the weights saved in this directory "
                "(a fine-tune, e.g. on another task: fresh optimizer and schedule)",
        "threads": "CPU threads for torch",
        "device": "auto, cpu, cuda, cuda:N or mps",
        "dtype": "the frozen receiver's precision: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16",
        "generator_dtype": "the generator's weights, gradients and AdamW state: fp32 or bf16",
        "gradient_checkpointing": "recompute the receiver's layers in backward "
                                  "(less activation memory, ~1/3 more compute)",
        "shape": "train against a random receiver of this published shape (qwen3-0.6b, qwen3-4b, qwen3-8b): cost only",
        "layers": "with --shape: only the first N layers (0: all)",
        "hash_split": "jsonl: train on the 4/5 of the file outside the test hash bucket",
        "skip_bad_rows": "jsonl: skip malformed rows instead of failing",
        "dataset_path": "a benchmark's local copy in the hub's format (a file, or a folder with train.jsonl)",
        "arch": "generator architecture: grid (ours) or release (the paper's)",
    }

    def output_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        kind = "specialists" if self.knows else "static" if self.static else "generators"
        return Path("checkpoints") / kind / tasks.checkpoint_name(self.task)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.warmup < 0 or self.layers < 0 or not self.lr > 0:
            raise ValueError("--warmup and --layers must be >= 0 and --lr positive")
        if self.knows and not (self.static and tasks.is_specialist(self.task)):
            raise ValueError(
                "--knows trains a specialist adapter: it needs --static and a kb task (kb, kb@N or kb-words@N)"
            )
        if self.shape and self.static:
            raise ValueError("--shape measures generator training; --static needs real weights (--model)")
        weights = ADAPTER_WEIGHTS if self.static else GENERATOR_WEIGHTS
        if self.init and not (Path(self.init) / weights).is_file():
            raise ValueError(f"--init {self.init}: no {weights} there")


def receiver_batch(
    backbone: Backbone, examples: list[tasks.Example], roles: Roles
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Receiver prompts (question only) + the worked answer it should give; loss only on the answer."""
    tok, rows = backbone.tokenizer, []
    for ex in examples:
        prompt = build_prompt(backbone, roles.receiver, ex.question).input_ids
        rows.append((prompt + tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], len(prompt)))
    return pad_with_labels(rows, tok.pad_token_id, backbone.device)


def answer_loss(
    causal_lm: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of the labelled (answer) tokens, the LM head run on those positions only:
    the same loss as `model(..., labels=labels).loss`, without a 49k-row head over every prompt token."""
    hidden = causal_lm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    where = targets != -100
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][where])
    return torch.nn.functional.cross_entropy(logits.float(), targets[where])


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    # Hand-written because torch's optimizer checkpoints are pickles; AdamW's state is flat tensors.
    tensors = {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    save_file(tensors, str(path))


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    sd = opt.state_dict()
    for key, v in load_file(str(path)).items():
        i, k = key.split(".", 1)
        sd["state"].setdefault(int(i), {})[k] = v
    opt.load_state_dict(sd)


class _Objective:
    """What is trained (generator or static PEFT LoRA) and its loss on a batch."""

    def __init__(self, cfg: TrainConfig, backbone: Backbone, roles: Roles, senders: Backbone | None = None):
        self.cfg, self.backbone, self.roles = cfg, backbone, roles
        self.senders = senders or backbone
        self.spec = backbone.targets
        torch.manual_seed(cfg.seed)
        if cfg.static:
            peft_cfg = LoraConfig(r=cfg.generator.rank, lora_alpha=cfg.generator.alpha, lora_dropout=0.0,
                                  target_modules=target_regex(self.spec))
            self.module = get_peft_model(backbone.model, peft_cfg)
            # the base as the user names it (a packaged model's name), not the cache directory it was loaded from
            self.module.peft_config["default"].base_model_name_or_path = backbone.name
        else:
            dtype = resolve_dtype(cfg.generator_dtype, backbone.device)
            self.module = build_generator(cfg.arch, cfg.generator, self.spec, backbone.name,
                                          sender=sender_shape(self.senders)).to(backbone.device, dtype)
            self.pipe = Pipeline(backbone, self.module, roles, sender_backbone=self.senders)
        if cfg.gradient_checkpointing:
            # non-reentrant, so that gradients reach the LoRA factors of a frozen model; the
            # context_fn lets the recomputation see the request's perturbation
            backbone.model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False, "context_fn": lora.checkpoint_context})

    def parameters(self):
        return [p for p in self.module.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def loss(self, module: torch.nn.Module, batch: list[tasks.Example]) -> Iterator[torch.Tensor]:
        """The batch's loss. Backward must run inside the block: the perturbation is applied
        there, and gradient checkpointing recomputes the receiver's layers in backward."""
        ids, mask, labels = receiver_batch(self.backbone, batch, self.roles)
        model = self.backbone.model
        # HF checkpoints only in train mode (Qwen3 / Llama configs have attention dropout 0, so nothing else changes)
        model.train(self.cfg.gradient_checkpointing)
        try:
            if self.cfg.static:
                yield answer_loss(module.get_base_model(), ids, mask, labels)
                return
            senders = self.roles.senders
            contexts = [normalise_contexts(ex.contexts, len(senders)) for ex in batch]
            states, _ = sender_states(self.senders,
                                      sender_prompts(self.senders, senders, [ex.question for ex in batch], contexts),
                                      self.module.config.condition,  # self.module: unwrapped (not DDP)
                                      self.module.reads_readout)
            pert = module(*stack_conditions(states, len(senders)), tuple(a.role for a in senders))
            with lora.apply(model, pert, merge=False):
                yield answer_loss(model, ids, mask, labels)
        finally:
            model.eval()

    def accuracy(self, dev: list[tasks.Example], out_dir: Path) -> float:
        self.module.eval()
        if self.cfg.static:  # the adapter is injected into the receiver: plain generation is "static"
            prompts = [build_prompt(self.backbone, self.roles.receiver, e.question).input_ids for e in dev]
            answers = [
                g.text for g in generate(self.backbone, prompts, tasks.budgets(self.cfg.task)[0], GenerationSettings())
            ]
        else:
            results = self.pipe.run_batch([e.question for e in dev], "tflow", [e.contexts for e in dev],
                                          max_new_tokens=tasks.budgets(self.cfg.task)[0])
            self.pipe.clear_cache()
            answers = [r.answer for r in results]
        self.module.train()
        return sum(tasks.grade(dev, answers)) / len(dev)

    def save(self, out_dir: Path, meta: dict) -> None:
        if self.cfg.static:
            self.module.save_pretrained(out_dir)
            (out_dir / TRAINING_RECORD).write_text(json.dumps(meta, indent=2))
        else:
            self.module.meta = meta
            self.module.save_pretrained(out_dir)

    def load_weights(self, out_dir: Path) -> None:
        if self.cfg.static:
            set_peft_model_state_dict(self.module, load_file(str(out_dir / ADAPTER_WEIGHTS)))
        else:
            self.module.load_state_dict(load_file(str(out_dir / GENERATOR_WEIGHTS)))


def _init_weights(obj: _Objective, directory: Path) -> None:
    if obj.cfg.static:
        obj.load_weights(directory)
        return
    saved, here = load_file(str(directory / GENERATOR_WEIGHTS)), obj.module.state_dict()
    for name, w in saved.items():  # a generator without the read-out, fine-tuned with it: the new slice starts
        if name.endswith("aggregator.logits") and name in here and here[name].numel() == w.numel() + 1:  # at the mean
            saved[name] = torch.cat([w, w.mean().reshape(1)])
    for name in sorted(set(saved) | set(here)):
        there, mine = (tuple(d[name].shape) if name in d else "missing" for d in (saved, here))
        if there != mine:
            raise ValueError(f"--init {directory}: its weights do not fit this configuration ({name}: {there} there, "
                             f"{mine} here); pass the generator flags it was trained with")
    obj.module.load_state_dict(saved)  # the file read once, for the check and the weights


def _receiver(cfg: TrainConfig, device: str | torch.device) -> Backbone:
    dtype = None if cfg.dtype == "auto" else cfg.dtype
    if cfg.shape:
        return shape_backbone(get_shape(cfg.shape), cfg.model, cfg.layers or None, device, dtype, cfg.seed)
    return load_backbone(cfg.model, device=device, dtype=dtype)


def check_fits(obj: _Objective, cfg: TrainConfig, examples: list[tasks.Example]) -> MemoryEstimate | None:
    """Refuse, before the first step, a configuration whose estimate exceeds the free memory. The
    estimate is measured: a forward + backward at batch 1 and 2 (`train_memory.probe`), extrapolated."""
    if cfg.static:
        return None
    ids, _, labels = receiver_batch(obj.backbone, examples, obj.roles)
    per_example = int((labels != -100).sum()) / len(examples)  # the LM head runs on answer tokens only

    def analytic(n: int) -> MemoryEstimate:
        return train_memory.estimate(obj.backbone, obj.module, n, ids.shape[1], cfg.gradient_checkpointing,
                                     len(obj.roles.senders), obj.senders, logit_tokens=round(per_example * n))

    def step(n: int) -> None:
        try:
            with obj.loss(obj.module, examples[:n]) as loss:
                loss.backward()
        except torch.OutOfMemoryError as e:
            raise ValueError(f"one training step at batch {n} does not fit on {obj.backbone.device} ({e}); "
                             "try --gradient-checkpointing or a smaller generator (--d-model)") from None
        obj.module.zero_grad(set_to_none=True)

    est = analytic(cfg.batch_size)
    sizes = (1, 2) if len(examples) >= 2 else (1, 1)
    est.probed = train_memory.probe(step, lambda n: analytic(n).activation_bytes, obj.backbone.device, sizes)
    free = lora.free_bytes(obj.backbone.device)  # None where it cannot be read (then nothing is refused)
    if free is not None and est.total - train_memory.in_use_bytes(obj.backbone.device) > free:
        advice = "" if cfg.gradient_checkpointing else "--gradient-checkpointing, "
        raise ValueError(
            f"this configuration needs {est.describe()}, but only {train_memory.gib(free)} are free on "
            f"{obj.backbone.device}: try {advice}a smaller --batch-size or a smaller generator (--d-model)"
        )
    return est


def train(cfg: TrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    # cpu=True is what makes accelerate use gloo across CPU processes (MULTI_CPU).
    accel = Accelerator(cpu=resolve_device(cfg.device).type == "cpu")
    draw_check = tasks.stream(cfg.task, seed=cfg.seed, hash_split=cfg.hash_split, skip_bad_rows=cfg.skip_bad_rows,
                              held_out=cfg.knows, dataset_path=cfg.dataset_path)  # data errors first
    backbone = _receiver(cfg, accel.device if cfg.device == "auto" else cfg.device)
    roles = Roles()
    senders = None
    if cfg.sender_model and cfg.sender_model != cfg.model and not cfg.static:
        senders = load_backbone(cfg.sender_model, device=backbone.device, dtype=backbone.dtype, share_with=backbone)
    obj = _Objective(cfg, backbone, roles, senders)
    est = check_fits(obj, cfg, [draw_check() for _ in range(cfg.batch_size)])
    if est is not None and accel.is_main_process:
        tqdm.write(f"memory estimate: {est.describe()}")
    out_dir = cfg.output_dir()
    opt = torch.optim.AdamW(obj.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_step, state_path = 0, out_dir / TRAIN_STATE
    if cfg.resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        obj.load_weights(out_dir)
        _load_optimizer(opt, out_dir / "optimizer.safetensors")
        start_step = int(state["step"])
    elif cfg.init:
        _init_weights(obj, Path(cfg.init))
    module, opt = accel.prepare(obj.module, opt)
    rank_seed = cfg.seed * 1000 + accel.process_index
    draw = tasks.stream(cfg.task, seed=rank_seed + 7919 * start_step, hash_split=cfg.hash_split,
                        skip_bad_rows=cfg.skip_bad_rows, held_out=cfg.knows, dataset_path=cfg.dataset_path)
    # a specialist is checked on what it must know and no generator may see: group B's facts
    dev_split = "test" if cfg.knows else "train"
    dev = tasks.examples(cfg.task, dev_split, cfg.eval_size, seed=cfg.seed + 10_000, hash_split=cfg.hash_split,
                         skip_bad_rows=cfg.skip_bad_rows, dataset_path=cfg.dataset_path)

    per_process = max(1, cfg.batch_size // accel.num_processes)
    history, ema, t0, step_seconds = [], None, time.time(), []
    train_memory.reset_peak(backbone.device)
    bar = tqdm(range(start_step, cfg.steps),
               desc=f"train {'specialist' if cfg.knows else 'static' if cfg.static else 'tflow'}:{cfg.task}",
               disable=not accel.is_main_process, mininterval=5)
    module.train()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.steps, cfg.warmup, cfg.lr)
        t_step = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with obj.loss(module, [draw() for _ in range(per_process)]) as loss:
            accel.backward(loss)
        accel.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()  # .item() syncs: the step is done
        step_seconds.append(time.perf_counter() - t_step)
        bar.set_postfix(loss=f"{ema:.4f}", peak=train_memory.gib(train_memory.peak_bytes(backbone.device)))
        last = step + 1 == cfg.steps
        if accel.is_main_process and ((step + 1) % cfg.eval_every == 0 or last):
            acc = obj.accuracy(dev, out_dir)
            history.append({"step": step + 1, "loss_ema": round(ema, 5), "dev_accuracy": acc})
            tqdm.write(f"step {step + 1}: loss {ema:.4f}, dev accuracy {acc:.3f}")
            meta = {"task": cfg.task, "kind": "specialist" if cfg.knows else "static" if cfg.static else "tflow",
                    "steps": step + 1, "seed": cfg.seed, "dev_accuracy": acc,
                    "dev_set": f"{cfg.eval_size} {dev_split}-split examples, seed {cfg.seed + 10_000}",
                    "seconds": round(time.time() - t0, 1), "processes": accel.num_processes,
                    "device": str(backbone.device), "dtype": str(backbone.dtype), "config": asdict(cfg),
                    "history": history}
            obj.module = accel.unwrap_model(module)
            obj.save(out_dir, meta)
            _save_optimizer(opt, out_dir / "optimizer.safetensors")
            state_path.write_text(json.dumps({"step": step + 1}))
        accel.wait_for_everyone()
    timed = step_seconds[1:] or step_seconds  # the first step pays one-off set-up
    return {"history": history, "out": str(out_dir), "seconds_per_step": sum(timed) / len(timed),
            "peak_memory_bytes": train_memory.peak_bytes(backbone.device),
            "estimated_memory_bytes": est.total if est is not None else None, "device": str(backbone.device)}


@user_errors
def main(argv: list[str] | None = None) -> None:
    # --arch decides which size flags exist (each architecture's config fields), so it is read first.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--arch", choices=sorted(ARCHES), default="grid", help=TrainConfig.HELP["arch"])
    config_class = ARCHES[pre.parse_known_args(argv)[0].arch].config_class
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_flags(parser, TrainConfig(), skip=("generator",))
    add_config_flags(parser, config_class())
    args = vars(parser.parse_args(argv))
    generator = config_class(**{f.name: args.pop(f.name) for f in fields(config_class)})
    result = train(TrainConfig(**args, generator=generator))
    what = "peak memory allocated" if result["device"].startswith("cuda") else "peak resident memory of the process"
    print(
        f"{result['seconds_per_step']:.3f} s/step, {what} {train_memory.gib(result['peak_memory_bytes'])} on "
        f"{result['device']}"
        + (
            f" (estimated {train_memory.gib(result['estimated_memory_bytes'])})"
            if result["estimated_memory_bytes"]
            else ""
        )
    )
    print(json.dumps({**(result["history"][-1] if result["history"] else {}),
                      **{k: result[k] for k in ("seconds_per_step", "peak_memory_bytes", "estimated_memory_bytes")}}))


if __name__ == "__main__":
    main()
