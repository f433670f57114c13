"""Sequence parallel on N GPUs, by arithmetic: the 13B DiT at 544x960 x 21 latent frames (81 frames), N = 1, 2, 4, 8.

Per rank and per sampling step (one forward, batch 1, guidance 1.0, bf16), following magic141_core/parallel.py:

- tokens: L = ceil(Lv / N) video tokens (Lv = 21 x 34 x 60 = 42,840) plus all Lt text tokens (replicated; default
  402 = 146 VLM + 256 LLM, the most the model sees; it drops padding, so a short prompt has fewer).
- FLOP (2 per multiply-add): every linear of the 20 double and 40 single blocks on the rank's tokens,
  2 (L + Lt) (4 D^2 + 2 D M) per block (qkv 3D^2 + out D^2 + MLP 2 D M, M = 4 D; the single block's fused linears
  are the same count); attention 4 S^2 D / N per block (QK^T and AV over all S = N L + Lt tokens, the rank's H / N
  heads); plus what every rank repeats whole: patch embedding of all Lv tokens, token refiner, modulations, and the
  final layer on the rank's L tokens. Norms, RoPE and softmax are left out (elementwise, < 1 %).
- bytes: per attention two all-to-alls, q/k/v (3 L D values) and back (L + Lt) D values, of which (N-1)/N leave the
  rank; plus the final all-gather of (N-1) L x 64 values. bf16 = 2 bytes.
- bound: FLOP / peak + bytes / link. H100 SXM: 989 TFLOP/s dense bf16, NVLink 4 at 450 GB/s per direction (900 GB/s
  both ways). The all-to-alls are not overlapped with compute (each attention waits for its inputs), so the two add.
  Real runs reach perhaps 60-70 % of peak FLOP/s and ~80 % of link bandwidth.
- VAE: the spatial tiles the parallel decode uses (`tiling_for_ranks`) and the share of the frame, overlaps
  included, that the busiest rank decodes (its decode time scales with it).

Run:  python benchmarks/parallel.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from magic141_core.dit.config import full_13b  # noqa: E402
from magic141_core.parallel import tiling_for_ranks  # noqa: E402
from magic141_core.vae import Tiling  # noqa: E402
from magic141_core.vae.tiling import tile_spans  # noqa: E402

PEAK_FLOPS = 989e12  # H100 SXM, dense bf16
LINK_BYTES = 450e9  # H100 SXM NVLink 4, per direction
BYTES = 2  # bf16
HEIGHT, WIDTH, LATENT_FRAMES, STEPS = 544, 960, 21, 4
GPUS = (1, 2, 4, 8)


def step_cost(n: int, text_tokens: int, cfg=full_13b()) -> dict:
    """FLOP and bytes sent by one rank of n in one DiT forward."""
    D, M, blocks = cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio), cfg.double_blocks + cfg.single_blocks
    video = LATENT_FRAMES * (HEIGHT // 16) * (WIDTH // 16)
    L, Lt = math.ceil(video / n), text_tokens
    S = n * L + Lt
    per_token = 2 * (4 * D * D + 2 * D * M)  # one block's linears on one token
    linears = blocks * per_token * (L + Lt)
    attention = blocks * 4 * S * S * D / n
    patch_out = math.prod(cfg.patch_size) * cfg.out_channels
    refiner = 2 * Lt * cfg.text_dim * D + cfg.refiner_blocks * (per_token * Lt + 4 * Lt * Lt * D)
    replicated = (2 * video * cfg.in_channels * math.prod(cfg.patch_size) * D + refiner
                  + 2 * D * D * (12 * cfg.double_blocks + 3 * cfg.single_blocks + 2)  # modulations, batch 1
                  + 2 * L * D * patch_out)
    a2a = blocks * (n - 1) / n * D * (3 * L + L + Lt) * BYTES
    gather = (n - 1) * L * patch_out * BYTES
    return {"video tokens/rank": L, "text tokens": Lt, "linear FLOP": linears, "attention FLOP": attention,
            "other FLOP": replicated, "a2a bytes": a2a + gather}


def vae_split(n: int) -> tuple[int, float]:
    """Tiles of the parallel decode on n ranks (from a one-tile plan) and the busiest rank's share of the frame."""
    h, w = HEIGHT // 8, WIDTH // 8
    tiling = tiling_for_ranks(Tiling(), (h, w), n)
    rows, cols = tile_spans(h, tiling.tile_height, tiling.overlap), tile_spans(w, tiling.tile_width, tiling.overlap)
    tiles = len(rows) * len(cols)
    tile_area = (rows[0][1] - rows[0][0]) * (cols[0][1] - cols[0][0])
    return tiles, math.ceil(tiles / n) * tile_area / (h * w)


