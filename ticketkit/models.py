"""Text classifiers: a registry and one factory, timm-style.

Every model takes right-padded token ids [B, L] and true lengths [B] and returns logits [B, 2].
Initialisation is fully determined by the seed: `create_model(..., seed=s)` twice gives identical weights.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import TicketkitError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(cls):
        MODELS[name] = cls
        return cls
    return deco


class Conv1dNLC(nn.Conv1d):
    """nn.Conv1d (same parameters, same maths) over [B, L, C] input, run as a 2-D convolution in channels-last
    memory: [B, L, C] already is that layout, so no transpose copy is made and oneDNN gets its preferred NHWC kernel
    (bench/RESULTS.md, section "cnnforward"). Returns [B, F, L'] like nn.Conv1d (with channels-last strides).
    A module rather than a bare F.conv2d call so that forward hooks (torch.nn.utils.prune) still fire."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.unsqueeze(1).permute(0, 3, 1, 2), self.weight.unsqueeze(2), self.bias).squeeze(2)


EMBED_INITS = ("xavier", "normal", "uniform")


def init_embedding(weight: torch.Tensor, how: str) -> None:
    """The embedding's starting weights: `xavier` (Xavier-normal over the [V, E] matrix, std ~0.009 at V=25k),
    `normal` (N(0, 1), nn.Embedding's own default) or `uniform` (U(-0.25, 0.25), as in Kim 2014). The scale matters:
    a sparse random ticket over a tiny embedding feeds its filters pre-activations of ~1e-3, which one Adam step can
    push below zero for good (dead ReLUs). The default is chosen by measurement (config.ModelHparams.embed_init)."""
    if how == "xavier":
        nn.init.xavier_normal_(weight)
    elif how == "normal":
        nn.init.normal_(weight, 0.0, 1.0)
    elif how == "uniform":
        nn.init.uniform_(weight, -0.25, 0.25)
    else:
        raise TicketkitError(f"model.embed_init: unknown {how!r}; choose one of {', '.join(EMBED_INITS)}")
    with torch.no_grad():
        weight[0].zero_()  # [PAD]: padded positions contribute nothing


class KimCNN(nn.Module):
    """Kim (2014): embedding, parallel convolutions of widths 3/4/5, max-over-time pooling, dropout, linear."""
    output_layer = "fc.weight"  # pruned at prune.output_rate x the rate
    dead_rule = "zero"  # a filter is dead when its pooled ReLU output is 0 on every review (it never fires)
    stacked_form = True  # ticketkit.arms can train several arms of it as one model (see `supports`)

    def __init__(self, vocab_size: int, embed_dim: int = 128, num_filters: int = 100, filter_widths=(3, 4, 5),
                 dropout: float = 0.5, num_classes: int = 2, embed_init: str = "xavier", **_):
        super().__init__()
        self.embed_init = embed_init
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(Conv1dNLC(embed_dim, num_filters, w) for w in filter_widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_filters * len(filter_widths), num_classes)
        self.min_len = max(filter_widths)

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():  # in order, so each parameter's draws sit at a fixed place in the stream
            if p is self.embedding.weight:
                init_embedding(p, self.embed_init)
            elif p.dim() >= 2:
                nn.init.xavier_normal_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(ids, lengths)))

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The pooled features [B, F] the output layer reads (ReLU'd max over time; see ticketkit.diagnostics)."""
        x = self.embedding(ids)
        # Under autocast each of the three convs would cast (and transpose to contiguous) the fp32 embedding output
        # on its own, and cast its gradient back; doing both once here is cheaper (bench/RESULTS.md, section "cnnforward").
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        if x.shape[1] < self.min_len:  # a batch of very short reviews: pad so every filter fits
            x = F.pad(x, (0, 0, 0, self.min_len - x.shape[1]))  # x is [B, L, E]: the convs take it as it is
        # Max over time includes padded positions; their embedding row is zero, as in Kim's implementation.
        # relu(max(.)) == max(relu(.)) since relu is monotone, so ReLU runs on [B, F] instead of [B, F, L]; and
        # max with indices back-propagates by a gather where amax compares the whole map (1.10x an epoch, same section).
        # The pooling itself is adaptive_max_pool1d: the same maximum as .max(dim=2), its gradient routed to one arg-max
        # position the same way (a tie may pick another of the tied positions), but its
        # kernel reads the channels-last conv output in place, forward and backward in ~0.3 ms where max with
        # indices takes ~2.5 ms per conv (1.07-1.14x an epoch, sections "engine-steps" and "cnnforward").
        return F.relu(torch.cat([F.adaptive_max_pool1d(conv(x), 1).squeeze(2) for conv in self.convs], dim=1))

    def emptied_features(self) -> torch.Tensor:
        """[F] bool: filters with no weight left (pruned weights are exactly zero), the structure IMP removed."""
        return torch.cat([(c.weight.reshape(c.weight.shape[0], -1) == 0).all(1) for c in self.convs])


class LSTMClassifier(nn.Module):
    """One-layer LSTM over right-padded input, pooled over the real tokens only (mean or max).

    Reading only the last state can fail to learn on long reviews; pooling is safer. Padding runs through the
    LSTM (it is causal, so real positions never see it) rather than pack_padded_sequence, which leaves
    oneDNN's fast path and is 3-7x slower on CPU.
    """
    output_layer = "fc.weight"
    dead_rule = "constant"  # a unit is dead when its pooled output is the same for every review (carries nothing)
    stacked_form = True

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 128, pooling: str = "mean",
                 dropout: float = 0.5, num_classes: int = 2, embed_init: str = "xavier", **_):
        super().__init__()
        self.embed_init = embed_init
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, num_classes)
        self.pooling = pooling

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p is self.embedding.weight:
                init_embedding(p, self.embed_init)
            elif "weight_hh" in name:
                for g in p.data.chunk(4, dim=0):  # orthogonal per gate, so each recurrent map is norm-preserving
                    nn.init.orthogonal_(g)
            elif p.dim() >= 2:
                nn.init.xavier_normal_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(ids, lengths)))

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The pooled hidden state [B, H] the output layer reads."""
        out, _ = self.lstm(self.embedding(ids))  # [B, L, H]
        real = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).unsqueeze(2)
        if self.pooling == "max":
            return out.masked_fill(~real, float("-inf")).amax(dim=1)
        return (out * real).sum(dim=1) / lengths.clamp(min=1)[:, None].to(out.dtype)

    def emptied_features(self) -> torch.Tensor:
        """[H] bool: hidden units with no input or recurrent weight left in any gate (pruned weights are zero)."""
        h = self.lstm.hidden_size
        rows = torch.cat([self.lstm.weight_ih_l0, self.lstm.weight_hh_l0], dim=1).reshape(4, h, -1)
        return (rows == 0).all(2).all(0)


class EncoderLayer(nn.Module):
    """One pre-LayerNorm encoder block (Xiong et al. 2020: trains from scratch at a fixed learning rate without the
    warm-up a post-LN block needs). The attention is four nn.Linear projections, not nn.MultiheadAttention's fused
    in_proj_weight, so q, k, v and out are each their own prunable layer with their own rate and density."""

    linear_attention = False  # SynFlow scores with (q k^T) v over the real keys: softmax has no path product

    def __init__(self, d: int, heads: int, ff_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.norm2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff_dim)
        self.ff2 = nn.Linear(ff_dim, d)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; keep [B, 1, 1, L] True at real tokens: padded keys get no attention (key padding mask)."""
        b, n, d = x.shape
        h = self.norm1(x)
        q, k, v = (f(h).view(b, n, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        if self.linear_attention:  # ticketkit.prune_init (SynFlow): every q, k, v weight on a product path
            a = ((q @ k.transpose(-1, -2)) * keep) @ v / keep.sum(-1, keepdim=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
        return x + self.ff2(F.gelu(self.ff1(self.norm2(x))))


class TransformerClassifier(nn.Module):
    """A small Transformer encoder trained from scratch: token embedding + learned positions, `num_layers`
    pre-LN blocks, a final LayerNorm, mean pooling over the real tokens, dropout, linear.

    Dropout is the project's one dropout before the output layer (as for the CNN and LSTM), none inside the blocks:
    one regulariser, set in one place, for every architecture compared. Prunable: the embedding, every attention
    projection, both feed-forward layers and the output layer; the learned positions (one vector per position, not a
    projection) are not pruned (`not_pruned`). No stacked form: transfer trains its arms one by one."""
    output_layer = "fc.weight"
    dead_rule = "constant"  # a pooled feature is dead when it is the same for every review (carries nothing)
    stacked_form = False
    not_pruned = ("positions.weight",)

    def __init__(self, vocab_size: int, embed_dim: int = 128, num_heads: int = 4, num_layers: int = 2,
                 ff_dim: int = 512, max_positions: int = 512, dropout: float = 0.5, num_classes: int = 2,
                 embed_init: str = "xavier", **_):
        super().__init__()
        if embed_dim % num_heads:
            raise TicketkitError(f"model.embed_dim {embed_dim} must be a multiple of model.num_heads {num_heads}")
        self.embed_init = embed_init
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.positions = nn.Embedding(max_positions, embed_dim)
        self.layers = nn.ModuleList(EncoderLayer(embed_dim, num_heads, ff_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embed_dim, num_classes)

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():  # in order: each parameter's draws sit at a fixed place in the stream
            if p is self.embedding.weight:
                init_embedding(p, self.embed_init)
            elif p is self.positions.weight:
                nn.init.normal_(p, 0.0, 0.02)  # BERT's scale: of the order of the Xavier token embedding
            elif p.dim() >= 2:
                nn.init.xavier_normal_(p)  # every projection: q, k, v, out, ff1, ff2, fc
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(ids, lengths)))

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The mean over real tokens [B, D] of the last block's (normalised) output: what the output layer reads."""
        return self.encode(self.embedding(ids), lengths)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features() from the embedded tokens x [B, L, D] (SynFlow feeds an all-ones x here, prune_init.py)."""
        n = x.shape[1]
        if n > self.positions.num_embeddings:
            raise TicketkitError(f"a review of {n} tokens is longer than model.max_positions "
                                 f"{self.positions.num_embeddings}: lower --max-len or raise max_positions")
        real = torch.arange(n, device=x.device)[None, :] < lengths.clamp(min=1)[:, None]  # [B, L]
        x = x + self.positions.weight[:n].to(x.dtype)
        for layer in self.layers:
            x = layer(x, real[:, None, None, :])
        x = self.norm(x)
        return (x * real.unsqueeze(2)).sum(dim=1) / lengths.clamp(min=1)[:, None].to(x.dtype)

register_model("cnn")(KimCNN)
register_model("lstm")(LSTMClassifier)
register_model("transformer")(TransformerClassifier)


def supports(arch: str, feature: str) -> bool:
    """Whether a registered architecture declares `feature` (a class attribute `<feature>_form = True`), so callers
    ask the model instead of matching names. "stacked": ticketkit.arms has a stacked form of it (transfer trains a
    level's arms as one model only then; an architecture without one trains its arms one by one)."""
    return bool(getattr(MODELS.get(arch), f"{feature}_form", False))


def create_model(name: str, vocab_size: int, seed: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model. With a seed, the initial weights depend on nothing else."""
    if name not in MODELS:
        raise TicketkitError(f"unknown architecture {name!r}: choose one of {', '.join(sorted(MODELS))}")
    model = MODELS[name](vocab_size=vocab_size, **kwargs)
    # One thread while initialising: orthogonal_ goes through a LAPACK QR whose last bits depend on the thread
    # count, and compared arms (a worker process runs with 1 thread) must start from bit-identical weights.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model.reset_parameters()
        else:
            model.reset_parameters()
    finally:
        torch.set_num_threads(threads)
    return model


def model_kwargs(model_hp) -> dict:
    """The ModelHparams fields the factories take (architecture-specific ones are ignored by the others)."""
    from dataclasses import asdict

    d = asdict(model_hp)
    d.pop("arch")
    return d


def prunable_names(model: nn.Module, exclude=()) -> list[str]:
    """Every weight matrix or kernel: embedding, conv, LSTM input and recurrent, linear. Biases are not pruned."""
    exclude = (*exclude, *getattr(model, "not_pruned", ()))  # a model's own unpruned matrices (transformer: positions)
    names = [n for n, p in model.named_parameters() if p.dim() >= 2 and n not in exclude]
    unknown = set(exclude) - {n for n, _ in model.named_parameters()}
    if unknown:
        raise TicketkitError(f"prune.exclude names unknown parameter(s) {sorted(unknown)}; "
                             f"parameters are {[n for n, _ in model.named_parameters()]}")
    return names
