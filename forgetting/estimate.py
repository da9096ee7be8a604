"""Peak memory per device, FLOPs and time of a stage, from architecture numbers and settings alone: no model is
built, no weights are read. ``forgetting.plan`` maps a run's config onto these functions (``--plan``, preflight).

    python launch.py +experiment=llama3_recycle device=cuda method.recycle_train=true --plan
    pytest tests/test_plan.py

Memory of a training step (docs/plan.md has the derivation and the measured accuracy):
- **model states** as DeepSpeed's ZeRO paper counts them (Rajbhandari et al. 2020): weights, gradients and optimizer
  state per trained parameter, in the dtypes this project trains in (``forgetting.pipeline.train_dtype``: fp32
  master weights outside DeepSpeed; DeepSpeed's bf16 mode keeps 16-bit weights and fp32 masters), partitioned over
  the processes by the ZeRO stage exactly as DeepSpeed's own estimators do
  (``deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs``);
- the method's own state: the ℓ2 anchor (a copy of the trained weights in the optimizer state), EWC's Fisher and
  anchor, SAM's saved weights during its second pass;
- **activations**: the tensors autograd keeps for the backward pass, counted per token and layer the way Korthikanti
  et al. 2022 (§4.1, "Reducing Activation Recomputation in Large Transformer Models") count them, for this
  project's Llama-style blocks (RMSNorm, rotary attention through SDPA without stored scores, SwiGLU MLP) in its
  precisions (bf16 autocast over fp32 weights: fp32 residual stream and norms, 16-bit matmul inputs); with gradient
  checkpointing, one input per layer plus one layer recomputed;
- **the loss**: ``forgetting.train.fit.WeightedTrainer.compute_loss`` upcasts the logits to fp32 and the
  cross-entropy keeps its log-softmax: several batch × sequence × vocabulary tensors, large at 128K vocabularies;
- the autocast copies of the weights (bf16 autocast saves a 16-bit copy of every matmul weight for the backward)
  and the optimizer step's temporaries (torch's multi-tensor AdamW on CUDA allocates one fp32 tensor per state).
The peak is the larger of the forward/backward phase and the optimizer step.

FLOPs: 6 per matmul parameter and trained token, plus attention's 12 · layers · hidden · sequence (PaLM, Chowdhery
et al. 2022, App. B); 2 per parameter and generated token. Time = FLOPs / (MFU · the device's dense peak).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# the estimate is within this fraction of the measured peak on CPU (docs/plan.md): a stage is refused only when
# even an estimate this much too high would not fit
TOLERANCE = 0.25
CUDA_OVERHEAD = GiB  # CUDA context, cuBLAS workspace and allocator slack per GPU process: a stated allowance
# DeepSpeed ZeRO-3's default sub_group_size: the optimizer steps over fp32 partitions of at most this many params
DS_SUB_GROUP = 10**9
EVAL_CONTEXT = 2048  # tokens per sequence an lm-eval batch is sized at (its prompts are shorter; an upper bound)


@dataclass(frozen=True)
class Device:
    name: str
    memory: int  # bytes per device
    peak: dict  # dense FLOP/s by compute dtype
    gpu: bool = True
    note: str = ""


DEVICES = {
    # dense (no sparsity) tensor-core peaks from the vendors' datasheets; fp32: the non-tensor-core peak
    "h100_80gb": Device("h100_80gb", 80 * GiB, {"bfloat16": 989e12, "float32": 67e12}, note="H100 SXM"),
    "h200_141gb": Device("h200_141gb", 141 * 10**9, {"bfloat16": 989e12, "float32": 67e12}, note="H200 SXM"),
    "a100_80gb": Device("a100_80gb", 80 * GiB, {"bfloat16": 312e12, "float32": 19.5e12}, note="A100 SXM"),
    "a100_40gb": Device("a100_40gb", 40 * GiB, {"bfloat16": 312e12, "float32": 19.5e12}, note="A100 SXM"),
    "l40s_48gb": Device("l40s_48gb", 48 * GiB, {"bfloat16": 362e12, "float32": 91.6e12}, note="L40S"),
    # this machine's kind: 2 cores, their matmul peaks as measured on it (python -m bench.train_mfu prints the bf16
    # one); its memory is the host's available RAM, read when the device is used (host_device)
    "cpu": Device("cpu", 0, {"bfloat16": 416e9, "float32": 173e9}, gpu=False, note="host RAM"),
}


def host_device() -> Device:
    """``cpu`` with this machine's available RAM (what a stage here can still allocate)."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:  # psutil is a dev extra; /proc/meminfo is Linux's own count
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    d = DEVICES["cpu"]
    return Device(d.name, available, d.peak, gpu=False, note="available host RAM")


