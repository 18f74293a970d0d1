"""benchmarks/val_variant.py: a run's copy that restores with other val settings, the run itself untouched."""

from __future__ import annotations

import pytest

from refusion_pl.lit.diffusion import DiffusionModule
from tests.benchmark_scripts import load_benchmark
from tests.test_restore import save_checkpoint


def test_variant_restores_with_the_new_settings_and_links_the_rest(tmp_path) -> None:
    script = load_benchmark("val_variant")
    run = tmp_path / "run"
    (run / "diffusion" / "checkpoints").mkdir(parents=True)
    (run / "autoencoder").mkdir()
    (run / "config.yaml").write_text("task: {name: shadow}\n")
    original = save_checkpoint(run / "diffusion" / "checkpoints" / "best-step0000001.ckpt")
    settings = dict(map(script.parse_setting, ["shift_jitter=true", "temperature=0"]))
    assert settings == {"shift_jitter": True, "temperature": 0}
    written = script.write_variant(run, tmp_path / "variant", settings)
    variant = DiffusionModule.from_checkpoint(written[0])
    assert variant.shift_jitter is True and variant.temperature == 0.0
    kept = DiffusionModule.from_checkpoint(original)
    assert kept.shift_jitter is False and kept.temperature == 1.0
    assert (tmp_path / "variant" / "config.yaml").resolve() == (run / "config.yaml").resolve()
    assert (tmp_path / "variant" / "autoencoder").is_symlink()
    with pytest.raises(FileExistsError, match="variant"):
        script.write_variant(run, tmp_path / "variant", settings)
    with pytest.raises(FileNotFoundError, match="no diffusion"):
        script.write_variant(tmp_path / "variant" / "autoencoder", tmp_path / "other", settings)
    with pytest.raises(ValueError, match="key=value"):
        script.parse_setting("shift_jitter")
