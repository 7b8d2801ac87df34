"""``hific train --stage realism``: train a model's realism decoder (hificli.models.realism).

The base model (``--init``: a weights file or run directory) is frozen: its encoder, entropy model and
Generator, hence every file it writes and its faithful reconstruction, stay as they are. Each step draws
a realism ``r`` ~ U(0, 1) per image (``--realism-sampling one``: r = 1) and trains the realistic
generator G_r (started as a copy of the Generator, or as the realism decoder ``--init`` has) and a
latent-conditioned discriminator D (HiFiC's) on

    L_G = mean_i [ k_M * MSE_i + r_i * (k_P * perceptual_i + beta * L_G,i) ] + k_grid * mean(P^2)
    L_D = BCE(D(x, y_hat), 1) + BCE(D(x_hat, y_hat), 0)                       x_i = blend(x0, G_r, r_i)

P (3 x 16 x 16, in 0-255 units) is the change x_hat - x0 averaged over the batch at each phase of the
latents' 16 px grid: detail that follows the content averages out there, a pattern stamped at every
latent position (what a perceptual distance alone rewards: a fixed texture, periodic with the
generator's stride, even on smooth skies) and a global colour shift do not.

with the latents quantized as the codec does (hard rounding; a random rate level per image for a
variable-rate model). ``RUN_DIR/weights.safetensors`` is the base weights file plus the realism tensors
(same fingerprint: files of the base model decode with it at any realism).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hificli.errors import HificError, ModelMismatchError
from hificli.train import data as D
from hificli.train import distributed as dist
from hificli.train import losses as L
from hificli.train import state as S
from hificli.train import variable_rate as VR
from hificli.train.options import TrainOptions
from hificli.train.report import JsonlLog, ProgressLine
from hificli.train.schedule import BETA, K_M, K_P, LR

METRICS = ("loss", "distortion", "perceptual", "d_loss", "g_loss", "realism", "grid")
K_GRID = 0.1  #: default weight of the grid-locked pattern penalty (see the module docstring)


def base_weights_path(init: str | Path) -> Path:
    """The weights file of ``--init``: a weights file, or a run directory's weights.safetensors."""
    path = Path(init)
    return path / S.WEIGHTS_NAME if path.is_dir() else path


def realism_loss(
    x_hat: torch.Tensor, x: torch.Tensor, realism: torch.Tensor, perceptual: torch.Tensor,
    adversarial: torch.Tensor, *, k_m: float, k_p: float, beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_G, mean MSE_255): per-image MSE, perceptual distance (N,) and generator loss (N,) weighted
    as in the module docstring."""
    mse = ((x_hat.float() - x.float()) ** 2).mean(dim=(1, 2, 3)) * 255.0**2
    per_image = k_m * mse + realism * (k_p * perceptual + beta * adversarial)
    return per_image.mean(), mse.mean()


def build_realism(config: Any, options: TrainOptions, previous: Any, resumed: dict[str, Any] | None) -> Any:
    """The realism decoder to train: the resumed run's architecture, else the --init decoder's (a grain
    head and residual blocks it has are kept) plus what the options add."""
    from hificli.models.realism import PREFIX, RealismGenerator, architecture_of

    if resumed is not None:
        arch = architecture_of({k[len(PREFIX):]: tuple(v.shape) for k, v in resumed["model_state_dict"].items()
                                if k.startswith(PREFIX)})
    else:
        state = previous.state_dict() if previous is not None else {}
        arch = architecture_of({k: tuple(v.shape) for k, v in state.items()})
        arch["grain"] = arch["grain"] or options.grain or options.grain_only or options.grain_fit
        if options.realism_blocks and not arch["blocks"]:
            arch["blocks"] = options.realism_blocks
    options.grain, options.realism_blocks = arch["grain"], arch["blocks"]
    return RealismGenerator(config, **arch)


def grain_fit_loss(realism: Any, network: Any, x: torch.Tensor, x0: torch.Tensor, y_hat: torch.Tensor,
                   r: torch.Tensor) -> torch.Tensor:
    """Pinball loss at quantile ``FIT_QUANTILE`` of the grain head's log energy against the log high-pass
    energy the decode (without grain) lacks (hificli.models.grain.missing_energy): a low quantile, so that
    where the latents leave it unsure the head predicts too little grain rather than too much."""
    from hificli.models.grain import FIT_QUANTILE, missing_energy
    from hificli.models.realism import blend

    with torch.no_grad():
        decoded = network.postprocess(blend(x0, realism(y_hat, r, with_grain=False), r))
        target = missing_energy(x, decoded)
    error = target - realism.grain.energy(y_hat)
    return torch.maximum(FIT_QUANTILE * error, (FIT_QUANTILE - 1.0) * error).mean()


def per_image_generator_loss(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Non-saturating generator loss per image from D's image-major patch logits (N * P, 1)."""
    target = torch.ones_like(logits)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return loss.reshape(n, -1).mean(dim=1)


