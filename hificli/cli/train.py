"""`hific train`: train a HiFiC model (base stage, then GAN stage) into a run directory."""

from __future__ import annotations

import sys

import click

from hificli.cli.common import settings, stderr_console
from hificli.models.config import PRESETS

_PERCEPTUAL = ("auto", "stlpips-alex", "stlpips-vgg", "lpips-alex", "none")  # hificli.perceptual.KINDS


def _opt_float(name: str, help_text: str):
    return click.option(name, type=float, default=None, help=help_text)


def _lambdas(value: str | None) -> list[float] | None:
    """Parse ``--rate-lambdas A,B,...`` (usage error when malformed)."""
    if value is None:
        return None
    try:
        lambdas = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated numbers") from None
    if len(lambdas) < 2 or any(not v > 0 for v in lambdas) or lambdas != sorted(lambdas):
        raise click.BadParameter("need 2 or more positive, increasing lambdas")
    return lambdas


def _widths(value: str | None) -> tuple[int, int, int] | None:
    """Parse ``--widen W1,W2,W4`` (usage error when malformed)."""
    if value is None:
        return None
    try:
        widths = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected three comma-separated integers") from None
    if len(widths) != 3 or not all(1 <= w <= 4096 for w in widths):
        raise click.BadParameter("need three widths between 1 and 4096")
    return widths  # type: ignore[return-value]


@click.command("train")
@click.argument("data_dir", required=False, type=click.Path(file_okay=False))
@click.option("--stage", type=click.Choice(["base", "gan", "realism"]), default="base", show_default=True,
              help="base: rate + distortion + perceptual; gan: adds the discriminator (use --init BASE_RUN); "
                   "realism: a frozen --init model's realism decoder (hific decode --realism).")
@click.option("--regime", type=click.Choice(["low", "med", "high"]), default="med", show_default=True,
              help="Target rate 0.14 / 0.30 / 0.45 bpp with lambda_A 2 / 1 / 0.5.")
@click.option("--arch", type=click.Choice(list(PRESETS)), default="small", show_default=True,
              help="Network: full = published HiFiC (181 M params), small (HiFiC layers, CPU), compact "
                   "(GDN layers, 2.8 M), compact-ctx (compact with a channel-conditional context), "
                   "tiny / tiny-gdn (tests).")
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Total updates.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per step and process (torchrun: global batch = B x processes).")
@click.option("--crop", type=click.IntRange(min=128), default=256, show_default=True,
              help="Training crop side (multiple of 64).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run directory to create.")
@click.option("--init", "init", type=click.Path(exists=True), default=None,
              help="Warm-start weights: a run directory, a checkpoint (ours or the port's) or a weights file.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), default=None,
              help="Continue the run in RUN_DIR exactly where its last checkpoint stopped.")
@click.option("--val", type=click.Path(exists=True, file_okay=False), default=None,
              help="Validation images (default: hold out --val-split of DATA_DIR).")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True), default=0.05, show_default=True,
              help="Fraction of DATA_DIR held out for validation when --val is absent (needs >= 10 images).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--name", default=None, help="Model id stored in the weights (default: from the run directory).")
@click.option("--perceptual", type=click.Choice(_PERCEPTUAL), default="auto", show_default=True,
              help="Perceptual loss network (auto: standard LPIPS if $HIFIC_LPIPS_WEIGHTS, else ST-LPIPS).")
@click.option("--perceptual-crop", type=click.IntRange(min=0), default=0, show_default=True,
              help="Score the perceptual loss on one random PxP window per step (cheaper on CPU); 0: whole crop.")
@_opt_float("--lr", "Learning rate (default 1e-4).")
@_opt_float("--target-bpp", "Override the regime's target rate r_t.")
@_opt_float("--lambda-a", "Override the regime's rate weight above the target.")
@_opt_float("--lambda-b", "Override the rate weight below the target (default 2^-4).")
@_opt_float("--k-m", "Override the MSE weight (default 0.075 * 2^-5, MSE on 0..255).")
@_opt_float("--k-p", "Override the perceptual weight (default 1).")
@_opt_float("--k-grid", "Weight of the penalty on a pattern locked to the latents' 16 px grid: the batch mean at "
                        "each of the 16 x 16 phases of G_r's change (--stage realism, default 0.1) or of the "
                        "decode's error (base / gan, default 0).")
