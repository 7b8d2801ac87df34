"""The training loop of ``hific train``: setup, then one plain loop (schedule, forward, losses, D and G
updates, log, validate, checkpoint). See hificli/train/__init__.py for the recipe."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hificli.errors import HificError, ModelMismatchError, OutputExistsError
from hificli.models.config import PRESETS, ArchConfig
from hificli.train import data as D
from hificli.train import distributed as dist
from hificli.train import losses as L
from hificli.train import state as S
from hificli.train import variable_rate as VR
from hificli.train.context import CONTEXT_LR_SCALE, context_config
from hificli.train.options import RUNTIME_OPTIONS, TrainOptions
from hificli.train.relative import RelativePerceptualWeights
from hificli.train.report import JsonlLog, ProgressLine
from hificli.train.schedule import make_schedule

#: Order of the per-step metrics accumulated between log lines.
METRICS = ("loss", "bpp", "q_bpp", "bpp_y", "bpp_z", "distortion", "perceptual", "rate_penalty", "d_loss", "g_loss")


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports back."""

    run_dir: Path
    step: int
    interrupted: bool
    model_id: str
    last: dict[str, Any] | None = None
    val: dict[str, Any] | None = None


class _StopFlag:
    """SIGINT/SIGTERM set a flag checked between steps (a second Ctrl-C interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# -- setup helpers ---------------------------------------------------------------------------------


def merge_resume(options: TrainOptions, recorded: dict[str, Any], explicit: set[str]) -> TrainOptions:
    """The recorded options of a run, with the runtime options the user gave explicitly on resume.

    Changing anything that alters what is computed (stage, regime, batch, crop, schedule...) is refused.
    """
    merged = TrainOptions.from_dict(recorded)
    given = options.to_dict()
    for name in sorted(explicit):
        if name in ("out", "resume"):
            continue
        if name in RUNTIME_OPTIONS:
            setattr(merged, name, getattr(options, name))
        elif given.get(name) != recorded.get(name):
            flag = "--" + name.replace("_", "-")
            raise HificError(
                f"cannot change {flag} when resuming (the run used {recorded.get(name)!r})",
                "start a new run with --init RUN_DIR to train from these weights with new settings",
            )
    return merged


def read_init(path: str) -> tuple[ArchConfig, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(architecture, network tensors, discriminator tensors or None) of ``--init``: a run directory, a
    checkpoint (ours or the port's) or an inference weights file."""
    from hificli.checkpoint import read_port_checkpoint
    from hificli.weights import is_weights_file, load_weights

    source = Path(path)
    if source.is_dir():
        source = source / S.CHECKPOINT_NAME
    if is_weights_file(source):
        network, _, _, info = load_weights(source)
        state = network.inference_state_dict()
        if network.variable_rate:
            state["RateSteps.log_step"] = network.RateSteps.log_step.detach().clone()
        return info.config, state, None
    ckpt = read_port_checkpoint(source)
    return ckpt.config, ckpt.state_dict, ckpt.discriminator_state


