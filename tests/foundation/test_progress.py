"""Progress of long loops: a tqdm bar on a terminal, one plain complete line per step otherwise."""

from __future__ import annotations

import sys

import pytest

from lightning_addons._progress import ENV, Progress, progress_mode


def _as_tty(monkeypatch, tty: bool) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)


def test_not_a_terminal_prints_one_plain_line_per_step_with_its_metrics(capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    _as_tty(monkeypatch, False)
    with Progress(3, "federated rounds", "round") as p:
        assert p.mode == "plain"
        for acc in (0.5, 0.625, 0.75):
            p.update(postfix={"val_acc": acc, "clients": 4})
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "federated rounds: 0/3 rounds"
    assert [ln.split("  [")[0] for ln in lines[1:]] == [
        "federated rounds: 1/3 rounds  val_acc=0.5000 clients=4",
        "federated rounds: 2/3 rounds  val_acc=0.6250 clients=4",
        "federated rounds: 3/3 rounds  val_acc=0.7500 clients=4",
    ]
    assert all(ln.endswith("s]") for ln in lines[1:])
    assert "\r" not in out + err and err == ""  # nothing a log file cannot show


def test_a_terminal_gets_a_tqdm_bar_on_stderr_and_no_plain_lines(capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    _as_tty(monkeypatch, True)
    with Progress(2, "HyperTuner", "trial") as p:
        assert p.mode == "bar"
        p.update(postfix="best f=0.1")
        p.update(postfix="best f=0.05")
    out, err = capsys.readouterr()
    assert out == ""
    assert "\r" in err and "HyperTuner" in err and "2/2" in err and "best f=0.05" in err


def test_a_resumed_loop_starts_from_its_done_steps(capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    _as_tty(monkeypatch, False)
    p = Progress(4, "HyperTuner", "trial", initial=3)
    p.update()
    p.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "HyperTuner: 3/4 trials (resumed)"
    assert lines[1].startswith("HyperTuner: 4/4 trials  [")


def test_the_environment_variable_overrides_auto_and_off_prints_nothing(capsys, monkeypatch):
    _as_tty(monkeypatch, True)
    monkeypatch.setenv(ENV, "plain")
    assert progress_mode(True) == "plain"
    assert progress_mode("bar") == "bar"  # an explicit mode wins over the environment
    monkeypatch.setenv(ENV, "off")
    with Progress(2, "x") as p:
        p.update()
    assert capsys.readouterr() == ("", "")
    assert progress_mode(False) == "off"


def test_bad_modes_are_clear_errors(monkeypatch):
    with pytest.raises(
        ValueError, match=r"progress mode must be one of \['auto', 'bar', 'plain', 'off'\].*'fancy'"
    ):
        Progress(2, "x", mode="fancy")
    monkeypatch.setenv(ENV, "loud")
    with pytest.raises(ValueError, match=r"\$LIGHTNING_ADDONS_PROGRESS must be one of .*got 'loud'"):
        progress_mode("auto")
    with pytest.raises(ValueError, match=r"`total` and `initial` must be >= 0, got total=-1"):
        Progress(-1, "x", mode="off")


def test_cache_generation_with_progress_prints_one_line_per_class(capsys, monkeypatch):
    import torch

    from lightning_addons.datamodules.synthetic_cache import CacheInitializer, FewShotGenerator

    monkeypatch.delenv(ENV, raising=False)
    _as_tty(monkeypatch, False)
    gen = FewShotGenerator(torch.rand(30, 1, 8, 8), torch.arange(3).repeat(10))
    CacheInitializer(gen, ["a", "b", "c"], shots=4, progress=True).run()
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("  [")[0] for ln in lines] == [
        "cache generation: 0/3 classes",
        "cache generation: 1/3 classes  class=a generated=4",
        "cache generation: 2/3 classes  class=b generated=4",
        "cache generation: 3/3 classes  class=c generated=4",
    ]
    CacheInitializer(gen, ["a", "b", "c"], shots=4).run()  # progress is off by default
    assert capsys.readouterr().out == ""