@dataclass(frozen=True)
class Arch:
    """A Llama-style decoder (Llama, OLMo, OLMo-2, SmolLM2, the toy model): the numbers memory and FLOPs depend on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    max_positions: int | None = None
    source: str = ""  # where the numbers come from (a config.json, a yaml)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of a block's linear layers: q, k, v, o, gate, up, down."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def block_params(self) -> int:
        return sum(i * o for i, o in self.linears()) + 2 * self.hidden  # + two RMSNorm weights

    @property
    def embedding(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.embedding * (1 if self.tied else 2) + self.layers * self.block_params + self.hidden

    @property
    def matmul_params(self) -> int:
        """Parameters that multiply every token (the FLOPs' N): the blocks' linears and the output projection."""
        return self.layers * sum(i * o for i, o in self.linears()) + self.embedding

    @property
    def largest_layer(self) -> int:
        """The largest single module's parameters (DeepSpeed's ``largest_layer_params``): the embedding here."""
        return max(self.embedding, *(i * o for i, o in self.linears()))

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer of the blocks (peft's ``all-linear``: not the output projection)."""
        return self.layers * sum(rank * (i + o) for i, o in self.linears())


@dataclass(frozen=True)
class TrainSetup:
    """What a training step's memory depends on, in plain values (``forgetting.plan`` fills it from a config)."""

    micro_batch: int
    seq_len: int
    grad_accum: int = 1
    processes: int = 1  # data-parallel (or ZeRO) processes, one device each
    weights: str = "float32"  # the dtype the weights are loaded in (pipeline.train_dtype)
    autocast: bool = False  # bf16 autocast compute over the loaded weights (trainer.bf16 without DeepSpeed)
    lora_rank: int | None = None  # LoRA on every linear layer over a frozen base; adapters in fp32
    optimizer: str = "adamw"  # adamw (torch, fp32 state) | adamw8bit (bitsandbytes)
    sam: bool = False  # SAM: a saved copy of the weights and a second forward/backward per step
    regularizer: str = "none"  # none | l2 (anchor in the optimizer state) | ewc (Fisher + anchor)
    zero_stage: int | None = None  # DeepSpeed ZeRO stage (0-3); None: no DeepSpeed
    ds_bf16: bool = True  # DeepSpeed's bf16 mode (16-bit weights, fp32 masters); else fp32 weights
    offload_optimizer: bool = False
    offload_param: bool = False
    checkpointing: bool = False
    gpu: bool = True  # CUDA: multi-tensor optimizer temporaries and the per-process CUDA allowance
    hf_loss: bool = False  # the model's own loss (labels passed in: the Fisher estimate), not compute_loss's


@dataclass
class Estimate:
    """Bytes per device by component, the peak per device, and compute."""

    parts: dict[str, int] = field(default_factory=dict)
    peak: int = 0
    devices: int = 1
    flops: float = 0.0
    tokens: int = 0
    host: int = 0  # bytes in host RAM (offloaded state) per process
    notes: list[str] = field(default_factory=list)


def _adam_state(trained: int, embedding: int, optimizer: str, param_bytes: int) -> int:
    """AdamW's two moments: torch keeps them in the parameter's dtype; bitsandbytes' 8-bit AdamW keeps 1 byte each
    (plus a 4-byte absmax per 256-value block) for tensors of >= 4096 values, and 32-bit state for the embeddings,
    which the HF Trainer registers as 32-bit for bitsandbytes optimizers."""
    if optimizer == "adamw8bit":
        return 8 * embedding + int((2 + 8 / 256) * (trained - embedding))
    return 2 * param_bytes * trained