def widen_init(
    init: tuple[ArchConfig, dict[str, torch.Tensor], dict[str, torch.Tensor] | None], widths: tuple[int, int, int],
    seed: int,
) -> tuple[ArchConfig, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """``read_init``'s result with the GDN transforms widened (hificli.models.widen); a discriminator
    depends on the latents only and is kept as it is."""
    from hificli.models.widen import widen_state

    try:
        config, state = widen_state(init[1], init[0], widths, seed=seed)
    except ValueError as exc:
        raise HificError(f"--widen: {exc}") from None
    return config, state, init[2]


def resolve_arch(options: TrainOptions, init_config: ArchConfig | None, explicit: set[str]) -> ArchConfig:
    """``--arch`` preset, or the init checkpoint's architecture (which an explicit --arch must match)."""
    if init_config is None:
        try:
            return PRESETS[options.arch]
        except KeyError:
            raise HificError(f"unknown --arch {options.arch!r}; choose from {', '.join(PRESETS)}") from None
    if "arch" in explicit and PRESETS.get(options.arch) != init_config:
        raise ModelMismatchError(f"--arch {options.arch} does not match the --init checkpoint's architecture")
    return init_config


def schedule_reference_k_m(options: TrainOptions) -> float:
    """The lambda at which new rate levels start with unit steps: ``--k-m``, or the regime's k_M."""
    if options.k_m is not None:
        return options.k_m
    return make_schedule(regime=options.regime, stage=options.stage, steps=options.steps).k_m


def prepare_run_dir(run_dir: Path, *, resume: bool, force: bool, main_proc: bool = True) -> None:
    """Refuse to start over an existing run unless ``force`` (which removes its checkpoint, weights and
    log); create the directory of a new run."""
    if not resume and (run_dir / S.CHECKPOINT_NAME).exists() and not force:
        raise OutputExistsError(
            f"{run_dir} already holds a training run", f"continue it with --resume {run_dir}, or pass --force"
        )
    if main_proc and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        if force:
            for name in (S.CHECKPOINT_NAME, S.WEIGHTS_NAME, S.LOG_NAME):
                (run_dir / name).unlink(missing_ok=True)


def arch_name(config: ArchConfig) -> str:
    return next((name for name, c in PRESETS.items() if c == config), "custom")


def cpu_threads(layout: dist.Layout, requested: int | None) -> int:
    """Torch threads of one process: ``--threads``, else $OMP_NUM_THREADS, else the usable CPUs shared
    among the processes of this node."""
    if requested:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, layout.local_world))


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 where supported (else fp16 + GradScaler) on CUDA; CPU runs in fp32 unless
    ``--amp bf16`` is asked for explicitly (useful only on CPUs with native bf16)."""
    if device.type != "cuda":
        if mode == "fp16":
            raise HificError("--amp fp16 needs CUDA", "use --amp off (or auto, or bf16) on CPU")
        return torch.bfloat16 if mode == "bf16" else None
    if mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _optimizers(model: torch.nn.Module, disc: torch.nn.Module | None, lr: float):
    """Adam for E+G+hyper nets (rate steps in their own group, ``lr_scale`` faster), a second Adam for
    the hyperlatent density (as the port), one for D."""
    density = list(model.Hyperprior.hyperlatent_likelihood.parameters())
    rate = list(model.RateSteps.parameters()) if getattr(model, "variable_rate", False) else []
    context = list(model.Context.parameters()) if getattr(model, "has_context", False) else []
    ids = {id(p) for p in density + rate + context}
    main = [p for p in model.parameters() if id(p) not in ids]
    kw: dict[str, Any] = {"foreach": True}
    groups: list[dict[str, Any]] = [{"params": main}]
    if rate:
        groups.append({"params": rate, "lr_scale": VR.RATE_STEP_LR_SCALE})
    if context:
        groups.append({"params": context, "lr_scale": CONTEXT_LR_SCALE})
    opt_main = torch.optim.Adam(groups, lr=lr, **kw)
    main = main + rate + context
    opt_density = torch.optim.Adam(density, lr=lr, **kw)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, **kw) if disc is not None else None
    return main, opt_main, opt_density, opt_d


def freeze_prior(model: torch.nn.Module) -> None:
    """Fix everything that decides how bits are parsed (hyperprior with its density, context, rate steps):
    only the encoder and the decoder train. The run's own weights file rebuilds its integer tables from
    the (float16-rounded) density, which can differ from --init's in the last units; shipping the result
    with --init's tables is ``scripts/ship_perceptual.py``'s job."""
    for name in ("Hyperprior", "Context", "RateSteps"):
        part = getattr(model, name, None)
        if part is not None:
            part.requires_grad_(False)


def _perceptual_window(
    x_hat: torch.Tensor, x: torch.Tensor, step: int, rank: int, options: TrainOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x_hat, x) pair the perceptual loss sees: whole crops, or with ``--perceptual-crop P`` the same
    random P x P window of both (a cheaper estimate of the spatial mean; deterministic per step)."""
    p = options.perceptual_crop
    if not p or p >= x.shape[-1]:
        return x_hat, x
    top, left = np.random.default_rng([options.seed, 3, step, rank]).integers(0, x.shape[-1] - p + 1, size=2)
    window = (..., slice(int(top), int(top) + p), slice(int(left), int(left) + p))
    return x_hat[window], x[window]