def rows(text_tokens: int) -> list[dict]:
    out = []
    for n in GPUS:
        c = step_cost(n, text_tokens)
        flop = c["linear FLOP"] + c["attention FLOP"] + c["other FLOP"]
        compute, comm = flop / PEAK_FLOPS, c["a2a bytes"] / LINK_BYTES
        tiles, share = vae_split(n)
        out.append({"GPUs": n, "video tokens/rank": c["video tokens/rank"], "TFLOP/rank/step": flop / 1e12,
                    "attention share": c["attention FLOP"] / flop, "a2a GB/rank/step": c["a2a bytes"] / 1e9,
                    "compute ms": 1e3 * compute, "a2a ms": 1e3 * comm, "step bound ms": 1e3 * (compute + comm),
                    f"{STEPS} steps bound s": STEPS * (compute + comm), "VAE tiles": tiles, "VAE frame share": share})
    base = out[0]["step bound ms"]
    for r in out:
        r["speedup bound"] = base / r["step bound ms"]
    return out


def table(result: list[dict]) -> str:
    head = (f"{'GPUs':>4} {'tokens/rank':>11} {'TFLOP/rank':>10} {'attn %':>6} {'a2a GB':>7} {'compute ms':>10} "
            f"{'a2a ms':>7} {'step >= ms':>10} {'4 steps s':>9} {'speedup':>7} {'VAE tiles':>9} {'VAE share':>9}")
    lines = [head]
    for r in result:
        lines.append(f"{r['GPUs']:>4} {r['video tokens/rank']:>11,} {r['TFLOP/rank/step']:>10.1f} "
                     f"{100 * r['attention share']:>6.1f} {r['a2a GB/rank/step']:>7.2f} {r['compute ms']:>10.1f} "
                     f"{r['a2a ms']:>7.1f} {r['step bound ms']:>10.1f} {r[f'{STEPS} steps bound s']:>9.2f} "
                     f"{r['speedup bound']:>7.2f} {r['VAE tiles']:>9} {r['VAE frame share']:>9.3f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-tokens", type=int, default=402, help="text tokens the DiT sees (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="accepted for `bench`; this script is arithmetic only")
    parser.add_argument("--smoke", action="store_true", help="accepted for `bench`; this script is arithmetic only")
    parser.add_argument("--json", type=Path, help="also write {'ratios': ..., 'rows': ...} here")
    args = parser.parse_args()
    result = rows(args.text_tokens)
    print(f"13B DiT, {WIDTH}x{HEIGHT} x {LATENT_FRAMES} latent frames, {args.text_tokens} text tokens, bf16; "
          f"H100 SXM {PEAK_FLOPS / 1e12:.0f} TFLOP/s, NVLink {LINK_BYTES / 1e9:.0f} GB/s per direction")
    print(table(result))
    last = result[-1]
    ratios = {"step bound 1 / 8 GPUs": last["speedup bound"], "all-to-all share of the step, 8 GPUs":
              last["a2a ms"] / last["step bound ms"], "FLOP per rank 8 / 1 GPUs":
              last["TFLOP/rank/step"] / result[0]["TFLOP/rank/step"]}
    print(json.dumps(ratios))
    if args.json:
        args.json.write_text(json.dumps({"ratios": ratios, "rows": result}, indent=1))


if __name__ == "__main__":
    main()
