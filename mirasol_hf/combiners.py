"""Combiners: fuse one chunk's video and audio tokens into `m` tokens, `combine(...) -> (B, T, m, d)`.

Every combiner starts from the same fused token set (`MirasolCombiner.chunk_tokens`): both modalities projected to
the combiner width, tagged with a learned modality embedding, and a chunk without frames or without audio replaced
by a learned "no video" / "no audio" embedding rather than by zeros that would look like black frames or silence.

Four combiners, picked by `combiner_type` (`COMBINERS`): "transformer" (the paper's main one), "ttm" (Token Turing
Machine: a memory carried from chunk to chunk), "perceiver" (learned queries cross-attend) and "cls" (learned tokens
read out). All are causal in time: chunk t's output depends on chunks <= t only. `combine_streaming` continues a
stream from the state a previous call returned, which is how `MirasolModel.encode_media_chunk` encodes chunk by chunk.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_mirasol import MirasolCombinerConfig
from .layers import MirasolAttention, MirasolEncoder, MirasolMLP, additive_mask


class MirasolCombiner(nn.Module):
    """Interface and shared input stage of all combiners."""

    def __init__(self, config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int):
        super().__init__()
        self.config = config
        self.video_projection = nn.Linear(video_hidden_size, config.hidden_size)
        self.audio_projection = nn.Linear(audio_hidden_size, config.hidden_size)
        self.video_type_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.audio_type_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.no_video_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.no_audio_embedding = nn.Parameter(torch.zeros(config.hidden_size))

    def chunk_tokens(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        """(B, T, Nv, dv) and (B, T, Na, da) with (B, T) masks -> fused tokens (B, T, Nv + Na, d)."""
        video = self.video_projection(video_tokens)
        audio = self.audio_projection(audio_tokens)
        video = torch.where(video_chunk_mask[:, :, None, None], video, self.no_video_embedding) + self.video_type_embedding
        audio = torch.where(audio_chunk_mask[:, :, None, None], audio, self.no_audio_embedding) + self.audio_type_embedding
        return torch.cat([video, audio], dim=2)

    def combine(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        """Returns the combined features x: (B, T, m, d)."""
        raise NotImplementedError

    def combine_streaming(
        self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask, state=None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`combine` for chunks that continue a stream: takes the state the previous call returned (None at the start)
        and returns x (B, T, m, d) with the state to pass on. Combiners that see each chunk alone carry None.
        """
        return self.combine(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask), None

    def forward(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        return self.combine(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)


class MirasolTransformerCombiner(MirasolCombiner):
    """The paper's combiner: a transformer over [video; audio] of a chunk, keeping the last m outputs.

    With `attention_type="causal"` each token sees only those before it, so the last m have seen the whole chunk;
    with "full" every token sees every other. Only the last m outputs are kept, so the last layer runs only those
    m tokens as queries (over all tokens as keys and values): the same outputs for less work.
    """

    def __init__(self, config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int):
        super().__init__(config, video_hidden_size, audio_hidden_size)
        self.encoder = MirasolEncoder(config)

    def combine(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        tokens = self.chunk_tokens(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)
        batch, num_chunks, length, width = tokens.shape
        m = self.config.num_output_tokens
        if length < m:
            raise ValueError(f"a chunk has {length} video + audio tokens, fewer than num_output_tokens={m}")
        causal = self.config.attention_type == "causal"
        sdpa_causal = causal and self.config._attn_implementation == "sdpa"  # SDPA's own mask, never built
        mask = kept_rows_mask = None
        if causal:
            allowed = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
            kept_rows_mask = additive_mask(allowed[None, None, -m:], tokens.dtype)  # (1, 1, m, L)
            if not sdpa_causal:
                mask = additive_mask(allowed[None, None], tokens.dtype)  # (1, 1, L, L)
        hidden = tokens.reshape(batch * num_chunks, length, width)  # (B*T, L, d)
        layers = list(self.encoder.layers)
        for layer in layers[:-1]:
            hidden = layer(hidden, attention_mask=mask, is_causal=sdpa_causal)
        kept = layers[-1](hidden, attention_mask=kept_rows_mask, query_length=m) if layers else hidden[:, -m:]
        return self.encoder.norm(kept).reshape(batch, num_chunks, m, width)  # (B*T, m, d) -> (B, T, m, d)


class MirasolTokenLearner(nn.Module):
    """TokenLearner v1.1 (the version TTM uses): `num_tokens` learned soft selections, (B, N, d) -> (B, S, d).

    An MLP scores every input token for each output slot; a softmax over the inputs turns a slot's scores into
    weights, and the slot's token is the weighted sum of the inputs.
    """

    def __init__(self, hidden_size: int, num_tokens: int, bottleneck_size: int, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.score_hidden = nn.Linear(hidden_size, bottleneck_size)
        self.act_fn = ACT2FN[hidden_act]
        self.score_output = nn.Linear(bottleneck_size, num_tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        scores = self.score_output(self.act_fn(self.score_hidden(self.norm(tokens))))  # (B, N, S)
        # Softmax in float32: a slot may spread over hundreds of tokens, where half precision loses the small weights.
        weights = scores.float().softmax(dim=1).to(tokens.dtype)  # each slot: a distribution over the N inputs
        return weights.transpose(1, 2) @ tokens  # (B, S, N) @ (B, N, d) -> (B, S, d)


class _TTMProcessConfig:
    """The combiner config as the TTM's process transformer sees it: its own sizes, the rest shared.

    Attention reads `_attn_implementation` from its config at call time; it is looked up on the combiner config, so
    `model.set_attn_implementation(...)` reaches the process transformer too.
    """

    def __init__(self, config: MirasolCombinerConfig):
        self._combiner_config = config
        self.hidden_size = config.ttm_process_hidden_size
        self.num_hidden_layers = config.ttm_process_num_layers
        self.num_attention_heads = config.ttm_process_num_heads
        self.head_dim = config.ttm_process_head_dim
        self.intermediate_size = config.ttm_process_intermediate_size
        self.hidden_act = config.hidden_act
        self.layer_norm_eps = config.layer_norm_eps
        self.attention_dropout = config.attention_dropout
        self.hidden_dropout = config.hidden_dropout

    @property
    def _attn_implementation(self):
        return self._combiner_config._attn_implementation


class MirasolTTMProcessUnit(nn.Module):
    """The TTM's process transformer: (B, r, d) read tokens -> (B, r, d) processed tokens.

    It runs at `ttm_process_hidden_size`, with linear maps in and out when that differs from the combiner width.
    """

    def __init__(self, config: MirasolCombinerConfig):
        super().__init__()
        width = config.ttm_process_hidden_size
        same_width = width == config.hidden_size
        self.input_projection = nn.Identity() if same_width else nn.Linear(config.hidden_size, width)
        self.encoder = MirasolEncoder(_TTMProcessConfig(config))
        self.output_projection = nn.Identity() if same_width else nn.Linear(width, config.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.output_projection(self.encoder(self.input_projection(tokens)))


class MirasolTTMCombiner(MirasolCombiner):
    """Token Turing Machine (Ryoo et al., CVPR 2023) as the combiner: a memory of k tokens carried chunk to chunk.

    At chunk t, with memory M (k tokens, learned at t=0) and the chunk's tokens I:
    read Z = TokenLearner_r([M; I]); process O = Transformer(Z); write M' = TokenLearner_k([M; I; O]);
    output x_t = TokenLearner_m(O), or O itself when r == m. Memory and processed tokens carry a learned type
    embedding so the TokenLearners can tell them from the chunk's tokens. Memory is the only path between chunks,
    so x_t depends on chunks <= t; a chunk with neither video nor audio leaves the memory unchanged.
    """

    def __init__(self, config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int):
        super().__init__(config, video_hidden_size, audio_hidden_size)
        width = config.hidden_size

        def token_learner(num_tokens: int) -> MirasolTokenLearner:
            return MirasolTokenLearner(
                width, num_tokens, config.ttm_token_learner_hidden_size, config.hidden_act, config.layer_norm_eps
            )

        self.initial_memory = nn.Parameter(torch.zeros(config.ttm_memory_tokens, width))
        self.memory_type_embedding = nn.Parameter(torch.zeros(width))
        self.processed_type_embedding = nn.Parameter(torch.zeros(width))
        self.read_learner = token_learner(config.ttm_read_tokens)
        self.process_unit = MirasolTTMProcessUnit(config)
        self.write_learner = token_learner(config.ttm_memory_tokens)
        # The processed tokens are the output; a TokenLearner brings r of them to m when the counts differ.
        same_count = config.ttm_read_tokens == config.num_output_tokens
        self.output_learner = None if same_count else token_learner(config.num_output_tokens)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The memory before the first chunk: (B, k, d)."""
        return self.initial_memory.expand(batch_size, -1, -1)

    def step(self, chunk_tokens: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk: tokens (B, N, d) and memory (B, k, d) -> output (B, m, d) and the next memory (B, k, d)."""
        read_source = torch.cat([memory + self.memory_type_embedding, chunk_tokens], dim=1)  # (B, k + N, d)
        processed = self.process_unit(self.read_learner(read_source))  # (B, r, d)
        write_source = torch.cat([read_source, processed + self.processed_type_embedding], dim=1)  # (B, k + N + r, d)
        next_memory = self.write_learner(write_source)  # (B, k, d)
        output = processed if self.output_learner is None else self.output_learner(processed)  # (B, m, d)
        return output, next_memory

    def combine(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        return self.combine_streaming(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)[0]

    def combine_streaming(
        self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask, state=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the chunks in order from memory `state` (None: the learned initial memory); returns x and the memory."""
        tokens = self.chunk_tokens(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)  # (B, T, N, d)
        memory = self.initial_state(tokens.shape[0]) if state is None else state
        has_media = (video_chunk_mask | audio_chunk_mask)[:, :, None, None]  # (B, T, 1, 1)
        outputs = []
        for chunk in range(tokens.shape[1]):
            output, next_memory = self.step(tokens[:, chunk], memory)
            # A chunk without media (padding) must not reach later chunks, as in the latent model's mask.
            memory = torch.where(has_media[:, chunk], next_memory, memory)
            outputs.append(output)
        return torch.stack(outputs, dim=1), memory  # (B, T, m, d), (B, k, d)


class MirasolPerceiverLayer(GradientCheckpointingLayer):
    """Queries cross-attend to a chunk's tokens, then an MLP; pre-LayerNorm, residual."""

    def __init__(self, config: MirasolCombinerConfig):
        super().__init__()
        self.query_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.context_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attn = MirasolAttention(
            config,
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            head_dim=config.head_dim,
            dropout=config.attention_dropout,
        )
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MirasolMLP(config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        attended, _ = self.cross_attn(self.query_norm(queries), key_value_states=self.context_norm(context))
        queries = queries + attended
        return queries + self.mlp(self.mlp_norm(queries))


class MirasolPerceiverCombiner(MirasolCombiner):
    """m learned queries cross-attend to the chunk's [video; audio] tokens (`num_hidden_layers` layers)."""

    def __init__(self, config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int):
        super().__init__(config, video_hidden_size, audio_hidden_size)
        self.query_embedding = nn.Parameter(torch.zeros(config.num_output_tokens, config.hidden_size))
        self.layers = nn.ModuleList(MirasolPerceiverLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def combine(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        tokens = self.chunk_tokens(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)
        batch, num_chunks, length, width = tokens.shape
        context = tokens.reshape(batch * num_chunks, length, width)  # (B*T, N, d)
        queries = self.query_embedding.expand(batch * num_chunks, -1, -1)  # (B*T, m, d)
        for layer in self.layers:
            queries = layer(queries, context)
        return self.norm(queries).reshape(batch, num_chunks, -1, width)  # (B, T, m, d)


class MirasolCLSCombiner(MirasolCombiner):
    """m learned tokens appended to the chunk's [video; audio] tokens, a transformer (full attention), read out."""

    def __init__(self, config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int):
        super().__init__(config, video_hidden_size, audio_hidden_size)
        self.cls_embedding = nn.Parameter(torch.zeros(config.num_output_tokens, config.hidden_size))
        self.encoder = MirasolEncoder(config)

    def combine(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        tokens = self.chunk_tokens(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)
        batch, num_chunks, length, width = tokens.shape
        m = self.config.num_output_tokens
        cls_tokens = self.cls_embedding.expand(batch * num_chunks, -1, -1)  # (B*T, m, d)
        hidden = torch.cat([tokens.reshape(batch * num_chunks, length, width), cls_tokens], dim=1)  # (B*T, N + m, d)
        outputs = self.encoder(hidden)
        return outputs[:, -m:].reshape(batch, num_chunks, m, width)  # (B, T, m, d)


COMBINERS = {
    "transformer": MirasolTransformerCombiner,
    "ttm": MirasolTTMCombiner,
    "perceiver": MirasolPerceiverCombiner,
    "cls": MirasolCLSCombiner,
}


def build_combiner(config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int) -> MirasolCombiner:
    """The combiner named by `config.combiner_type`."""
    if config.combiner_type not in COMBINERS:
        raise ValueError(f"unknown combiner_type {config.combiner_type!r}; available: {sorted(COMBINERS)}")
    return COMBINERS[config.combiner_type](config, video_hidden_size, audio_hidden_size)
