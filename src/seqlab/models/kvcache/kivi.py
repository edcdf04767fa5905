"""KIVI (Liu et al. 2024): keys quantized per channel, values per token, the latest tokens kept exact.

Keys have a few channels of large magnitude that persist across tokens, so a key group is G consecutive
tokens of one channel: the outlier channel gets its own scale. Values have no such channels and are
mixed token by token by the attention weights, so a value group is G consecutive channels of one token.
The newest tokens stay in a 16-bit residual: a key group can only be formed once G tokens have arrived,
and the recent tokens are the ones attention weighs most.

What is stored is the real thing: codes bit-packed into uint8 (4 per byte at 2 bits, 2 at 4 bits),
scales and zero points in float16. Dequantization happens only while attending.
"""

from __future__ import annotations

import torch

from seqlab.core.errors import BadInput
from seqlab.models.kvcache.base import EXACT_DTYPE, Cache
from seqlab.models.kvcache.bitpack import pack_last_dim, unpack_last_dim

SCALE_DTYPE = torch.float16
BITS = (2, 4)


# -- quantization --------------------------------------------------------------------
def quantize(x: torch.Tensor, bits: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min/max quantization, one group along `dim`: codes (uint8, x's shape) and the group's
    scale and zero point (float16, size 1 along `dim`), with x ~ zero + codes * scale."""
    x = x.float()
    lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
    scale = ((hi - lo) / ((1 << bits) - 1)).to(SCALE_DTYPE)
    zero = lo.to(SCALE_DTYPE)
    # The codes are rounded against the stored (float16) scale and zero, so dequantizing with what is
    # stored is off by at most half a step. A constant group has scale 0: every code is 0 there.
    step = scale.float()
    codes = ((x - zero.float()) / step.masked_fill(step == 0, 1.0)).round()
    return codes.clamp(0, (1 << bits) - 1).to(torch.uint8), scale, zero


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """float32 values zero + codes * scale (scale and zero broadcast over their group)."""
    return zero.float() + codes.float() * scale.float()


# -- the cache ---------------------------------------------------------------------------------------
class KIVICache(Cache):
    """KIVI at `bits` (2 or 4), `group` G, `residual` R.

    Keys: new keys join the exact residual; while it holds R + G tokens or more, its oldest G are
    quantized as one group, so every key group spans exactly G tokens and the residual holds
    min(T, R + (T - R) mod G) of T tokens (between R and R + G - 1 once R have come).
    Values: while the exact residual holds more than R tokens, its oldest are quantized one token at
    a time, so it holds min(T, R).
    """

    def __init__(self, batch: int, n_heads: int, head_dim: int, bits: int = 2, group: int = 32,
                 residual: int = 128):
        if bits not in BITS:
            raise BadInput(f"KIVI quantizes to 2 or 4 bits, not {bits!r}")
        if group < 1:
            raise BadInput(f"KIVI's group must be at least 1 token or channel, not {group}")
        if residual < 0:
            raise BadInput(f"KIVI's exact residual cannot hold a negative number of tokens ({residual})")
        if head_dim % group:
            raise BadInput(f"KIVI groups value channels by {group}, which does not divide head_dim {head_dim}; "
                           f"pick a group that divides it")
        super().__init__(batch, n_heads, head_dim)
        self.bits, self.group, self.residual = bits, group, residual
        B, H, hd, G = batch, n_heads, head_dim, group
        per_byte = 8 // bits
        self.key_group_bytes = -(-G * hd // per_byte)  # one group's G x hd codes, packed
        self.value_token_bytes = -(-hd // per_byte)  # one token's hd codes, packed
        self.k_codes = torch.zeros(B, H, 0, self.key_group_bytes, dtype=torch.uint8)  # (B, H, groups, bytes)
        self.k_scale = torch.zeros(B, H, 0, hd, dtype=SCALE_DTYPE)  # (B, H, groups, hd)
        self.k_zero = torch.zeros_like(self.k_scale)
        self.k_exact = torch.zeros(B, H, 0, hd, dtype=EXACT_DTYPE)  # (B, H, tokens, hd)
        self.v_codes = torch.zeros(B, H, 0, self.value_token_bytes, dtype=torch.uint8)  # (B, H, tokens, bytes)
        self.v_scale = torch.zeros(B, H, 0, hd // G, dtype=SCALE_DTYPE)  # (B, H, tokens, hd / G)
        self.v_zero = torch.zeros_like(self.v_scale)
        self.v_exact = torch.zeros(B, H, 0, hd, dtype=EXACT_DTYPE)

    # -- counts --------------------------------------------------------------------------------------
    @property
    def quantized_keys(self) -> int:
        return self.k_codes.shape[2] * self.group

    @property
    def quantized_values(self) -> int:
        return self.v_codes.shape[2]

    # -- storing -------------------------------------------------------------------------------------
    def store(self, k, v):
        self._move_to(k.device)
        self.k_exact = torch.cat([self.k_exact, k.to(EXACT_DTYPE)], 2)
        self.v_exact = torch.cat([self.v_exact, v.to(EXACT_DTYPE)], 2)
        # Everything that overflows the residual is quantized at once: a prompt in one go, and a
        # decode step at most one key group and one value token.
        n_groups = max(self.k_exact.shape[2] - self.residual, 0) // self.group
        if n_groups:
            n = n_groups * self.group
            self._quantize_keys(self.k_exact[:, :, :n])
            self.k_exact = self.k_exact[:, :, n:]
        n = max(self.v_exact.shape[2] - self.residual, 0)
        if n:
            self._quantize_values(self.v_exact[:, :, :n])
            self.v_exact = self.v_exact[:, :, n:]

    def _quantize_keys(self, keys: torch.Tensor) -> None:
        """Oldest exact keys (B, H, n * G, hd) into n groups of G tokens, one scale per channel."""
        B, H, n, hd = keys.shape
        blocks = keys.reshape(B, H, n // self.group, self.group, hd)
        codes, scale, zero = quantize(blocks, self.bits, dim=3)
        packed = pack_last_dim(codes.reshape(B, H, n // self.group, self.group * hd), self.bits)
        self.k_codes = torch.cat([self.k_codes, packed], 2)
        self.k_scale = torch.cat([self.k_scale, scale.squeeze(3)], 2)
        self.k_zero = torch.cat([self.k_zero, zero.squeeze(3)], 2)

    def _quantize_values(self, values: torch.Tensor) -> None:
        """Oldest exact values (B, H, n, hd), each token in groups of G channels."""
        B, H, n, hd = values.shape
        groups = values.reshape(B, H, n, hd // self.group, self.group)
        codes, scale, zero = quantize(groups, self.bits, dim=4)
        self.v_codes = torch.cat([self.v_codes, pack_last_dim(codes.reshape(B, H, n, hd), self.bits)], 2)
        self.v_scale = torch.cat([self.v_scale, scale.squeeze(4)], 2)
        self.v_zero = torch.cat([self.v_zero, zero.squeeze(4)], 2)

    def _move_to(self, device) -> None:
        for name, t in self.stored().items():
            setattr(self, name, t.to(device))

    # -- reading -------------------------------------------------------------------------------------
    def _keys(self) -> torch.Tensor:
        """Every key (B, H, T, hd) in float32, in the order the tokens came: groups, then the residual."""
        B, H, n_groups, _ = self.k_codes.shape
        hd, G = self.head_dim, self.group
        codes = unpack_last_dim(self.k_codes, self.bits, G * hd).reshape(B, H, n_groups, G, hd)
        old = dequantize(codes, self.k_scale[:, :, :, None], self.k_zero[:, :, :, None])
        return torch.cat([old.reshape(B, H, n_groups * G, hd), self.k_exact.float()], 2)

    def _values(self) -> torch.Tensor:
        """Every value (B, H, T, hd) in float32, in the order the tokens came."""
        B, H, n, _ = self.v_codes.shape
        hd, G = self.head_dim, self.group
        codes = unpack_last_dim(self.v_codes, self.bits, hd).reshape(B, H, n, hd // G, G)
        old = dequantize(codes, self.v_scale[..., None], self.v_zero[..., None])
        return torch.cat([old.reshape(B, H, n, hd), self.v_exact.float()], 2)

    def past_logits(self, q):
        return (q @ self._keys().to(q.dtype).transpose(-1, -2)) * self.scale

    def past_mix(self, p):
        return p @ self._values().to(p.dtype)

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values (B, H, T, hd) attention sees, dequantized: the reference."""
        return self._keys(), self._values()

    def stored(self):
        return {"k_codes": self.k_codes, "k_scale": self.k_scale, "k_zero": self.k_zero, "k_exact": self.k_exact,
                "v_codes": self.v_codes, "v_scale": self.v_scale, "v_zero": self.v_zero, "v_exact": self.v_exact}
