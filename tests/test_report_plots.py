"""Report plots: files written, learning curves read correctly from metrics.csv."""

import numpy as np
import pytest

from eqbench.report.plots import plot_learning_curves, plot_metric_vs_factor, plot_profiles, read_learning_curve


def profile_result(prediction, groups=("all",)):
    angle = [0.0, 90.0, 180.0, 270.0]
    reference = [1.0, 0.0, 1.0, 0.0]
    return {"angle_key": "theta", "angle_unit": "deg", "energy_unit": "kcal/mol", "angle_period": 360.0,
            "groups": {g: {"angle": angle, "reference": reference, "prediction": prediction, "mae": 0.1, "r2": 0.9}
                       for g in groups}}


def test_profiles_of_several_models_in_png(tmp_path):
    results = {"SchNet": profile_result([0.5, 0.5, 0.5, 0.5]), "PaiNN": profile_result([1.1, 0.1, 0.9, 0.0])}
    (png,) = plot_profiles(results, tmp_path / "profiles.png")
    assert png.is_file() and png.stat().st_size > 5000
    svg_paths = plot_profiles(results, tmp_path / "profiles", formats=("svg",))
    svg = svg_paths[0].read_text()
    assert "SchNet" in svg and "PaiNN" in svg and "reference" in svg


def test_metric_against_factor_writes_png_and_svg(tmp_path):
    series = {"PaiNN": {2.5: [0.1, 0.2], 4.0: [0.05, 0.07]}, "SchNet": {2.5: [0.9, 1.1], 4.0: [0.3, 0.3]}}
    paths = plot_metric_vs_factor(series, "cutoff (Å)", "force MAE (kcal/mol/Å)", tmp_path / "mae_vs_cutoff")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)
    assert "cutoff" in paths[1].read_text()


def test_learning_curve_skips_post_fit_evaluation_rows(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,step,train_loss,val_energy_mae,val_loss_smoothed\n"
        "0,10,,2.0,1.5\n0,10,3.0,,\n1,20,,1.0,1.2\n1,20,2.0,,\n"
        "2,21,,0.9,\n")  # the last row is the post-fit validation of the best checkpoint
    epochs, values = read_learning_curve(run, "val_energy_mae")
    assert epochs.tolist() == [0, 1] and values.tolist() == [2.0, 1.0]
    epochs, values = read_learning_curve(run, "train_loss")
    assert epochs.tolist() == [0, 1] and values == pytest.approx(np.array([3.0, 2.0]))
    paths = plot_learning_curves({"a": run}, "val_energy_mae", tmp_path / "curves")
    assert all(p.is_file() for p in paths)


def test_the_same_figure_gives_the_same_files(tmp_path):
    # Committed reports should change only where the results do: fixed SVG ids, no date in the file.
    series = {"PaiNN": {2.5: [0.1, 0.2], 4.0: [0.5, 0.6]}}
    first = plot_metric_vs_factor(series, "r_cut (Å)", "R²", tmp_path / "a")
    second = plot_metric_vs_factor(series, "r_cut (Å)", "R²", tmp_path / "b")
    assert [p.suffix for p in first] == [".png", ".svg"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
