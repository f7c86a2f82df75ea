"""Self-supervised training of VQ / RVQ tokenizers (conv autoencoder + vector-quantize-pytorch codebooks).

Loss = reconstruction MSE of the normalised signal + the quantiser's commitment loss. Codebooks use
k-means initialisation, EMA updates and dead-code replacement from vector-quantize-pytorch. Runs on
CPU or CUDA; under ``torchrun`` with several processes it uses DistributedDataParallel and the
library's codebook synchronisation. Checkpoints hold only tensors and plain values, so resuming
uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nst_hf.models.conv_vq import NstConvVQConfig, NstConvVQModel
from nst_hf.preprocessing import PreprocessingConfig
from nst_hf.training.data import ChunkSampler, load_training_signals

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "training_checkpoint.pt"


@dataclass
class VQTrainingConfig:
    """Everything a VQ/RVQ training run needs; saved with the result.

    ``architecture`` is ``vq_cnn0``, ``vq_cnn1``, ``vq_cnn2`` or ``rvq``; ``num_quantizers`` > 1 needs ``rvq``.
    """

    inputs: list[str] = field(default_factory=list)
    output_dir: str = "nst_tokenizer"
    architecture: str = "vq_cnn1"
    codebook_size: int = 1024
    num_quantizers: int = 1
    chunk_length: int = 1200
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 2.0
    kmeans_iters: int = 10
    sampling_rate: float | None = 5000.0
    max_samples: int = 50_000_000
    held_out_read_ids: list[str] = field(default_factory=list)
    device: str = "cpu"
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50
    resume: bool = False
    command: str | None = None

    def __post_init__(self):
        NstConvVQConfig(self.architecture, self.codebook_size, self.num_quantizers)  # validates
        if self.num_quantizers > 1 and self.architecture != "rvq":
            raise ValueError("num_quantizers > 1 needs architecture 'rvq'")
        for name in ("chunk_length", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class _Autoencoder(nn.Module):
    """Encoder and decoder of :class:`NstConvVQModel` around a trainable vector-quantize-pytorch quantiser."""

    def __init__(self, config: VQTrainingConfig, distributed: bool):
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ, VectorQuantize

        model_config = NstConvVQConfig(config.architecture, config.codebook_size, config.num_quantizers)
        self.model = NstConvVQModel(model_config)
        common = dict(dim=model_config.dim, codebook_size=config.codebook_size, kmeans_init=True,
                      kmeans_iters=config.kmeans_iters, decay=config.ema_decay,
                      threshold_ema_dead_code=config.dead_code_threshold, commitment_weight=config.commitment_weight,
                      sync_codebook=distributed)
        self.rvq = config.architecture == "rvq"
        self.quantizer = ResidualVQ(num_quantizers=config.num_quantizers, **common) if self.rvq else VectorQuantize(**common)

    def forward(self, x: torch.Tensor):
        latent = self.model.encoder(x)                      # [B, D, T]
        quantized, indices, commit = self.quantizer(latent.transpose(1, 2))
        recon = self.model.decoder(quantized.transpose(1, 2))[:, :, :x.shape[-1]]
        if recon.shape[-1] < x.shape[-1]:
            recon = F.pad(recon, (0, x.shape[-1] - recon.shape[-1]))
        return recon, indices, commit.sum()

    def export_model(self) -> NstConvVQModel:
        """The trained encoder/decoder with the quantiser's codebooks copied in (public API, no key parsing)."""
        codebooks = self.quantizer.codebooks if self.rvq else self.quantizer.codebook.unsqueeze(0)
        model = NstConvVQModel(self.model.config)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        state["codebooks"] = codebooks.detach().float().cpu().reshape(model.codebooks.shape)
        model.load_state_dict(state)
        return model.eval()