def adversarial_step(
    disc: torch.nn.Module, opt_d: torch.optim.Optimizer, x: torch.Tensor, x_hat: torch.Tensor, y_hat: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One discriminator update on (x, x_hat), then the generator's loss per image against the updated D:
    (L_D, L_G per image (N,))."""
    logits = disc(torch.cat([x, x_hat.detach()]), torch.cat([y_hat, y_hat]))
    real, fake = logits.chunk(2)
    d_loss = L.discriminator_loss(real, fake)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    disc.requires_grad_(False)
    adversarial = per_image_generator_loss(disc(x_hat, y_hat), x.shape[0])
    disc.requires_grad_(True)
    return d_loss.detach(), adversarial


class _Base:
    """The frozen base model: quantized latents and the faithful reconstruction of a batch."""

    def __init__(self, path: Path, device: torch.device) -> None:
        from hificli.models.realism import supports_realism
        from hificli.weights import load_weights

        self.network, _, _, self.info = load_weights(path)
        if not supports_realism(self.info.config):
            raise HificError(f"{path}: a realism decoder needs a 'gdn' model (this one is "
                             f"{self.info.config.transform!r})", "use one of the embedded models as --init")
        self.path = path
        self.network.to(device)

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_hat, x0 in model space) of a [0, 1] batch, hard-quantized at random rate levels."""
        net = self.network
        levels = net.config.rate_levels
        positions = VR.sample_positions(x.shape[0], levels) if levels else None
        out = net(x, rate_positions=positions) if positions is not None else net(x)
        return out.y_hat, net.generate(out.y_hat)


def train_realism(
    options: TrainOptions, *, resume: bool = False, explicit: set[str] | None = None, force: bool = False,
    quiet: bool = False, warn: Callable[[str], None] | None = None,
):
    """Run (or resume) a realism run; returns hificli.train.loop.TrainResult."""
    from hificli.models.discriminator import Discriminator
    from hificli.models.realism import PREFIX, blend
    from hificli.perceptual import load_perceptual, resolve_kind
    from hificli.train.loop import (
        TrainResult,
        _perceptual_window,
        _StopFlag,
        _to_device_batch,
        cpu_threads,
        merge_resume,
        prepare_run_dir,
    )

    say = warn or (lambda m: None)
    run_dir = Path(options.out)
    resumed: dict[str, Any] | None = None
    if resume:
        resumed = S.read_run_checkpoint(run_dir)
        options = merge_resume(options, resumed["args"]["hific_train"], explicit or set())
        options.out = str(run_dir)
    if not options.init:
        raise HificError("--stage realism needs --init MODEL (the weights file or run to add realism to)")
    try:
        options.validate()
    except ValueError as exc:
        raise HificError(f"invalid training options: {exc}") from None
    if dist.env_world()[1] > 1:
        raise HificError("--stage realism runs in one process", "start it without torchrun")
    layout = dist.setup(options.device)
    device = layout.device
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(layout, options.threads))
    prepare_run_dir(run_dir, resume=resume, force=force)

    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    base = _Base(base_weights_path(options.init), device)
    config = base.info.config
    if resumed is not None and resumed["args"].get("base_fingerprint") != base.info.fingerprint.hex():
        raise ModelMismatchError(f"{base.path} is not the model this run was started from")
    previous = getattr(base.network, "Realism", None)
    realism = build_realism(config, options, previous, resumed)
    if previous is not None and resumed is None:  # --init a model that has one: train it further
        loaded = realism.load_state_dict(previous.state_dict(), strict=False)
        if loaded.unexpected_keys or any(not k.startswith(("grain.", "blocks.")) for k in loaded.missing_keys):
            raise ModelMismatchError(f"{base.path}: its realism decoder does not fit this one")
        added = [name for name, new in (("a grain head", options.grain and previous.grain is None),
                                        ("residual blocks", len(realism.blocks) > len(previous.blocks))) if new]
        say(f"{base.path} has a realism decoder: training continues from it"
            + (f" (with new {' and '.join(added)})" if added else ""))
    else:
        realism.start_from(base.network.Generator)
    disc = Discriminator(config, input_gain=options.d_gain, high_pass=options.d_high_pass)
    # --grain-fit is a regression: the perceptual network is neither needed nor loaded
    kind = "none" if options.perceptual == "none" or options.grain_fit else resolve_kind(options.perceptual)
    perceptual = load_perceptual(kind) if kind != "none" else None
    for module in (realism, disc, perceptual):
        if module is not None:
            module.to(device)
    lr = options.lr or LR
    k_m = K_M if options.k_m is None else options.k_m
    k_p = K_P if options.k_p is None else options.k_p
    beta = BETA if options.beta is None else options.beta
    k_grid = K_GRID if options.k_grid is None else options.k_grid
    if options.grain_only or options.grain_fit:  # the rest of G_r stays as it is: no gradient, no optimizer state
        part = "grain.energy." if options.grain_fit else "grain."
        for name, parameter in realism.named_parameters():
            parameter.requires_grad_(name.startswith(part))
    trained = [p for p in realism.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(trained, lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    start = 0
    if resumed is not None:
        state = resumed["model_state_dict"]
        realism.load_state_dict({k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)})
        prefix = S.DISCRIMINATOR_PREFIX
        disc.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        opt_g.load_state_dict(resumed["realism_optimizer_state_dict"])
        opt_d.load_state_dict(resumed["discriminator_optimizer_state_dict"])
        start = int(resumed["steps"])

    files = D.find_images(options.data_dir)
    train_files, val_files = (files, D.find_images(options.val)) if options.val else \
        D.split_validation(files, options.val_split)
    pool = D.ImagePool(train_files, cache_mb=options.cache_mb, warn=say)
    dataset = D.CropDataset(pool, D.CropSpec(options.crop, *options.rescale, options.hflip), options.seed)
    sampler = D.StepBatchSampler(start, options.steps, options.batch_size, fixed=options.overfit)
    workers = D.default_workers() if options.workers is None else options.workers
    loader = D.make_loader(dataset, sampler, workers=workers, pin_memory=device.type == "cuda")
    val_images = D.load_validation(val_files, max_side=options.val_crop, max_images=options.val_images,
                                   warn=say) if val_files else []
    model_id = options.name or base.info.model_id
    log = JsonlLog(run_dir / S.LOG_NAME)
    progress = ProgressLine(options.steps, 0, enabled=not quiet)
    (run_dir / "options.json").write_text(json.dumps(options.to_dict(), indent=2) + "\n")
    progress.message(
        f"hific train: realism stage on {base.info.model_id} ({sum(p.numel() for p in trained) / 1e6:.2f}"
        f" M trainable + D), {device}; {len(pool)} training images, {len(val_images)} validation; perceptual "
        f"{kind}; k_M {k_m:g} k_P {k_p:g} beta {beta:g} k_grid {k_grid:g}; step {start} -> {options.steps}"
    )

    def save(step: int) -> None:
        from hificli.weights import save_with_realism

        if not options.checkpoints:
            return
        net_state = {PREFIX + k: v.detach().cpu() for k, v in realism.state_dict().items()}
        net_state.update({S.DISCRIMINATOR_PREFIX + k: v.detach().cpu() for k, v in disc.state_dict().items()})
        S.atomic_torch_save({
            "format": S.CHECKPOINT_FORMAT, "format_version": S.CHECKPOINT_VERSION, "stage": "realism",
            "model_state_dict": net_state, "realism_optimizer_state_dict": opt_g.state_dict(),
            "discriminator_optimizer_state_dict": opt_d.state_dict(), "steps": step,
            "args": {"hific_train": options.to_dict(), "hific_arch": config.to_json(), "perceptual": kind,
                     "base_fingerprint": base.info.fingerprint.hex()},
            "rng": [S.capture_rng(device)],
        }, run_dir / S.CHECKPOINT_NAME)
        meta = {"source": "hific-train", "stage": "realism", "steps": step, "perceptual": kind, "k_m": k_m,
                "k_p": k_p, "beta": beta, "k_grid": k_grid, "crop": options.crop, "batch_size": options.batch_size,
                "grain": options.grain, "grain_only": options.grain_only,
                "grain_fit": options.grain_fit, "realism_blocks": options.realism_blocks}
        save_with_realism(base.path, realism, run_dir / S.WEIGHTS_NAME, model_id=model_id, meta=meta)

    def validate(step: int) -> dict[str, Any] | None:
        """PSNR and perceptual distance of the validation images at realism 0 and 1 (middle rate)."""
        if not val_images:
            return None
        net = base.network
        middle = torch.full((1,), (config.rate_levels - 1) / 2, dtype=torch.float64) if config.rate_levels else None
        sums: dict[str, list[float]] = {"psnr_0": [], "psnr_1": [], "perceptual_0": [], "perceptual_1": []}
        realism.eval()
        with torch.no_grad():
            for _, pixels in val_images:
                x = _to_device_batch(pixels[None], device, False)
                out = net(x, rate_positions=middle) if middle is not None else net(x)
                x0 = net.generate(out.y_hat)
                one = torch.ones(1, device=device)
                for r, x_m in (("0", x0), ("1", blend(x0, realism(out.y_hat, one), one))):
                    q = (net.postprocess(x_m).clamp(0, 1) * 255.0).round()
                    sums[f"psnr_{r}"].append(L.psnr_from_mse255(float(((q - x * 255.0) ** 2).mean())))
                    if perceptual is not None:
                        sums[f"perceptual_{r}"].append(float(perceptual(q / 255.0, x).mean()))
        realism.train()
        record = {"kind": "val", "step": step, "images": len(val_images),
                  **{k: float(np.mean(v)) if v else None for k, v in sums.items()}}
        log.write(record)
        lp = (f", perceptual {record['perceptual_0']:.4f} -> {record['perceptual_1']:.4f}"
              if perceptual is not None else "")
        progress.message(f"validation @ {step}: PSNR {record['psnr_0']:.2f} -> {record['psnr_1']:.2f} dB "
                         f"(realism 0 -> 1){lp}")
        return record

    if resumed is not None and resumed.get("rng"):
        S.restore_rng(resumed["rng"][0], device)
    realism.train()
    disc.train()
    acc = np.zeros(len(METRICS))
    acc_n, acc_t0, t_start = 0, time.perf_counter(), time.perf_counter()
    last_record = last_val = None
    step, saved_at, val_at, interrupted = start, -1, -1, False
    progress.update(start)
    with _StopFlag() as stop:
        it = iter(loader)
        while step < options.steps:
            if stop.requested:
                interrupted = True
                break
            x = _to_device_batch(next(it), device, False)
            n = x.shape[0]
            y_hat, x0 = base.latents(x)
            r = torch.rand(n, device=device) if options.realism_sampling == "uniform" else torch.ones(n, device=device)
            if options.grain_fit:  # regression of the grain's energy on what this decode lacks
                loss = grain_fit_loss(realism, base.network, x, x0, y_hat, r)
                mse = distance = d_loss = adversarial = grid = torch.zeros(())
            else:
                # a different grain field per crop (drawn only with grain: other runs keep their RNG stream)
                origins = torch.randint(0, 1 << 20, (n, 2)) if realism.grain is not None else None
                x_hat = base.network.postprocess(blend(x0, realism(y_hat, r, origins), r))
                pattern = L.grid_pattern((x_hat - base.network.postprocess(x0)) * 255.0)
                grid = pattern.pow(2).mean()

                if beta > 0:
                    d_loss, adversarial = adversarial_step(disc, opt_d, x, x_hat, y_hat)
                else:  # no GAN term: D is neither trained nor run (it stays as it started)
                    d_loss, adversarial = torch.zeros(()), torch.zeros(n, device=device)
                if perceptual is not None:
                    window = _perceptual_window(x_hat, x, step, 0, options)
                    distance = perceptual(*window).reshape(n)
                else:
                    distance = torch.zeros(n, device=device)
                loss, mse = realism_loss(x_hat, x, r, distance, adversarial, k_m=k_m, k_p=k_p, beta=beta)
                loss = loss + k_grid * grid
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            if options.grad_clip:
                torch.nn.utils.clip_grad_norm_(trained, options.grad_clip)
            opt_g.step()
            step += 1

            acc += [float(t.detach().mean()) for t in (loss, mse, distance, d_loss, adversarial, r, grid.sqrt())]
            acc_n += 1
            if (options.log_every and step % options.log_every == 0) or step == options.steps:
                mean = dict(zip(METRICS, (acc / acc_n).tolist(), strict=True))
                now = time.perf_counter()
                last_record = {"kind": "train", "step": step, **mean, "psnr": L.psnr_from_mse255(mean["distortion"]),
                               "lr": lr, "step_time": (now - acc_t0) / acc_n, "elapsed": now - t_start}
                log.write(last_record)
                progress.update(step, last_record)
                acc[:] = 0
                acc_n, acc_t0 = 0, time.perf_counter()
            if options.val_every and step % options.val_every == 0:
                last_val, val_at = validate(step), step
            if options.save_every and step % options.save_every == 0:
                save(step)
                saved_at = step
        del it
        if saved_at != step:
            save(step)
        if not interrupted and val_at != step:
            last_val = validate(step)
    progress.close()
    log.close()
    return TrainResult(run_dir, step, interrupted, model_id, last_record, last_val)
