"""``kronecker-gp fit`` never loses or corrupts a file.

An output that is the input, the other output or a folder is refused before
any work; the plot's format follows its extension; a failure, Ctrl-C or
SIGTERM leaves every existing file as it was and no temporary file behind.
"""

import signal
import subprocess
import sys
import textwrap
import time

import pytest
from test_cli import fit_args, rows, write

from kronecker_gp.cli import main


@pytest.fixture
def data(tmp_path):
    return write(tmp_path / "data.csv", rows())


def _refused(args, capsys, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_out_equal_to_input_is_refused(data, tmp_path, capsys):
    before = data.read_bytes()
    _refused(fit_args(data, data), capsys, "--out")
    # the same file through another spelling of its path
    other = tmp_path / "." / "sub" / ".." / "data.csv"
    (tmp_path / "sub").mkdir()
    _refused(fit_args(data, other), capsys, "is the input file")
    assert data.read_bytes() == before


def test_plot_equal_to_input_or_out_is_refused(data, tmp_path, capsys):
    before = data.read_bytes()
    out = tmp_path / "pred.csv"
    _refused(fit_args(data, out, "--plot", str(data)), capsys, "is the input file")
    out.write_text("previous\n")
    _refused(fit_args(data, out, "--plot", str(out)), capsys, "are the same file")
    assert data.read_bytes() == before and out.read_text() == "previous\n"


@pytest.mark.parametrize("target", [".", "folder", "folder/"])
def test_out_that_is_a_folder_is_refused(data, tmp_path, capsys, monkeypatch, target):
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    _refused(fit_args(data, target), capsys, "is a folder")
    _refused(fit_args(data, "p.csv", "--plot", target), capsys, "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "folder"]


def test_missing_output_folder_and_unknown_plot_format(data, tmp_path, capsys):
    _refused(fit_args(data, tmp_path / "no" / "p.csv"), capsys, "does not exist")
    _refused(
        fit_args(data, tmp_path / "p.csv", "--plot", str(tmp_path / "s.jpg")),
        capsys, "use .png, .pdf, .svg",
    )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


@pytest.mark.parametrize(
    ("name", "magic"), [("s.png", b"\x89PNG"), ("s.pdf", b"%PDF"), ("s.SVG", b"<?xml")]
)
def test_plot_format_follows_extension(data, tmp_path, name, magic):
    plot = tmp_path / name
    assert main(fit_args(data, tmp_path / "p.csv", "--plot", str(plot))) == 0
    assert plot.read_bytes()[: len(magic)] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "p.csv", name]


def test_failure_while_writing_keeps_existing_outputs(data, tmp_path, monkeypatch):
    out, plot = tmp_path / "pred.csv", tmp_path / "s.png"
    out.write_text("previous\n")
    plot.write_text("old plot\n")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("kronecker_gp.cli._plots.save_fit_plot", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        main(fit_args(data, out, "--plot", str(plot)))
    assert out.read_text() == "previous\n" and plot.read_text() == "old plot\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.csv",
        "pred.csv",
        "s.png",
    ]


@pytest.mark.parametrize("where", ["_fit", "write_predictions"])
def test_ctrl_c_exits_130_with_one_line_and_no_files(
    data, tmp_path, monkeypatch, capsys, where
):
    out = tmp_path / "pred.csv"

    def interrupt(path, *args, **kwargs):
        if where == "write_predictions":
            path.write_text("half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(f"kronecker_gp.cli._run.{where}", interrupt)
    assert main(fit_args(data, out, "--plot", str(tmp_path / "s.png"))) == 130
    err = capsys.readouterr().err
    assert err == "kronecker-gp: interrupted; unfinished output files were removed\n"
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


def test_sigterm_during_the_fit_cleans_up(data, tmp_path):
    out = tmp_path / "pred.csv"
    code = textwrap.dedent(
        f"""
        import sys, time
        import kronecker_gp.cli._run as run

        def slow(*args, **kwargs):
            print("fitting", flush=True)
            time.sleep(60)

        run._fit = slow
        from kronecker_gp.cli import main
        sys.exit(main({fit_args(data, out)!r}))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "fitting"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == "kronecker-gp: interrupted; unfinished output files were removed\n"
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


def test_outputs_get_ordinary_permissions(data, tmp_path):
    import os

    out = tmp_path / "p.csv"
    umask = os.umask(0o022)
    try:
        assert main(fit_args(data, out)) == 0
        assert out.stat().st_mode & 0o777 == 0o644
        out.chmod(0o600)
        assert main(fit_args(data, out)) == 0
        assert out.stat().st_mode & 0o777 == 0o600  # an existing file keeps its mode
    finally:
        os.umask(umask)
