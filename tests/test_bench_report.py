"""tav-bench's printed report, on synthetic numbers (no benchmark runs): bounded, labelled percentages, and the
end-to-end line explained where it disagrees with the per-step table (issue 31)."""

import re
import subprocess
import sys

from tav.bench.e2e_note import e2e_lines
from tav.bench.report import percent_of_gemm, table_lines


def _report(fractions=(0.53, 0.44), step_ms=(1000.0, 2222.0), e2e=None) -> dict:
    rows = [{"backend": name, "dtype": "float32", "unet_step_ms": ms, "speedup_vs_torch": step_ms[0] / ms,
             "achieved_tflops": 0.1, "fraction_of_matmul": fraction, "max_abs_err": 0.0, "rel_l2_err": 0.0}
            for name, ms, fraction in zip(("torch", "onnxruntime"), step_ms, fractions, strict=True)]
    rows.append({"backend": "tensorrt", "note": "not run: needs a CUDA GPU"})
    stages = {"make_model": {"seconds": 1.0}, "export": {"backend": "onnx", "seconds": 50.0}}
    if e2e is not None:
        stages["e2e"] = e2e
    return {"config": {"model": "small", "frames": 8, "height": 256, "width": 256, "device": "cpu", "steps": 5,
                       "repeats": 3, "warmup": 2},
            "device": {"name": "a CPU (2 cores)", "threads": 2, "matmul_dtype": "float32", "matmul_n": 1024,
                       "matmul_tflops": 0.26},
            "flops": {"unet_step_flop": 171.5e9}, "results": rows, "stages": stages}


def _e2e(sample_s, run_s, steps=5) -> dict:
    return {"steps": steps, "tav_sample_seconds": sample_s, "tav_run_seconds": run_s,
            "speedup_tav_run_vs_sample": sample_s / run_s}


def _percent_cells(lines) -> list:
    """The "% of GEMM" cells of the backend rows (the column under its header)."""
    header = next(line for line in lines if line.startswith("backend"))
    end = header.index("% of GEMM") + len("% of GEMM")
    rows = [line for line in lines if line.split(" ", 1)[0] in ("torch", "onnxruntime", "tensorrt")]
    return [line[end - 11:end].strip() for line in rows]


def test_percent_of_gemm_is_bounded_at_100():
    assert [percent_of_gemm(f) for f in (None, 0.0, 0.529, 1.0, 1.936)] == ["-", "0.0", "52.9", "100.0", ">100"]


def test_a_step_faster_than_the_gemm_reads_over_100_with_a_line_saying_why():
    lines = table_lines(_report(fractions=(1.936, 0.87)))
    text = "\n".join(lines)
    assert _percent_cells(lines) == [">100", "87.0", "-"]
    assert "193.6" not in text
    assert "fastest 1024^3 float32 GEMM timed in this run (0.26 TFLOP/s)" in text
    assert re.search(r">100 \(torch\): faster than that GEMM, so it ran slow", text)


def test_percentages_within_bounds_need_no_warning():
    lines = table_lines(_report())
    assert _percent_cells(lines) == ["53.0", "44.0", "-"]
    assert not any(line.lstrip().startswith(">100") for line in lines)


def test_an_end_to_end_ratio_unlike_the_tables_says_why():
    # ONNX Runtime slower than eager per step, tav-run 3.9x faster than tav-sample end to end.
    lines = e2e_lines(_report(step_ms=(1000.0, 1100.0), e2e=_e2e(30.0, 7.7)))
    text = "\n".join(lines)
    assert lines[0].strip() == ("end to end, 5 steps, each command a fresh process: tav-sample 30.0 s, "
                                "tav-run 7.7 s (3.90x)")
    assert "why it differs from the table (onnxruntime at 0.91x eager torch per step)" in text
    assert "5 steps at the table's eager rate are ~5.0 s; the other ~25.0 s is process start" in text
    assert "5 onnxruntime steps are ~5.5 s; the other ~2.2 s" in text
    for reason in ("- start-up:", "- warm-up: the table's step is the median of 3 after 2 untimed calls",
                   "- threads: torch 2", "- sizes: the same in both, 8 frames 256x256", "at 50 steps"):
        assert reason in text, reason
    assert "ran slow" not in text  # both tables' steps fit in their commands' times


def test_a_table_step_slower_than_the_whole_command_is_called_out():
    # The numbers: ONNX Runtime at 0.45x eager per step, yet 5 such steps outlast all of tav-run.
    lines = e2e_lines(_report(step_ms=(1000.0, 2222.0), e2e=_e2e(30.0, 7.7)))
    assert any("the table's onnxruntime step times 5 is more than tav-run's whole run" in line for line in lines)


def test_an_agreeing_end_to_end_ratio_says_so_in_one_line():
    lines = e2e_lines(_report(step_ms=(1000.0, 500.0), e2e=_e2e(10.0, 5.0)))
    assert len(lines) == 2 and "agrees with the table: onnxruntime at 2.00x eager torch per step" in lines[1]


def test_the_explanation_is_printed_under_the_e2e_stage_and_absent_without_it():
    shown = table_lines(_report(e2e=_e2e(30.0, 7.7)))
    at = next(i for i, line in enumerate(shown) if line.startswith("  e2e: "))
    assert shown[at + 1].startswith("  end to end, 5 steps")
    assert not any("end to end" in line for line in table_lines(_report()))
    assert e2e_lines(_report(e2e={"error": "RuntimeError: tav-run failed"})) == []


def test_counting_flops_on_meta_prints_no_cpp_ext_note():
    script = ("from tav.tuner.model.sd1_architecture import SIZES, random_unet\n"
              "from tav.bench.flops import unet_step_flops\n"
              "config = dict(random_unet(SIZES['tiny']).config)\n"
              "print(unet_step_flops(config, 2, 2, (8, 8), config['cross_attention_dim']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 0
    assert "on meta" not in done.stderr, done.stderr