def layer_activations(a: Arch, seq_len: int, residual: int, autocast: bool, lora_rank: int | None = None) -> int:
    """Bytes one block keeps for its backward pass, per token (Korthikanti et al. 2022 §4.1's count of the tensors
    autograd saves, for this block; checked tensor by tensor with ``torch.autograd.graph.saved_tensors_hooks``).
    ``residual``: bytes of the residual stream (the loaded weights' dtype); ``autocast``: bf16 autocast compute;
    ``lora_rank``: a frozen base with fp32 adapters on every linear."""
    h, q, i = a.hidden, a.q_dim, a.intermediate
    compute = 2 if (autocast or residual == 2) else 4  # matmul inputs and outputs
    # RMSNorm: its fp32 input (the variance's), and, when its weight trains, the normalised value it multiplies
    norms = 2 * (4 * h + (0 if lora_rank else residual * h))
    # the inputs the block's linears keep (q, k, v, gate and up read a norm's output; o_proj the attention's): one
    # tensor shared by the linears that read it, or one cast copy per linear. A trained linear keeps its input, cast
    # to bf16 per linear under autocast; a frozen one keeps nothing, and its fp32 adapter keeps its input cast to
    # bf16 under autocast, to fp32 from a 16-bit base, as is from an fp32 one
    shared = (2 * h + q) * residual
    if lora_rank:
        inputs = (5 * h + q) * 2 if autocast else (shared if residual == 4 else (5 * h + q) * 4)
    else:
        inputs = (5 * h + q) * 2 if (autocast and residual == 4) else shared
    attention = 3 * compute * q  # SDPA's saved q, k and v (k and v repeated to every head: the batches carry a mask)
    mask = compute * seq_len  # the padding mask, converted per layer to an additive one: batch × seq² in all
    mlp = 4 * compute * i  # gate, SiLU(gate), up, and their product (down_proj's input)
    adapters = 7 * lora_rank * (2 if autocast else 4) if lora_rank else 0  # each adapter's rank-r intermediate
    return norms + inputs + attention + mask + mlp + adapters


def activations(a: Arch, tokens: int, seq_len: int, residual: int, autocast: bool, checkpointing: bool,
                lora_rank: int | None = None) -> tuple[int, int]:
    """(what stays saved through the backward pass, what a block's backward adds on top) for ``tokens`` tokens of
    one micro-batch. Without checkpointing every block's activations stay, and a block's backward adds its working
    gradients; with it, each block's input (and the final norm's and the output projection's inputs) stay, and a
    block's backward recomputes its activations first."""
    per_layer = layer_activations(a, seq_len, residual, autocast, lora_rank)
    compute = 2 if (autocast or residual == 2) else 4
    head = (4 + residual) * a.hidden + compute * a.hidden  # final norm's input and output, lm_head's input
    # a block's backward works on gradients of its activations: three of the MLP's width and two of the residual's
    # alive at once (measured: a checkpointed block's recompute peaks at its saved tensors plus these)
    working = 3 * compute * a.intermediate + 2 * residual * a.hidden
    if checkpointing:
        return tokens * (a.layers * residual * a.hidden + head), tokens * (per_layer + working)
    return tokens * (a.layers * per_layer + head), tokens * working


def loss_bytes(a: Arch, micro_batch: int, seq_len: int, compute: int, hf_loss: bool = False) -> int:
    """The logits and the cross-entropy's tensors at their peak, batch × sequence × vocabulary each:
    compute_loss's forward holds the model's logits (``compute`` bytes), their fp32 copy when 16-bit, the
    flattened copy of the shifted slice (batch > 1) and the log-softmax; its backward the log-softmax, its gradient
    and its input's (12 bytes). The model's own loss (``hf_loss``) shifts the labels, not the logits: no copy."""
    n = micro_batch * seq_len * a.vocab
    upcast = 4 if compute != 4 else 0
    flat = 4 if (micro_batch > 1 and not hf_loss) else 0
    return n * max(compute + upcast + flat + 4, 12)


