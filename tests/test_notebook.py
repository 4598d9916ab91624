"""The chapters' header (mmvae_lite.notebook): it never prints the machine's absolute paths."""

import pytest

from mmvae_lite import notebook


def test_describe_data_root_from_env_names_variable_and_folder_only(tmp_path):
    root = tmp_path / "shared" / "data"
    text = notebook.describe_data_root(root, str(root))
    assert text == "$MMVAE_LITE_DATA (…/data)"
    assert str(tmp_path) not in text


def test_describe_data_root_under_home_is_home_relative(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / ".cache" / "mmvae_lite"
    root.mkdir(parents=True)
    assert notebook.describe_data_root(root, None) == "~/.cache/mmvae_lite"


def test_describe_data_root_elsewhere_is_folder_name(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert notebook.describe_data_root(tmp_path / "elsewhere", None) == "…/elsewhere"


def test_setup_header_has_no_absolute_path(monkeypatch, tmp_path, capsys):
    data = tmp_path / "mydata"
    data.mkdir()
    monkeypatch.setenv("MMVAE_LITE_DATA", str(data))
    monkeypatch.setenv("MMVAE_LITE_PRESET", "quick")
    session = notebook.setup(seed=1)
    out = capsys.readouterr().out
    assert session.preset == "quick" and session.quick
    assert "preset: quick" in out and "$MMVAE_LITE_DATA (…/mydata)" in out
    assert str(tmp_path) not in out
    assert max(len(line) for line in out.splitlines()) <= 88


def test_preset_from_env_rejects_unknown(monkeypatch):
    monkeypatch.setenv("MMVAE_LITE_PRESET", "huge")
    with pytest.raises(ValueError, match="MMVAE_LITE_PRESET"):
        notebook.preset_from_env()


def test_preset_is_quick_unless_asked_even_with_a_gpu(monkeypatch):
    monkeypatch.delenv(notebook.PRESET_ENV, raising=False)
    monkeypatch.setattr(notebook.torch.cuda, "is_available", lambda: True)
    assert notebook.preset_from_env() == "quick"
    monkeypatch.setenv(notebook.PRESET_ENV, "paper")
    assert notebook.preset_from_env() == "paper"