@_opt_float("--beta", "Override the GAN weight (default 0.15).")
@click.option("--d-gain", type=float, default=1.0, show_default=True,
              help="Scale the discriminator's image input. Spectral norm caps each layer's gain at 1, so a "
                   "decode a few grey levels off its original looks like it to D; with --d-high-pass, "
                   "32-64 lets D tell them apart within 100 steps.")
@click.option("--d-high-pass/--no-d-high-pass", default=False, show_default=True,
              help="The discriminator judges each image minus its 3x3 mean (the texture a decode lacks) "
                   "instead of the image.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None,
              help="Steps with lambda x2 and a raised target (default min(50k, 5% of --steps); gan: 0).")
@click.option("--lr-drop-step", type=click.IntRange(min=0), default=None,
              help="Step of the lr decay (default min(500k, 85% of --steps)).")
@_opt_float("--lr-drop-factor", "lr multiplier after --lr-drop-step (default 0.1).")
@_opt_float("--grad-clip", "Clip the E/G/prior gradient norm (default: off, as the paper).")
@click.option("--rate-lambdas", callback=lambda ctx, param, value: _lambdas(value), default=None,
              help="Variable-rate training: comma-separated lambdas (MSE weights), lowest rate first; each "
                   "image gets a random level, loss bpp + lambda * MSE. A fixed-rate --init becomes "
                   "variable-rate, its steps starting at 1 where lambda = --k-m.")
@click.option("--context", type=click.Choice(["none", "checkerboard", "channel"]), default=None,
              help="Give the model (or replace its) context model: channel-conditional slices (Minnen & Singh "
                   "2020) or a checkerboard (He et al. 2021). A new context starts as the model it joins (its "
                   "last layer is zero) and learns 10x faster than the network. Default: keep the init's.")
@click.option("--context-channels", type=click.IntRange(min=1, max=1024), default=None,
              help="Width of a new context's networks [192].")
@click.option("--widen", callback=lambda ctx, param, value: _widths(value), default=None, metavar="W1,W2,W4",
              help="Widen the --init GDN model's hidden layers (at 1/2, 1/4 and 1/8 of the image size) to "
                   "these widths before training; new channels start with zero weights into the next layer, "
                   "so training starts from the same model.")
@click.option("--realism-sampling", type=click.Choice(["uniform", "one"]), default="uniform", show_default=True,
              help="--stage realism: each image's realism r ~ U(0, 1), or r = 1 for all (R = 1 is then the "
                   "trained decoder and R < 1 blends it with the faithful one).")
@click.option("--grain", is_flag=True,
              help="--stage realism (experimental): give the realism decoder a grain head, position-keyed noise "
                   "with the high-pass energy it predicts the decode lacks; a decoder that has one keeps it.")
@click.option("--grain-only", is_flag=True,
              help="--stage realism: train only the grain head (implies --grain); the rest of the realism "
                   "decoder stays as --init has it.")
@click.option("--grain-fit", is_flag=True,
              help="--stage realism: fit the grain head's energy net alone, by regression on the high-pass "
                   "energy each decode lacks (implies --grain; no perceptual term needed).")
@click.option("--realism-blocks", type=click.IntRange(min=0, max=8), default=0, show_default=True,
              help="--stage realism: residual blocks (3x3, 128 wide) at latent resolution before the realism "
                   "decoder's transform; new ones start as the identity. A decoder that has some keeps them.")
@click.option("--freeze-prior", is_flag=True,
              help="--stage base / gan: train the encoder and the decoder only; the hyperprior, context and rate "
                   "steps stay as --init has them (scripts/ship_perceptual.py then stores the two with --init's "
                   "entropy model and tables, so the result parses bits exactly as --init does).")