def _distributed() -> tuple[bool, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False, 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True, dist.get_rank(), world


def train_vq(config: VQTrainingConfig, progress: bool | None = None):
    """Train and save a tokenizer folder; returns the tokenizer (``NstVQTokenizer`` or ``NstRVQTokenizer``).

    Writes ``output_dir/training_checkpoint.pt`` every ``checkpoint_every`` steps; with ``resume=True``
    training continues from it (same data sampling stream, optimiser and codebook state).
    """
    from tqdm.auto import tqdm

    distributed, rank, world = _distributed()
    device = torch.device(config.device if not (distributed and config.device == "cuda")
                          else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    torch.manual_seed(config.seed + rank)
    preprocessing = PreprocessingConfig(sampling_rate=config.sampling_rate)
    signals, data_stats = load_training_signals(config.inputs, preprocessing, config.sampling_rate,
                                                config.max_samples, config.chunk_length, config.held_out_read_ids)
    sampler = ChunkSampler(signals, config.chunk_length, seed=config.seed + 1000 * rank)
    network = _Autoencoder(config, distributed).to(device)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    optimizer, scheduler = _optimizer(network, config)
    checkpoint_path = output / CHECKPOINT_FILE
    start_step, history = _resume(checkpoint_path, network, optimizer, scheduler, sampler, device) \
        if config.resume and checkpoint_path.exists() else (0, [])
    trainable = torch.nn.parallel.DistributedDataParallel(network) if distributed else network
    started = time.perf_counter()
    disable = True if rank != 0 else (None if progress is None else not progress)
    bar = tqdm(range(start_step, config.steps), desc="training", disable=disable, initial=start_step,
               total=config.steps)
    network.train()
    for step in bar:
        entry = _step(trainable, optimizer, scheduler, torch.from_numpy(sampler.sample(config.batch_size)).to(device),
                      logged=step % config.log_every == 0 or step == config.steps - 1)
        if entry is not None:
            entry = {"step": step, **entry, "seconds": round(time.perf_counter() - started, 1)}
            history.append(entry)
            bar.set_postfix(recon=entry["recon"], commit=entry["commit"])
            logger.info("step %d: %s", step, entry)
        if rank == 0 and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
            _save_checkpoint(checkpoint_path, network, optimizer, scheduler, sampler, step + 1, history)
    bar.close()
    network.eval()
    tokenizer = _export_tokenizer(network, config, preprocessing, data_stats, history)
    if rank == 0:
        tokenizer.save_pretrained(output)
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return tokenizer


def _optimizer(network, config: VQTrainingConfig):
    """AdamW with a warm-up (10 % of steps, at most 100) then cosine decay; constant for fewer than 20 steps."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr)
    if config.steps >= 20:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps,
                                                        pct_start=min(0.1, 100 / config.steps))
    else:  # too few steps for a schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def _resume(path: Path, network, optimizer, scheduler, sampler, device) -> tuple[int, list]:
    """Restore a training checkpoint in place; return the step to continue from and the loss history."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    network.load_state_dict(checkpoint["network"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    sampler.restore(json.loads(checkpoint["sampler"]))
    torch.set_rng_state(checkpoint["torch_rng"])
    logger.info("resuming training at step %d", int(checkpoint["step"]))
    return int(checkpoint["step"]), json.loads(checkpoint["history"])


def _step(trainable, optimizer, scheduler, batch: torch.Tensor, logged: bool) -> dict | None:
    """One optimisation step; with ``logged``, the losses and the codes the batch used per level."""
    recon, indices, commit = trainable(batch)
    recon_loss = F.mse_loss(recon, batch)
    loss = recon_loss + commit
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    if not logged:
        return None
    used = [int(torch.unique(indices[..., q]).numel()) for q in range(indices.shape[-1])] if indices.ndim == 3 \
        else [int(torch.unique(indices).numel())]
    return {"recon": round(recon_loss.item(), 5), "commit": round(commit.item(), 5), "batch_codes_used": used}


def _export_tokenizer(network, config: VQTrainingConfig, preprocessing, data_stats: dict, history: list):
    """The trained tokenizer, with what it was trained on and how in its training record (and model card)."""
    from nst_hf.tokenizers import NstRVQTokenizer, NstVQTokenizer

    cls = NstRVQTokenizer if config.architecture == "rvq" else NstVQTokenizer
    info = {"description": (f"Trained by nst_hf: {config.steps} steps of batch {config.batch_size} x "
                            f"{config.chunk_length} samples on {data_stats['reads']} reads "
                            f"({data_stats['samples']:,} samples at {config.sampling_rate:g} Hz)."),
            "command": config.command or "n/a (library call)", "config": asdict(config), "data": data_stats,
            "history": history}
    return cls(model=network.export_model(), preprocessing=preprocessing, training_info=info)


def _save_checkpoint(path: Path, network, optimizer, scheduler, sampler, step: int, history: list) -> None:
    from nst_hf.output import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "sampler": json.dumps(sampler.state()),
                    "torch_rng": torch.get_rng_state(), "step": step, "history": json.dumps(history)}, tmp)


__all__ = ["VQTrainingConfig", "train_vq"]
