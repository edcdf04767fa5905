"""Small unsigned integers packed into uint8 tensors: any width from 1 to 16 bits end to end (`pack`), or
widths that divide 8 row by row along the last dimension (`pack_last_dim`, KIVI's 2- and 4-bit codes).

Lexico's ⌈log2 N⌉-bit atom indices use it: with N = 1,024 atoms an index needs 10 bits, not int16's 16.
The last byte is padded with zero bits; `unpack` needs the count to drop them.
"""

from __future__ import annotations

import math

import torch


def bits_for(n_values: int) -> int:
    """The bits an index into n_values items needs (at least 1)."""
    return max(1, math.ceil(math.log2(n_values)))


def packed_nbytes(n: int, bits: int) -> int:
    return math.ceil(n * bits / 8)


def pack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """values (n,) integers in [0, 2**bits) -> uint8 (ceil(n * bits / 8),), least significant bit first."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    v = values.reshape(-1).to(torch.int32)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 1 << bits):
        raise ValueError(f"values outside [0, {1 << bits}) cannot be packed in {bits} bits")
    stream = ((v[:, None] >> torch.arange(bits, device=v.device)) & 1).reshape(-1)  # (n * bits,)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).view(-1, 8)
    weights = (1 << torch.arange(8, device=v.device, dtype=torch.int32))
    return (stream * weights).sum(1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The first n values (int64) of a `pack`ed stream."""
    stream = ((packed.to(torch.int32)[:, None] >> torch.arange(8, device=packed.device)) & 1).reshape(-1)
    stream = stream[: n * bits].view(n, bits).to(torch.int64)
    return (stream << torch.arange(bits, device=packed.device)).sum(1)


def pack_last_dim(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (..., n) in 0..2^bits-1 packed along the last dim into uint8 (..., ceil(n / (8 // bits)))."""
    per_byte = 8 // bits
    n = codes.shape[-1]
    pad = -n % per_byte
    if pad:  # the last byte's spare slots hold zeros; `unpack_last_dim` is told n and drops them
        codes = torch.cat([codes, codes.new_zeros(*codes.shape[:-1], pad)], -1)
    shifts = torch.arange(per_byte, device=codes.device) * bits
    slots = codes.reshape(*codes.shape[:-1], codes.shape[-1] // per_byte, per_byte).long() << shifts
    return slots.sum(-1).to(torch.uint8)  # the slots' bits do not overlap, so the sum is their bitwise or


def unpack_last_dim(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The first n codes (..., n) as uint8 from bytes packed by `pack_last_dim`."""
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, device=packed.device) * bits
    slots = (packed.long()[..., None] >> shifts) & ((1 << bits) - 1)
    return slots.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)[..., :n].to(torch.uint8)