def train_memory(a: Arch, s: TrainSetup) -> Estimate:
    """Peak bytes per device of one training step: the model states, plus the larger of the backward pass's start
    (every saved activation, the loss's tensors or a recomputed block, the gradients already there) and the
    optimizer step (the gradients and the step's temporaries)."""
    P, n = a.params, s.processes
    lora = s.lora_rank is not None
    T = a.lora_params(s.lora_rank) if lora else P  # trained parameters
    emb = 0 if lora else a.embedding  # trained embedding parameters (32-bit state under 8-bit AdamW)
    tokens = s.micro_batch * s.seq_len
    e = Estimate(devices=n)
    p = e.parts
    if s.zero_stage is not None:
        half = 2 if s.ds_bf16 else 4
        extra = 8 if s.ds_bf16 else 0  # bf16 mode: fp32 master weights and fp32 gradients for the optimizer
        z = s.zero_stage
        # DeepSpeed's estimators: ZeRO-3 holds its 16-bit partition and the largest layer gathered (16-bit weights
        # and gradients); ZeRO-1/2 the whole 16-bit model; ZeRO-2 partitions the 16-bit gradients, ZeRO-1 not
        if z == 3:
            p["weights (16-bit, partitioned)"] = 0 if s.offload_param else half * P / n
            p["gathered layer (16-bit weights + grads)"] = 2 * half * a.largest_layer
        else:
            p["weights (16-bit)"] = half * P
        if z <= 1:
            p["gradients (16-bit)"] = half * T
        elif z == 2 and not s.offload_optimizer:
            p["gradients (16-bit, partitioned)"] = half * T / n
        states = extra * T + _adam_state(T, emb, s.optimizer, 4) + (4 * T if s.regularizer == "l2" else 0)
        states = states / n if z >= 1 else states
        if s.offload_optimizer:
            e.host = int(states)
        else:
            name = ("fp32 master + grads + " if s.ds_bf16 else "") + \
                ("8-bit AdamW" if s.optimizer == "adamw8bit" else "AdamW") + (" + ℓ2 anchor" if s.regularizer == "l2"
                                                                            else "")
            p[f"optimizer ({name}, partitioned)"] = states
        saved, recompute = activations(a, tokens, s.seq_len, half, False, s.checkpointing, s.lora_rank)
        logits = loss_bytes(a, s.micro_batch, s.seq_len, half, s.hf_loss)
        backward = {}
        # the client optimizer steps over one fp32 sub-group of the partition at a time
        temps = 0 if (s.offload_optimizer or not s.gpu or s.optimizer == "adamw8bit") else \
            4 * min(DS_SUB_GROUP, T / n if z >= 1 else T)
        step = {"optimizer step temporaries": temps}
    else:
        wb = DTYPE_BYTES[s.weights]
        pb = 4 if lora else wb  # bytes of a trained parameter (peft keeps adapters in fp32)
        p["weights (" + (f"{s.weights} base + fp32 adapters)" if lora else f"{s.weights})")] = (
            (P * wb + T * 4) if lora else P * wb)
        p["optimizer (" + ("8-bit AdamW" if s.optimizer == "adamw8bit" else "AdamW") + ")"] = _adam_state(
            T, emb, s.optimizer, pb)
        if s.regularizer == "l2":
            p["ℓ2 anchor"] = T * pb
        elif s.regularizer == "ewc":
            p["EWC Fisher + anchor (fp32)"] = 8 * T
        if n > 1:
            p["DDP gradient buckets"] = T * pb  # not views of the gradients (DDP's default)
        saved, recompute = activations(a, tokens, s.seq_len, wb, s.autocast, s.checkpointing, s.lora_rank)
        compute = 2 if (s.autocast or wb == 2) else 4
        logits = loss_bytes(a, s.micro_batch, s.seq_len, compute, s.hf_loss)
        # bf16 autocast keeps a bf16 copy of every fp32 matmul weight it used for the backward (the input's
        # gradient needs it, trained or frozen): the whole model's over fp32 weights, the adapters' over a bf16 base
        casts = (2 * a.matmul_params if wb == 4 else 0) + (2 * T if lora else 0) if s.autocast else 0
        grads = T * pb
        # gradients already there when the backward starts: accumulated ones, SAM's first pass's (zeroed, kept),
        # or the output projection's, made first
        held = grads if (s.grad_accum > 1 or s.sam) else (0 if lora else a.embedding * pb)
        sam = T * pb if s.sam else 0
        backward = {"autocast bf16 weight copies": casts,
                    ("gradients (accumulated)" if s.grad_accum > 1 or s.sam else "gradient of the output layer"):
                    held, "SAM saved weights": sam}
        # the step: torch's multi-tensor AdamW on CUDA allocates sqrt(v) for every tensor at once; on the CPU (and
        # bitsandbytes) one tensor at a time
        largest = 0 if lora else max(a.embedding, *(i * o for i, o in a.linears()))
        step = {"gradients": grads,
                "optimizer step temporaries": T * pb if (s.gpu and s.optimizer != "adamw8bit") else largest * pb}
    backward = {"activations" + (" (checkpointed)" if s.checkpointing else ""): saved,
                **({("recomputed block + its gradients" if s.checkpointing else "a block's gradients"): recompute}
                   if recompute > logits else {"logits + loss": logits}), **backward}
    phase = backward if sum(backward.values()) >= sum(step.values()) else step
    if phase is step:
        e.notes.append("the optimizer step is the peak, not the backward pass")
    p.update(phase)
    if s.gpu:
        p["CUDA context + allocator slack"] = CUDA_OVERHEAD
    e.parts = {k: int(v) for k, v in p.items() if v}
    e.peak = sum(e.parts.values())
    return e


