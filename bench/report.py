"""The benchmark's table: one row per UNet backend, then the pipeline stages."""


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(report: dict) -> None:
    cfg, dev = report["config"], report["device"]
    print(f"\ntav-bench  model={cfg['model']} frames={cfg['frames']} {cfg['height']}x{cfg['width']} "
          f"device={dev['name']}  UNet step {report['flops']['unet_step_flop'] / 1e9:.1f} GFLOP, "
          f"matmul {dev['matmul_tflops']:.1f} TFLOP/s ({dev['matmul_dtype']})")
    print(f"{'backend':<16}{'dtype':<9}{'UNet ms':>10}{'vs torch':>10}{'TFLOP/s':>10}{'% matmul':>10}"
          f"{'max abs err':>13}{'rel L2 err':>12}  note")
    for r in report["results"]:
        print(f"{r['backend']:<16}{r.get('dtype') or '-':<9}{_fmt(r.get('unet_step_ms'), '.1f'):>10}"
              f"{_fmt(r.get('speedup_vs_torch'), '.2f'):>10}{_fmt(r.get('achieved_tflops'), '.2f'):>10}"
              f"{_fmt(r.get('fraction_of_matmul') and 100 * r['fraction_of_matmul'], '.1f'):>10}"
              f"{_fmt(r.get('max_abs_err'), '.2e'):>13}{_fmt(r.get('rel_l2_err'), '.2e'):>12}  {r.get('note', '')}")
    for name, stage in report["stages"].items():
        fields = ", ".join(f"{k}={_fmt(v, '.3f') if isinstance(v, float) else v}" for k, v in stage.items())
        print(f"  {name}: {fields}")
    for sizes in report.get("pack_sizes", []):
        print(f"  pack {sizes['model']} {sizes['precision']} {sizes['frames']}x{sizes['height']}x{sizes['width']}: "
              f"{sizes['pack_payload_bytes'] / 1e6:.1f} MB vs UNet {sizes['unet_bytes'] / 1e6:.1f} MB "
              f"({100 * sizes['pack_vs_unet']:.1f}%), {sizes['videos_per_80gb_weights_only']} videos per 80 GB beside "
              f"the base (weights only)")