@click.option("--perceptual-per-lambda", is_flag=True,
              help="Variable-rate training: weight each image's perceptual term by lambda / --k-m, so that "
                   "perception and MSE keep one ratio at every rate level (default: one weight for all).")
@click.option("--perceptual-relative", is_flag=True,
              help="Variable-rate training: share the perceptual weight out by each image's distance against "
                   "the running mean of its rate level (low for its rate: more weight), so that training "
                   "follows relative changes (hificli.train.relative). The term's total weight is unchanged.")
@click.option("--rescale", type=(float, float), default=(0.75, 0.95), show_default=True,
              help="Random rescale range of the image side before cropping (never below the crop).")
@click.option("--hflip/--no-hflip", default=True, show_default=True, help="Random horizontal flips.")
@click.option("--save-every", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Checkpoint (and weights.safetensors) every N steps; 0: only at the end.")
@click.option("--val-every", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Validate every N steps; 0: only at the end.")
@click.option("--log-every", type=click.IntRange(min=0), default=10, show_default=True,
              help="Write a log.jsonl line (averages) every N steps.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers [min(2, CPUs)].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads [$OMP_NUM_THREADS, else CPUs / local processes].")
@click.option("--cache-mb", type=float, default=4096, show_default=True,
              help="Decode the training images into memory when they fit in this budget.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision (auto: CUDA bf16 where supported, else fp16 + grad scaling; CPU fp32).")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True,
              help="Channels-last memory format.")
@click.option("--overfit", is_flag=True, help="Train on one fixed batch (checks that the loop can fit).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-f", "--force", is_flag=True, help="Replace an existing run in --out.")
@click.pass_context
def command(ctx: click.Context, data_dir: str | None, resume: str | None, force: bool, **kw) -> None:
    """Train a HiFiC model on the images in DATA_DIR (recursive) into the run directory --out.

    \b
    Two stages, as in the paper:
      hific train DATA --stage base --regime med --steps 100000 --out runs/base
      hific train DATA --stage gan --init runs/base --steps 100000 --out runs/gan
    Or keep a model's files and faithful decoder and train its realism decoder on top:
      hific train DATA --stage realism --init MODEL.safetensors --steps 20000 --out runs/realism
    Every checkpoint also writes RUN_DIR/weights.safetensors, so `hific encode -m RUN_DIR` works.
    Ctrl-C saves a checkpoint and exits (130); continue with --resume RUN_DIR.
    Multi-GPU / multi-node: launch with torchrun (DDP; gloo on CPU).
    """
    from click.core import ParameterSource

    from hificli.train.options import TrainOptions

    explicit = {
        name for name in ctx.params
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    if resume is None and (data_dir is None or kw["out"] is None):
        raise click.UsageError("DATA_DIR and --out are required (or --resume RUN_DIR)")
    if resume is not None and kw["out"] is not None and kw["out"] != resume:
        raise click.UsageError("--out and --resume name different directories")
    out = resume if resume is not None else kw.pop("out")
    kw.pop("out", None)
    options = TrainOptions(data_dir=data_dir or "", out=out, **kw)
    if data_dir is not None:
        explicit.add("data_dir")
    if resume is None:
        try:
            options.validate()
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None

    quiet = settings().quiet

    def warn(message: str) -> None:
        if not quiet:
            sys.stderr.write(f"warning: {message}\n")
            sys.stderr.flush()

    from hificli.train.loop import train

    result = train(options, resume=resume is not None, explicit=explicit, force=force, quiet=quiet, warn=warn)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    if result.interrupted:
        sys.stderr.write(
            f"interrupted at step {result.step}; checkpoint saved in {result.run_dir} "
            f"(continue with: hific train --resume {result.run_dir})\n"
        )
        raise KeyboardInterrupt
    if not quiet:
        console = stderr_console()
        console.print(
            f"trained to step {result.step}: {result.run_dir}/weights.safetensors (model id {result.model_id})"
        )
        console.print(f"encode with: hific encode -m {result.run_dir} IMAGE")
