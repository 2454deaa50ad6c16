import os
import subprocess
import sys

CLI = [sys.executable, "-m", "tfrec_attn.cli"]


def test_baselines_command_prints_the_reference_table(ml100k_dir):
    proc = subprocess.run(CLI + ["baselines", "--data", ml100k_dir], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    full_table = proc.stdout.split("sampled")[0]
    lines = {line.split()[0]: line.split()[1:] for line in full_table.splitlines() if line.strip()}
    assert lines["MostPop"][:2] == ["0.0848", "0.0441"]
    assert abs(float(lines["ALS"][0]) - 0.1379) <= 0.01


def test_data_stats_and_plot(ml100k_dir, tmp_path):
    png = tmp_path / "lengths.png"
    proc = subprocess.run(CLI + ["data", "stats", "--data", ml100k_dir, "--plot", str(png)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "train rows         98,114" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_file_gives_one_line_error_not_a_traceback(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n1\t2\t3\n")
    (tmp_path / "u.item").write_text("")
    proc = subprocess.run(CLI + ["data", "stats", "--data", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {os.path.join(str(tmp_path), 'u.data')}:2: field 'timestamp': "
                                   "expected 4 fields (user_id, item_id, rating, timestamp), found 3")
    assert "Traceback" not in proc.stderr
