"""Beam search and diverse (group) beam search over a decoder, on its KV cache.

Beam search keeps the `n_beams` likeliest continuations of each prompt. Diverse beam search (Vijayakumar et
al. 2018) splits them into `n_groups` groups decoded one after another at each step; a group's candidates lose
`diversity` per earlier group that chose the same token at this step (the Hamming diversity term), so groups
spread over different continuations. As in transformers' group beam search, the penalty enters the running
score that ranks beams; the model's own log-probability of each sequence is kept beside it, unpenalised.

A sequence that writes `eos` is finished: it joins its group's pool of finished hypotheses if it ranks among
the group's best `beams per group` candidates at that step. Decoding runs for `max_new_tokens` steps; at the end
each group returns its best hypotheses, finished or not, by score / length ** length_penalty (the length counts
the generated tokens, eos included). With one beam, one group and length_penalty 0 this is greedy decoding (with a
length penalty a longer live beam can outrank greedy's early end: its mean log-probability may be higher).

`use_cache=False` recomputes every step from the whole sequence: the reference the cached path is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.core.errors import BadInput


@dataclass
class Beams:
    tokens: torch.Tensor  # (B, K, max_new_tokens) generated ids, eos-filled after a finished sequence's eos
    logprob: torch.Tensor  # (B, K) the model's log-probability (natural log) of each sequence, eos included
    score: torch.Tensor  # (B, K) the ranking score: penalised running score / length ** length_penalty
    length: torch.Tensor  # (B, K) generated tokens, eos included

    def best(self) -> torch.Tensor:
        """(B, max_new_tokens): the top-scoring sequence of each prompt."""
        top = self.score.argmax(-1)
        return self.tokens[torch.arange(len(top)), top]


@dataclass
class _Hypothesis:
    score: float
    logprob: float
    tokens: list[int]


def _check(n_beams: int, n_groups: int, diversity: float, max_new_tokens: int) -> int:
    if n_beams < 1 or n_groups < 1 or n_beams % n_groups:
        raise BadInput(f"n_beams ({n_beams}) must be a positive multiple of n_groups ({n_groups})")
    if diversity < 0:
        raise BadInput(f"diversity must be >= 0, got {diversity}")
    if max_new_tokens < 1:
        raise BadInput("max_new_tokens must be at least 1")
    return n_beams // n_groups


@torch.no_grad()
def beam_search(model, prompt: torch.Tensor, prompt_pos: torch.Tensor, pos_base: torch.Tensor, max_new_tokens: int,
                eos: int, n_beams: int = 4, n_groups: int = 1, diversity: float = 0.0, length_penalty: float = 1.0,
                use_cache: bool = True) -> Beams:
    """Beams (B, n_beams) for prompts of equal length: prompt, prompt_pos (B, Lp); pos_base (B,) the position id
    of the first new token (as Decoder.generate takes them)."""
    per_group = _check(n_beams, n_groups, diversity, max_new_tokens)
    B, Lp = prompt.shape
    K, V, dev = n_beams, model.vocab_size, prompt.device
    rows = torch.arange(B, device=dev).repeat_interleave(K)  # beam row r = b * K + k belongs to prompt b
    ctx_tokens, ctx_pos = prompt[rows], prompt_pos[rows]
    caches = model.new_caches(B * K, Lp + max_new_tokens, dev) if use_cache else None
    logits = model(ctx_tokens, ctx_pos, caches, start=0)[:, -1] if use_cache else None
    # Only the first beam of each group starts alive: the others would repeat it.
    score = torch.full((B, K), float("-inf"), device=dev)
    score[:, ::per_group] = 0.0
    logprob = torch.zeros(B, K, device=dev)
    seq = torch.zeros(B * K, 0, dtype=torch.long, device=dev)
    pools: list[list[list[_Hypothesis]]] = [[[] for _ in range(n_groups)] for _ in range(B)]
    for t in range(max_new_tokens):
        if not use_cache:
            pos = torch.cat([ctx_pos, pos_base[rows, None] + torch.arange(t, device=dev)], 1)
            logits = model(torch.cat([ctx_tokens, seq], 1), pos)[:, -1]
        logp = logits.float().log_softmax(-1).view(B, K, V)
        chosen = torch.zeros(B, V, device=dev)  # tokens picked at this step by earlier groups
        new_parent = torch.empty(B, K, dtype=torch.long, device=dev)
        new_token = torch.empty(B, K, dtype=torch.long, device=dev)
        new_score, new_logprob = torch.empty(B, K, device=dev), torch.empty(B, K, device=dev)
        for g in range(n_groups):
            beams = slice(g * per_group, (g + 1) * per_group)
            cand = score[:, beams, None] + logp[:, beams] - diversity * chosen[:, None]  # (B, per_group, V)
            top, flat = cand.reshape(B, -1).topk(2 * per_group, dim=-1)  # (B, 2 per_group)
            parent, token = flat // V + g * per_group, flat % V
            cand_logprob = logprob.gather(1, parent) + logp.reshape(B, -1).gather(1, parent * V + token)
            is_eos = token == eos
            for b, j in (is_eos[:, :per_group]).nonzero().tolist():  # finished, and among the group's best
                if torch.isfinite(top[b, j]):
                    tokens = seq[b * K + parent[b, j]].tolist() + [eos]
                    _offer(pools[b][g], _Hypothesis(float(top[b, j]) / (t + 1) ** length_penalty,
                                                    float(cand_logprob[b, j]), tokens), per_group)
            # The best per_group candidates that do not end: at most per_group of the 2 per_group end (one eos per
            # parent), so there are always enough.
            keep = is_eos.to(torch.int8).argsort(dim=-1, stable=True)[:, :per_group]
            new_parent[:, beams], new_token[:, beams] = parent.gather(1, keep), token.gather(1, keep)
            new_score[:, beams], new_logprob[:, beams] = top.gather(1, keep), cand_logprob.gather(1, keep)
            chosen.scatter_add_(1, new_token[:, beams], torch.isfinite(new_score[:, beams]).float())
        score, logprob = new_score, new_logprob
        parent_rows = (torch.arange(B, device=dev)[:, None] * K + new_parent).reshape(-1)
        seq = torch.cat([seq[parent_rows], new_token.reshape(-1, 1)], 1)
        if use_cache and t < max_new_tokens - 1:
            model.select_cache_rows(caches, parent_rows)
            logits = model(new_token.reshape(-1, 1), (pos_base[rows] + t)[:, None], caches, start=Lp + t)[:, -1]
    return _finish(pools, seq.view(B, K, -1), score, logprob, max_new_tokens, length_penalty, per_group, eos)


def _offer(pool: list[_Hypothesis], h: _Hypothesis, size: int) -> None:
    pool.append(h)
    pool.sort(key=lambda x: -x.score)
    del pool[size:]


def _finish(pools, seq, score, logprob, T, length_penalty, per_group, eos) -> Beams:
    B, K, _ = seq.shape
    out = torch.full((B, K, T), eos, dtype=torch.long)
    # A slot stays at -inf and length 0 where a group has fewer hypotheses than beams (a vocabulary smaller than that).
    out_logprob, out_score = torch.full((B, K), float("-inf")), torch.full((B, K), float("-inf"))
    out_length = torch.zeros(B, K, dtype=torch.long)
    for b in range(B):
        for g, pool in enumerate(pools[b]):
            beams = range(g * per_group, (g + 1) * per_group)
            alive = [_Hypothesis(float(score[b, k]) / T ** length_penalty, float(logprob[b, k]), seq[b, k].tolist())
                     for k in beams if torch.isfinite(score[b, k])]
            ranked = sorted(pool + alive, key=lambda h: -h.score)[:per_group]
            for k, h in zip(beams, ranked):
                out[b, k, :len(h.tokens)] = torch.tensor(h.tokens)
                out_logprob[b, k], out_score[b, k], out_length[b, k] = h.logprob, h.score, len(h.tokens)
    return Beams(out.to(seq.device), out_logprob, out_score, out_length)