def _to_device_batch(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = batch.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# -- the run -----------------------------------------------------------------------------------------


def train(
    options: TrainOptions,
    *,
    resume: bool = False,
    explicit: set[str] | None = None,
    force: bool = False,
    quiet: bool = False,
    warn: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run (or resume) a training run described by ``options``; see the package docstring."""
    from hificli.checkpoint import load_strict
    from hificli.models.discriminator import Discriminator
    from hificli.models.hific import HificModel
    from hificli.perceptual import load_perceptual, resolve_kind

    explicit = explicit or set()
    run_dir = Path(options.out)
    resumed: dict[str, Any] | None = None
    if resume:
        resumed = S.read_run_checkpoint(run_dir)
    if (resumed["args"]["hific_train"]["stage"] if resumed else options.stage) == "realism":
        from hificli.train.realism import train_realism

        del resumed
        return train_realism(options, resume=resume, explicit=explicit, force=force, quiet=quiet, warn=warn)
    if resume:
        options = merge_resume(options, resumed["args"]["hific_train"], explicit)
        options.out = str(run_dir)
    try:
        options.validate()
    except ValueError as exc:
        raise HificError(f"invalid training options: {exc}") from None

    layout = dist.setup(options.device)
    main_proc = layout.is_main
    say = warn if (warn is not None and main_proc) else (lambda m: None)
    progress = ProgressLine(options.steps, 0, enabled=main_proc and not quiet)
    if layout.device.type == "cpu":
        torch.set_num_threads(cpu_threads(layout, options.threads))
    else:
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels

    prepare_run_dir(run_dir, resume=resume, force=force, main_proc=main_proc)
    dist.barrier(layout)

    # architecture and weights
    init = None
    new_rate_levels = new_context = False
    if resumed is not None:
        config = ArchConfig.from_json(resumed["args"]["hific_arch"])
    else:
        if options.init:
            init = read_init(options.init)
            if options.widen:
                init = widen_init(init, options.widen, options.seed)
        config = resolve_arch(options, init[0] if init else None, explicit)
        config, new_rate_levels = VR.rate_config(config, options.rate_lambdas)
        config, new_context = context_config(config, options.context, options.context_channels)
        options.arch = arch_name(config)
    gan = options.stage == "gan"
    if gan and init is None and resumed is None:
        say("--stage gan without --init: the paper warm-starts the GAN stage from a base run")

    random.seed(options.seed + layout.rank)
    np.random.seed(options.seed + layout.rank)
    torch.manual_seed(options.seed)  # identical initial weights on every process
    model = HificModel(config)
    disc = Discriminator(config, input_gain=options.d_gain, high_pass=options.d_high_pass) if gan else None
    if resumed is None and new_rate_levels:
        model.RateSteps.initialize(options.rate_lambdas, reference=schedule_reference_k_m(options))
    if init is not None:
        fresh = ("RateSteps.",) * new_rate_levels + ("Context.",) * new_context
        load_strict(model, init[1], ignore_prefixes=fresh)
        if disc is not None and init[2]:
            load_strict(disc, init[2], ignore_prefixes=(), ignore_patterns=())
    del init
    if options.freeze_prior:
        freeze_prior(model)
    if layout.rank:
        torch.manual_seed(options.seed + layout.rank)

    perceptual_kind = "none" if options.perceptual == "none" else resolve_kind(options.perceptual)
    if resumed is not None:
        perceptual_kind = resumed["args"].get("perceptual", perceptual_kind)
    perceptual = load_perceptual(perceptual_kind) if perceptual_kind != "none" else None
    relative = RelativePerceptualWeights(config.rate_levels) if options.perceptual_relative else None

    # recorded options rebuild the same schedule; an extended --steps moves the step-derived defaults
    schedule = make_schedule(
        regime=options.regime, stage=options.stage, steps=options.steps, lr=options.lr,
        target_bpp=options.target_bpp, lambda_a=options.lambda_a, lambda_b=options.lambda_b,
        k_m=options.k_m, k_p=options.k_p, beta=options.beta, warmup_steps=options.warmup_steps,
        lr_drop_step=options.lr_drop_step, lr_drop_factor=options.lr_drop_factor,
    )

    device = layout.device
    memory_format = torch.channels_last if options.channels_last else torch.preserve_format
    model.to(device=device, memory_format=memory_format)
    if disc is not None:
        disc.to(device=device, memory_format=memory_format)
    if perceptual is not None:
        perceptual.to(device=device, memory_format=memory_format)
    main_params, opt_main, opt_density, opt_d = _optimizers(model, disc, schedule.lr)
    amp_dtype = _amp_dtype(options.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    start = 0
    if resumed is not None:
        net_state = {k: v for k, v in resumed["model_state_dict"].items() if not k.startswith(S.DISCRIMINATOR_PREFIX)}
        load_strict(model, net_state, ignore_prefixes=())
        opt_main.load_state_dict(resumed["compression_optimizer_state_dict"])
        opt_density.load_state_dict(resumed["hyperprior_optimizer_state_dict"])
        if disc is not None:
            prefix = S.DISCRIMINATOR_PREFIX
            d_state = {k[len(prefix):]: v for k, v in resumed["model_state_dict"].items() if k.startswith(prefix)}
            load_strict(disc, d_state, ignore_prefixes=(), ignore_patterns=())
            opt_d.load_state_dict(resumed["discriminator_optimizer_state_dict"])
        if scaler is not None and resumed.get("grad_scaler"):
            scaler.load_state_dict(resumed["grad_scaler"])
        start = int(resumed["steps"])

    # data
    files = D.find_images(options.data_dir)
    if options.val:
        train_files, val_files = files, D.find_images(options.val)
    else:
        train_files, val_files = D.split_validation(files, options.val_split)
    pool = D.ImagePool(train_files, cache_mb=options.cache_mb, warn=say)
    dataset = D.CropDataset(pool, D.CropSpec(options.crop, *options.rescale, options.hflip), options.seed)
    sampler = D.StepBatchSampler(
        start, options.steps, options.batch_size, world=layout.world, rank=layout.rank, fixed=options.overfit
    )
    workers = D.default_workers() if options.workers is None else options.workers
    loader = D.make_loader(dataset, sampler, workers=workers, pin_memory=device.type == "cuda")
    val_images = (
        D.load_validation(val_files, max_side=options.val_crop, max_images=options.val_images, warn=say)
        if main_proc and val_files else []
    )

    if layout.distributed:
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        # buffers (spectral-norm u/v) evolve identically on every process: sync them at start only
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else None
        kw = {no_sync or "broadcast_buffers": False}
        ids = [device.index] if device.type == "cuda" else None
        net = DDP(model, device_ids=ids, **kw)
        d_net = DDP(disc, device_ids=ids, **kw) if disc is not None else None
    else:
        net, d_net = model, disc

    model_id = options.model_id()
    log = JsonlLog(run_dir / S.LOG_NAME) if main_proc else None
    if main_proc:
        (run_dir / "options.json").write_text(json.dumps(options.to_dict(), indent=2) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        threads = torch.get_num_threads() if device.type == "cpu" else 0
        progress.message(
            f"hific train: {options.stage} stage, regime {options.regime}, arch {options.arch} "
            f"({n_params / 1e6:.2f} M params), {device}{f' x{threads} threads' if threads else ''}"
            f"{f', {layout.world} processes' if layout.distributed else ''}; {len(pool)} training images"
            f"{' (in memory)' if pool.in_memory else ''}, {len(val_images)} validation; "
            f"perceptual {perceptual_kind}; step {start} -> {options.steps}"
        )

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def step_opt(opt: torch.optim.Optimizer) -> None:
        if scaler is not None:
            scaler.step(opt)
        else:
            opt.step()

    def save(step: int) -> None:
        if not options.checkpoints:
            return
        rng = dist.gather_objects(S.capture_rng(device), layout)
        if not main_proc:
            return
        net_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if disc is not None:
            net_state.update({S.DISCRIMINATOR_PREFIX + k: v.detach().cpu() for k, v in disc.state_dict().items()})
        ckpt = {
            "format": S.CHECKPOINT_FORMAT,
            "format_version": S.CHECKPOINT_VERSION,
            "model_state_dict": net_state,
            "compression_optimizer_state_dict": opt_main.state_dict(),
            "hyperprior_optimizer_state_dict": opt_density.state_dict(),
            "steps": step,
            "epoch": step * options.batch_size * layout.world // len(pool),
            "args": S.port_args(config, options.to_dict(), schedule.to_dict(), perceptual_kind),
            "rng": rng,
            "world": layout.world,
        }
        if opt_d is not None:
            ckpt["discriminator_optimizer_state_dict"] = opt_d.state_dict()
        if scaler is not None:
            ckpt["grad_scaler"] = scaler.state_dict()
        S.atomic_torch_save(ckpt, run_dir / S.CHECKPOINT_NAME)
        save_weights(step)

    def save_weights(step: int) -> None:
        from hificli.weights import save_inference_weights

        meta = {
            "source": "hific-train", "stage": options.stage, "regime": options.regime, "arch": options.arch,
            "steps": step, "perceptual": perceptual_kind, "target_bpp": schedule.target_bpp,
            "crop": options.crop, "batch_size": options.batch_size * layout.world,
        }
        was_training = model.training
        target = model if device.type == "cpu" else copy.deepcopy(model).cpu()
        target.eval()
        try:
            save_inference_weights(target, run_dir / S.WEIGHTS_NAME, model_id=model_id, meta=meta)
        finally:
            model.train(was_training)

    def _validate_pass(position: float | None, out_dir: Path | None) -> dict[str, Any]:
        """Mean PSNR / bpp (and perceptual distance) of the validation images at one rate level
        position (None: fixed-rate model), writing the reconstructions into ``out_dir`` if given."""
        from PIL import Image

        psnrs, bpps, lpips = [], [], []
        pos = torch.full((1,), position, dtype=torch.float64) if position is not None else None
        with torch.no_grad():
            for name, pixels in val_images:
                x = _to_device_batch(pixels[None], device, options.channels_last)
                out = model(x, rate_positions=pos) if pos is not None else model(x)
                q = (out.x_hat.float().clamp(0, 1) * 255.0).round()
                psnrs.append(L.psnr_from_mse255(float(((q - x * 255.0) ** 2).mean())))
                bpps.append(float(out.bpp))
                if perceptual is not None and out_dir is not None:
                    lpips.append(float(perceptual(q / 255.0, x).mean()))
                if out_dir is not None:
                    arr = q[0].to("cpu", torch.uint8).permute(1, 2, 0).numpy()
                    Image.fromarray(arr).save(out_dir / f"{name}.png", compress_level=1)
        return {"psnr": float(np.mean(psnrs)), "bpp": float(np.mean(bpps)),
                "perceptual": float(np.mean(lpips)) if lpips else None}

    def validate(step: int) -> dict[str, Any] | None:
        """Validate at the fixed rate, or for a variable-rate model at the middle level (the record's
        figures, with images and perceptual distance) and at both ends (``levels``)."""
        if not val_images:
            return None
        out_dir = run_dir / "val" / f"step_{step:07d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        model.eval()
        middle = (config.rate_levels - 1) / 2 if config.rate_levels else None
        main = _validate_pass(middle, out_dir)
        levels = {}
        if middle is not None:
            levels = {0.0: _validate_pass(0.0, None), middle: main,
                      float(config.rate_levels - 1): _validate_pass(float(config.rate_levels - 1), None)}
        model.train()
        record = {"kind": "val", "step": step, "psnr": main["psnr"], "bpp": main["bpp"],
                  "perceptual": main["perceptual"], "images": len(val_images)}
        if levels:
            record["levels"] = [{"position": p, "psnr": v["psnr"], "bpp": v["bpp"]} for p, v in sorted(levels.items())]
            ends = ", ".join(f"level {p:g}: {v['bpp']:.3f} bpp {v['psnr']:.2f} dB" for p, v in sorted(levels.items()))
            progress.message(f"validation @ {step}: {ends}")
        if log is not None:
            log.write(record)
        lp = f", lpips {record['perceptual']:.4f}" if record["perceptual"] is not None else ""
        progress.message(f"validation @ {step}: PSNR {record['psnr']:.2f} dB, bpp {record['bpp']:.4f}{lp}")
        return record

    # restore the generators last: building the model and loader above drew from them
    if resumed is not None:
        rngs = resumed.get("rng") or []
        if len(rngs) == layout.world:
            S.restore_rng(rngs[layout.rank], device)
        else:
            say(f"checkpoint was written by {len(rngs)} processes, now {layout.world}: random noise reseeded")
            torch.manual_seed(options.seed + layout.rank + start)

    model.train()
    if disc is not None:
        disc.train()
    acc = torch.zeros(len(METRICS), dtype=torch.float64, device=device)
    acc_n, acc_t0, t_start = 0, time.perf_counter(), time.perf_counter()
    last_record: dict[str, Any] | None = None
    last_val: dict[str, Any] | None = None
    saved_at = val_at = -1
    step = start
    interrupted = False
    zero = torch.zeros((), device=device)
    progress.update(start)

    with _StopFlag() as stop:
        it = iter(loader)
        while step < options.steps:
            if dist.any_flag(stop.requested, layout):
                interrupted = True
                break
            try:
                batch = next(it)
            except (RuntimeError, StopIteration):
                if stop.requested:  # loader workers died on the same Ctrl-C
                    interrupted = True
                    break
                raise
            x = _to_device_batch(batch, device, options.channels_last)
            lr = schedule.lr_at(step)
            for opt in (opt_main, opt_density, opt_d):
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
            lambda_a, lambda_b, target = schedule.rate_weights_at(step)

            positions = VR.sample_positions(x.shape[0], config.rate_levels) if config.rate_levels else None
            with autocast():
                out = net(x, rate_positions=positions) if positions is not None else net(x)
                distortion = L.mse_255(out.x_hat, x)
                perc_each = perceptual(*_perceptual_window(out.x_hat, x, step, layout.rank, options)) \
                    if perceptual is not None else zero.expand(x.shape[0])
                perc = perc_each.mean()
            if positions is not None:  # R + lambda D per image; no target-rate switch
                penalty = 1.0
                lambdas = VR.lambdas_at(positions, options.rate_lambdas)
                rd_loss, distortion = VR.rate_distortion_loss(
                    out.y_likelihoods, out.z_likelihoods, out.x_hat, x, lambdas
                )
                weights = torch.ones_like(perc_each, dtype=torch.float32)
                if options.perceptual_per_lambda:
                    weights = VR.perceptual_weights(lambdas, schedule_reference_k_m(options)).to(perc_each.device)
                if relative is not None:
                    weights = weights * relative(positions, perc_each)
                loss = rd_loss + schedule.k_p * (weights * perc_each.float()).mean()
            else:
                q_bpp = dist.mean_scalar(float(out.q_bpp.detach()), layout)
                penalty = L.rate_penalty(q_bpp, lambda_a=lambda_a, lambda_b=lambda_b, target_bpp=target)
                loss = penalty * out.bpp.float() + schedule.k_m * distortion + schedule.k_p * perc.float()
            if options.k_grid:  # a pattern stamped at every latent position (hificli.train.losses.grid_pattern)
                loss = loss + options.k_grid * L.grid_pattern((out.x_hat - x).float() * 255.0).pow(2).mean()

            d_loss = g_loss = zero
            if disc is not None:
                y_hat = out.y_hat.detach()
                with autocast():
                    logits = d_net(torch.cat([x, out.x_hat.detach()]), torch.cat([y_hat, y_hat]))
                    real, fake = logits.float().chunk(2)
                    d_loss = L.discriminator_loss(real, fake)
                opt_d.zero_grad(set_to_none=True)
                backward(d_loss)
                step_opt(opt_d)
                disc.requires_grad_(False)
                with autocast():
                    g_loss = L.generator_loss(disc(out.x_hat, y_hat).float())
                disc.requires_grad_(True)
                loss = loss + schedule.beta * g_loss

            opt_main.zero_grad(set_to_none=True)
            opt_density.zero_grad(set_to_none=True)
            backward(loss)
            if options.grad_clip:
                if scaler is not None:
                    scaler.unscale_(opt_main)
                torch.nn.utils.clip_grad_norm_(main_params, options.grad_clip)
            step_opt(opt_main)
            step_opt(opt_density)
            if scaler is not None:
                scaler.update()
            step += 1

            values = torch.stack([t.detach().double() for t in (
                loss, out.bpp, out.q_bpp, out.bpp_y, out.bpp_z, distortion, perc, torch.tensor(penalty, device=device),
                d_loss, g_loss,
            )])
            acc += values
            acc_n += 1

            if (options.log_every and step % options.log_every == 0) or step == options.steps:
                if layout.distributed:
                    torch.distributed.all_reduce(acc)
                    acc /= layout.world
                mean = dict(zip(METRICS, (acc / acc_n).tolist(), strict=True))
                now = time.perf_counter()
                last_record = {
                    "kind": "train", "step": step, **mean, "psnr": L.psnr_from_mse255(mean["distortion"]),
                    "lr": lr, "step_time": (now - acc_t0) / acc_n, "elapsed": now - t_start,
                }
                if perceptual is None:
                    last_record["perceptual"] = None
                if disc is None:
                    last_record["d_loss"] = last_record["g_loss"] = None
                if log is not None:
                    log.write(last_record)
                progress.update(step, last_record)
                acc.zero_()
                acc_n, acc_t0 = 0, time.perf_counter()
            if options.val_every and step % options.val_every == 0 and main_proc:
                last_val, val_at = validate(step), step
            if options.save_every and step % options.save_every == 0:
                save(step)
                saved_at = step

        del it
        if saved_at != step:
            save(step)
        if not interrupted and val_at != step and main_proc:
            last_val = validate(step)

    progress.close()
    if log is not None:
        log.close()
    dist.barrier(layout)
    dist.teardown(layout)
    return TrainResult(run_dir, step, interrupted, model_id, last_record, last_val)