def fisher_memory(a: Arch, micro_batch: int, seq_len: int, gpu: bool) -> Estimate:
    """EWC's Fisher estimate (forgetting/parts/ewc.py): an fp32 model, its squared-gradient accumulator, and per
    batch a forward and backward through the model's own loss; no optimizer."""
    P = a.params
    saved, _ = activations(a, micro_batch * seq_len, seq_len, 4, False, False)
    backward = saved + loss_bytes(a, micro_batch, seq_len, 4, hf_loss=True) + a.embedding * 4
    step = 4 * P + max(a.embedding, *(i * o for i, o in a.linears())) * 4  # all gradients, one squared at a time
    e = Estimate()
    e.parts = {"weights (float32)": 4 * P, "Fisher accumulator (fp32)": 4 * P}
    e.parts.update({"activations": saved, "logits + loss": backward - saved} if backward >= step else
                   {"gradients + a squared copy": step})
    if gpu:
        e.parts["CUDA context + allocator slack"] = CUDA_OVERHEAD
    e.peak = sum(e.parts.values())
    return e


def train_flops(a: Arch, tokens: int, seq_len: int, lora_rank: int | None = None, sam: bool = False) -> float:
    """Model FLOPs of training on ``tokens`` tokens: 6N + 12·layers·hidden·seq per token (PaLM App. B); a frozen
    base (LoRA) skips its weight gradients (4N, + 6 per adapter parameter); SAM runs two passes per step."""
    attention = 12 * a.layers * a.q_dim * seq_len
    per_token = (4 * a.matmul_params + 6 * a.lora_params(lora_rank) if lora_rank else 6 * a.matmul_params) + attention
    return float(per_token * tokens * (2 if sam else 1))


def generate_flops(a: Arch, tokens: int) -> float:
    """2N per generated or scored token (the forward pass alone)."""
    return float(2 * a.matmul_params * tokens)


def kv_bytes(a: Arch, tokens: int, dtype_bytes: int) -> int:
    """A KV cache holding ``tokens`` tokens: keys and values of every layer."""
    return 2 * a.layers * a.kv_dim * dtype_bytes * tokens


