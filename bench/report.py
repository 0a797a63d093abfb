"""The benchmark's table: one row per UNet backend, what its percentage means, then the pipeline stages.

The "% of GEMM" column is the step's counted FLOP rate (bench/flops.py) over the fastest square GEMM timed in the
same run (bench/timing.py): a ratio of two measurements, not an efficiency the step cannot exceed. It is shown up to
100; above, it reads ">100" with a line saying why. The end-to-end stage gets lines of its own (bench/e2e_note.py)
that say why its ratio differs from the table's.
"""

from .e2e_note import e2e_lines


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def percent_of_gemm(fraction) -> str:
    """The table's bounded cell: "-", "0.0" to "100.0", or ">100" (explained under the table)."""
    if fraction is None:
        return "-"
    return ">100" if fraction > 1 else f"{100 * fraction:.1f}"


def gemm_legend(report: dict) -> list:
    """What the percentage column is measured against, and what a value above 100 means."""
    dev = report["device"]
    size = f"{dev['matmul_n']}^3" if dev.get("matmul_n") else "square"  # reports before 2026-12 lack the size
    gemm = f"{size} {dev['matmul_dtype']} GEMM"
    lines = [f"  % of GEMM: the step's counted FLOP/s over the fastest {gemm} timed in this run "
             f"({dev['matmul_tflops']:.2f} TFLOP/s)"]
    over = [r["backend"] for r in report["results"] if (r.get("fraction_of_matmul") or 0) > 1]
    if over:
        lines.append(f"  >100 ({', '.join(over)}): faster than that GEMM, so it ran slow (a busy machine, or too "
                     "small a GEMM for this device); the ms columns stand, the percentage does not")
    return lines


def table_lines(report: dict) -> list:
    cfg, dev = report["config"], report["device"]
    lines = [f"\ntav-bench  model={cfg['model']} frames={cfg['frames']} {cfg['height']}x{cfg['width']} "
             f"device={dev['name']}  UNet step {report['flops']['unet_step_flop'] / 1e9:.1f} GFLOP, "
             f"GEMM {dev['matmul_tflops']:.2f} TFLOP/s ({dev['matmul_dtype']})",
             f"{'backend':<16}{'dtype':<9}{'UNet ms':>10}{'vs torch':>10}{'TFLOP/s':>10}{'% of GEMM':>11}"
             f"{'max abs err':>13}{'rel L2 err':>12}  note"]
    for r in report["results"]:
        lines.append(f"{r['backend']:<16}{r.get('dtype') or '-':<9}{_fmt(r.get('unet_step_ms'), '.1f'):>10}"
                     f"{_fmt(r.get('speedup_vs_torch'), '.2f'):>10}{_fmt(r.get('achieved_tflops'), '.2f'):>10}"
                     f"{percent_of_gemm(r.get('fraction_of_matmul')):>11}"
                     f"{_fmt(r.get('max_abs_err'), '.2e'):>13}{_fmt(r.get('rel_l2_err'), '.2e'):>12}  "
                     f"{r.get('note', '')}")
    lines += gemm_legend(report)
    for name, stage in report["stages"].items():
        fields = ", ".join(f"{k}={_fmt(v, '.3f') if isinstance(v, float) else v}" for k, v in stage.items())
        lines.append(f"  {name}: {fields}")
        if name == "e2e":
            lines += e2e_lines(report)
    for sizes in report.get("pack_sizes", []):
        lines.append(f"  pack {sizes['model']} {sizes['precision']} {sizes['frames']}x{sizes['height']}x"
                     f"{sizes['width']}: {sizes['pack_payload_bytes'] / 1e6:.1f} MB vs UNet "
                     f"{sizes['unet_bytes'] / 1e6:.1f} MB ({100 * sizes['pack_vs_unet']:.1f}%), "
                     f"{sizes['videos_per_80gb_weights_only']} videos per 80 GB beside the base (weights only)")
    return lines


def print_table(report: dict) -> None:
    print("\n".join(table_lines(report)))
