"""Shared-data lookup, the cache folder and the atomic cached downloader."""

from __future__ import annotations

import hashlib

import pytest

from lightning_addons.data import cache_dir, fetch, shared_data_dir, shared_data_path


def test_shared_data_folder_holds_the_benchmark_files(shared_data):
    for name in ("ETTh1.csv", "chickenpox.json", "pedalme_london.json"):
        assert shared_data_path(name).is_file()


def test_environment_variable_overrides_the_shared_data_folder(tmp_path, monkeypatch):
    (tmp_path / "x.csv").write_text("a\n")
    monkeypatch.setenv("LIGHTNING_ADDONS_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    assert shared_data_path("x.csv") == tmp_path / "x.csv"
    with pytest.raises(
        FileNotFoundError, match=r"'nope.csv' not found in the shared data folder .*LIGHTNING_ADDONS_DATA"
    ):
        shared_data_path("nope.csv")


def test_cache_dir_follows_its_variable_and_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ADDONS_CACHE", str(tmp_path / "c"))
    assert cache_dir("a", "b") == tmp_path / "c" / "a" / "b" and (tmp_path / "c" / "a" / "b").is_dir()


def test_fetch_prefers_a_local_path(tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("1\n")
    assert fetch("http://invalid.example/data.csv", "data.csv", local_path=f) == f
    assert fetch("http://invalid.example/data.csv", "data.csv", local_path=tmp_path) == f
    with pytest.raises(FileNotFoundError, match=r"local_path=.*does not exist"):
        fetch("http://invalid.example/x.csv", "x.csv", local_path=tmp_path / "missing.csv")


def test_fetch_downloads_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ADDONS_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "remote.csv"
    src.write_text("x,y\n1,2\n")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    got = fetch(src.as_uri(), "remote.csv", sha256=digest)
    assert got.read_text() == "x,y\n1,2\n" and got.parent == tmp_path / "cache" / "datasets"
    src.unlink()  # a second call must not touch the source again
    assert fetch(src.as_uri(), "remote.csv") == got


def test_fetch_with_a_bad_checksum_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ADDONS_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "remote.csv"
    src.write_text("tampered")
    with pytest.raises(ValueError, match="Checksum mismatch"):
        fetch(src.as_uri(), "remote.csv", sha256="0" * 64)
    assert list((tmp_path / "cache" / "datasets").iterdir()) == []