def hf_generate_memory(a: Arch, dtype: str, batch: int, length: int, gpu: bool) -> Estimate:
    """HF ``generate``: the weights, the KV cache of a batch at full length (grown by concatenation: one layer's
    cache twice while it grows), one step's logits and sampling copies."""
    b = DTYPE_BYTES[dtype]
    e = Estimate()
    e.parts["weights (" + dtype + ")"] = a.params * b
    kv = kv_bytes(a, batch * length, b)
    e.parts["KV cache"] = kv + kv // a.layers
    e.parts["logits + sampling"] = 6 * batch * a.vocab * 4
    e.parts["activations (one step)"] = batch * length * (a.hidden + a.intermediate) * b if length else 0
    if gpu:
        e.parts["CUDA context + allocator slack"] = CUDA_OVERHEAD
    e.parts = {k: int(v) for k, v in e.parts.items() if v}
    e.peak = sum(e.parts.values())
    return e


def vllm_memory(a: Arch, dtype: str, tp: int, device_memory: int, utilization: float, kv_cache: int | None,
                max_len: int) -> tuple[Estimate, bool]:
    """vLLM reserves ``utilization`` of each device for its weights (1/tp each), activations and KV cache, or the
    weights plus exactly ``kv_cache`` bytes when set. Returns the estimate and whether one sequence of ``max_len``
    tokens fits in the KV cache left (vLLM refuses to start otherwise)."""
    b = DTYPE_BYTES[dtype]
    e = Estimate(devices=tp)
    weights = a.params * b / tp
    # the profile run's activations: a batch of max_num_batched_tokens (vLLM's default 8192, chunked prefill), and
    # the sampler's fp32 logits for max_num_seqs (256) sequences
    work = 8192 * (2 * a.hidden + 2 * a.intermediate) * b / tp + 2 * 256 * a.vocab * 4 / tp
    e.parts["weights (" + dtype + (f", 1/{tp}" if tp > 1 else "") + ")"] = weights
    e.parts["activations (profile batch)"] = work
    if kv_cache is not None:
        e.parts["KV cache (kv_cache_memory_bytes)"] = kv_cache
        room = kv_cache
    else:
        room = utilization * device_memory - weights - work
        e.parts[f"KV cache (to {utilization:.0%} of the device)"] = max(0, room)
    e.parts = {k: int(v) for k, v in e.parts.items() if v}
    e.peak = sum(e.parts.values())
    return e, room >= kv_bytes(a, max_len, b) / tp


def eval_memory(a: Arch, dtype: str, batch: int, context: int, gen_tokens: int, gpu: bool) -> Estimate:
    """Evaluation in one process: the weights, and the larger of a scored batch (``batch`` × ``context`` tokens:
    one block's transient activations, the logits and lm-eval's log-softmax of them) and a generating batch (KV
    cache of ``batch`` × (context + ``gen_tokens``))."""
    b = DTYPE_BYTES[dtype]
    e = Estimate()
    e.parts["weights (" + dtype + ")"] = a.params * b
    tokens = batch * context
    scored = tokens * (4 * a.hidden + 3 * a.intermediate) * b + 2 * tokens * a.vocab * b
    generated = kv_bytes(a, batch * (context + gen_tokens), b) if gen_tokens else 0
    if generated > scored:
        e.parts["KV cache (generation)"] = generated
    else:
        e.parts["logits + log-softmax (scored batch)"] = scored
    if gpu:
        e.parts["CUDA context + allocator slack"] = CUDA_OVERHEAD
    e.parts = {k: int(v) for k, v in e.parts.items() if v}
    e.peak = sum(e.parts.values())
    return e


def seconds(flops: float, device: Device, dtype: str, mfu: float, devices: int = 1) -> float:
    """Wall time of ``flops`` at ``mfu`` of ``devices`` devices' dense peak in ``dtype`` (a CPU's processes share
    its one peak)."""
    peak = device.peak["bfloat16" if dtype != "float32" else "float32"]
    return flops / (mfu * peak * (devices if device.gpu else 1))


def fits(peak: int, memory: int) -> str:
    """"fits" (even an estimate ``TOLERANCE`` too low would fit), "does not fit" (over even if the estimate were
    ``TOLERANCE`` too high) or "tight" (in between: it may run out of memory)."""
    if peak <= memory * (1 - TOLERANCE):
        return "fits"
    if peak > memory * (1 + TOLERANCE):
        return "does not fit"
    return "tight"


def human(n: float) -> str:
    """Bytes in GiB (or MiB below 1 GiB)."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 2**20:.0f} MiB"


def duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"
