"""What ``kronecker-gp fit`` models: transforms, bounds, warnings, sizes."""

import warnings

import numpy as np
import pytest
from scipy import stats
from test_cli import DATES, HEADER, column, fit_args, read_table, rows, write

from kronecker_gp.cli import main
from kronecker_gp.cli._fit import bound_warnings, default_kernels
from kronecker_gp.cli._transform import Z95, choose_auto, predictive


# ------------------------------------------------------------------ transforms
def test_predictive_none_is_mean_and_noise_added_sd(rng):
    m, s = rng.normal(size=5), rng.uniform(0.1, 1, 5)
    out = predictive(m, s, 0.25, "none")
    np.testing.assert_allclose(out["sd_obs"], np.sqrt(s**2 + 0.25), rtol=1e-12)
    np.testing.assert_allclose(out["upper95"], m + Z95 * out["sd_obs"], rtol=1e-12)


def test_predictive_log_matches_lognormal_distribution(rng):
    m, s = rng.normal(size=4), rng.uniform(0.1, 0.8, 4)
    out = predictive(m, s, 0.09, "log")
    s_obs = np.sqrt(s**2 + 0.09)
    latent = stats.lognorm(s=s, scale=np.exp(m))
    obs = stats.lognorm(s=s_obs, scale=np.exp(m))
    np.testing.assert_allclose(out["mean"], latent.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["sd"], latent.std(), rtol=1e-10)
    np.testing.assert_allclose(out["sd_obs"], obs.std(), rtol=1e-10)
    np.testing.assert_allclose(out["lower95"], obs.ppf(0.025), rtol=1e-8)
    np.testing.assert_allclose(out["upper95"], obs.ppf(0.975), rtol=1e-8)


def test_predictive_sqrt_matches_monte_carlo(rng):
    m, s = np.array([2.0, 0.3]), np.array([0.5, 0.4])
    out = predictive(m, s, 0.0, "sqrt")
    draws = (m + s * rng.standard_normal((400_000, 2))) ** 2
    np.testing.assert_allclose(out["mean"], draws.mean(0), rtol=5e-3)
    np.testing.assert_allclose(out["sd"], draws.std(0), rtol=1e-2)
    assert out["lower95"][1] == 0.0  # the interval of sqrt(y) reaches below 0
    np.testing.assert_allclose(out["upper95"], (m + Z95 * s) ** 2, rtol=1e-12)


def test_choose_auto(rng):
    skewed = rng.lognormal(0.0, 0.8, 2000)
    assert choose_auto(skewed)[0] == "log"
    assert choose_auto(np.concatenate([[0.0], skewed]))[0] == "sqrt"
    assert choose_auto(rng.normal(10, 1, 2000))[0] == "none"


def _skewed(tmp_path):
    table = rows()
    for k, r in enumerate(table):
        r[5] = round(float(np.exp((r[5] - 30.0) / 1.5 + 0.05 * np.sin(k))), 5)
    return write(tmp_path / "skewed.csv", table)


def test_fit_log_transform_keeps_predictions_positive(tmp_path, capsys):
    data = _skewed(tmp_path)
    out = tmp_path / "o.csv"
    assert main(fit_args(data, out, "--transform", "auto", quiet=False)) == 0
    text = capsys.readouterr().out
    assert "transform: log (skewness" in text and "on the log scale" in text
    table = read_table(out)
    mean, lo, hi = (column(table, k) for k in ("mean", "lower95", "upper95"))
    obs = column(table, "ozone")
    assert np.all(lo > 0) and np.all(lo < mean) and np.all(mean < hi)
    assert np.mean((lo <= obs) & (obs <= hi)) > 0.9
    # the interval is symmetric on the log scale around the median exp(m)
    np.testing.assert_allclose(np.log(lo) + np.log(hi), 2 * np.log(np.sqrt(lo * hi)))
    assert main(fit_args(data, tmp_path / "n.csv", quiet=False)) == 0
    assert "--transform auto would use log" in capsys.readouterr().out


# --------------------------------------------------------------- units, bounds
def _scaled(tmp_path, time_scale, space_scale):
    table = []
    for r in rows():
        day = int(r[4][-2:])
        table.append([r[0], r[1], r[2] * space_scale, r[3] * space_scale,
                      1.6e9 + day * time_scale, r[5]])  # fmt: skip
    header = ("station", "name", "x", "y", "t", "ozone")
    return write(tmp_path / f"s{time_scale}.csv", table, header=header)


def test_fit_does_not_depend_on_units(tmp_path):
    """Times in seconds and coordinates in metres give the same predictions."""
    means = []
    for time_scale, space_scale in ((1.0, 1.0), (86400.0, 1000.0)):
        data = _scaled(tmp_path, time_scale, space_scale)
        out = tmp_path / f"o{time_scale}.csv"
        args = fit_args(data, out)
        args[args.index("lon,lat")] = "x,y"
        args[args.index("date")] = "t"
        assert main(args) == 0
        means.append(column(read_table(out), "mean"))
    np.testing.assert_allclose(means[1], means[0], rtol=1e-5)


def test_default_bounds_follow_spacing_and_range():
    sites = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    times = np.array([0.0, 2.0, 3.0, 10.0])
    space, time_kernel = default_kernels("matern32", "rbf", sites, times)
    assert space.k2.length_scale_bounds == pytest.approx((0.5, 1000.0))
    assert space.k2.length_scale == pytest.approx(0.5 * 5.0)
    assert time_kernel.length_scale_bounds == pytest.approx((0.1, 1000.0))
    assert time_kernel.length_scale == pytest.approx(5 * 2.0)


class _Fake:
    """The fitted attributes bound_warnings reads."""

    def __init__(self, theta):
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel

        from kronecker_gp.kernels import KroneckerKernel

        self.kernel_ = KroneckerKernel(
            [ConstantKernel() * RBF(1.0, (0.1, 10.0)), RBF(1.0, (1.0, 50.0))],
            axes=[[0], [1]],
        )
        self.theta_ = np.log(theta)


def test_bound_warnings_name_the_hyperparameter():
    fake = _Fake([1.0, 10.0, 3.0, 1e-6])
    bounds = np.vstack([fake.kernel_.bounds, np.log([1e-6, 1e5])])
    lines = bound_warnings(fake, bounds)
    assert len(lines) == 2
    assert lines[0].startswith("the fitted space length scale 10 ended at its upper")
    assert "noise variance (normalised) 1e-06 ended at its lower bound" in lines[1]
    assert bound_warnings(_Fake([1.0, 2.0, 3.0, 0.1]), bounds) == []


def test_fit_warnings_are_one_line_each_on_stderr(tmp_path, monkeypatch, capsys):
    import kronecker_gp.cli._fit as fit_module

    real = fit_module.fit_grid_model

    def noisy(*args, **kwargs):
        warnings.warn("lbfgs stopped:\n  ABNORMAL", UserWarning, stacklevel=1)
        warnings.warn("lbfgs stopped:\n  ABNORMAL", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "fit_grid_model", noisy)
    data = write(tmp_path / "d.csv", rows())
    assert main(fit_args(data, tmp_path / "o.csv")) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["kronecker-gp: warning: UserWarning: lbfgs stopped: ABNORMAL"]


# ------------------------------------------------------------------ sentinels
def test_sentinel_is_flagged_then_declared_missing(tmp_path, capsys):
    table = rows()
    for k in (3, 11, 19, 27, 35):
        table[k][5] = -999
    data = write(tmp_path / "d.csv", table)
    out = tmp_path / "o.csv"
    assert main(fit_args(data, out)) == 0
    err = capsys.readouterr().err
    assert "warning: column 'ozone' has -999 on 5 rows (first on line 5)" in err
    assert "--missing-values NA,N/A,NaN,-999" in err
    args = fit_args(data, out, "--missing-values", "NA,-999")
    assert main(args) == 0
    assert "-999" not in capsys.readouterr().err
    result = read_table(out)
    assert sum(r["ozone"] == "" for r in result) == 5
    assert column(result, "mean").min() > 20  # no cell pulled towards -999


def test_negative_means_of_a_positive_variable_are_reported(tmp_path, capsys):
    table = rows()
    for r in table:
        r[5] = round(max(r[5] - 30.5, 0.0) * 3, 4)  # many zeros, spikes
    data = write(tmp_path / "d.csv", table)
    out = tmp_path / "o.csv"
    assert main(fit_args(data, out)) == 0
    mean = column(read_table(out), "mean")
    err = capsys.readouterr().err
    assert (mean < 0).any()  # the raw-scale model dips below zero here
    assert f"{int((mean < 0).sum())} cells have a negative mean" in err
    assert main(fit_args(data, out, "--transform", "sqrt")) == 0
    assert "negative mean" not in capsys.readouterr().err
    assert column(read_table(out), "lower95").min() >= 0


# --------------------------------------------------------------- size, progress
def test_large_file_refused_before_parsing(tmp_path, monkeypatch, capsys):
    import kronecker_gp.cli._csv as csv_module

    table = [r for k in range(80) for r in rows()]  # 3,200 rows, > 64 kB
    for k, r in enumerate(table):
        r[4] = f"{1000 + k}"
    data = write(tmp_path / "big.csv", table, header=HEADER)

    def never(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr(csv_module, "_decode_and_scan", never)
    assert main(fit_args(data, tmp_path / "o.csv", "--max-cells", "1000")) == 2
    err = capsys.readouterr().err
    assert "holds about 3," in err and "--max-cells" in err and err.count("\n") == 1


def test_scattered_rows_refused_with_the_fill(tmp_path, capsys):
    table = [[f"S{k}", "n", float(k), float(k % 7), f"{k * 3}", 1.0 + k % 5]
             for k in range(300)]  # fmt: skip
    data = write(tmp_path / "d.csv", table)
    assert main(fit_args(data, tmp_path / "o.csv", "--max-cells", "50000")) == 2
    err = capsys.readouterr().err
    assert "300 rows span 300 sites x 300 times = 90,000 cells (0.33 % filled)" in err
    assert "coarser step" in err


def test_memory_guard(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("kronecker_gp.cli._size.available_memory", lambda: 10_000)
    data = write(tmp_path / "d.csv", rows())
    assert main(fit_args(data, tmp_path / "o.csv")) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "10 kB is available" in err
    assert [p.name for p in tmp_path.iterdir()] == ["d.csv"]


def test_progress_of_reading_and_fitting(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("kronecker_gp.cli._csv.PROGRESS_AFTER", -1.0)
    monkeypatch.setattr("kronecker_gp.cli._csv.PROGRESS_EVERY", 10)
    data = write(tmp_path / "d.csv", rows())
    assert main(fit_args(data, tmp_path / "o.csv", quiet=False)) == 0
    out = capsys.readouterr().out
    assert "  read 10 rows" in out
    assert f"grid: 5 sites x {len(DATES)} times = 40 cells, 40 observed" in out
    assert "needs about" in out and "roughly" in out
    assert "  iteration   1  log marginal likelihood" in out


def test_size_estimate_knows_the_state_space_route():
    from kronecker_gp.cli._size import estimate

    dense = estimate(50, 5000, 0, markov_time=False)
    kalman = estimate(50, 5000, 0, markov_time=True)
    assert kalman[0] < dense[0] / 10 and kalman[1] < dense[1] / 10
    # below 2,000 steps the time factor is formed either way
    assert estimate(50, 500, 0, markov_time=True) == estimate(50, 500, 0)
    # missing cells cost more than a complete grid of the same size
    assert estimate(50, 500, 100)[1] > estimate(50, 500, 0)[1]


def test_prediction_warnings_are_one_line_each(tmp_path, monkeypatch, capsys):
    import kronecker_gp.cli._run as run

    real = run.fit_with_warnings

    def fit(*args, **kwargs):
        gp, lines = real(*args, **kwargs)
        predict = gp.predict_grid

        def noisy(*a, **k):
            warnings.warn("negative variance\n  clipped", RuntimeWarning, stacklevel=1)
            return predict(*a, **k)

        gp.predict_grid = noisy
        return gp, lines

    monkeypatch.setattr(run, "fit_with_warnings", fit)
    data = write(tmp_path / "d.csv", rows())
    assert main(fit_args(data, tmp_path / "o.csv")) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["kronecker-gp: warning: RuntimeWarning: negative variance clipped"]


def test_a_hyperparameter_at_a_bound_is_reported_once(monkeypatch):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    import kronecker_gp.cli._fit as fit_module

    fake = _Fake([1.0, 10.0, 3.0, 0.1])
    fake.noise_bounds = (1e-6, 1e5)

    def fit(*args, **kwargs):
        # what KroneckerGP warns when a hyperparameter ends at a bound
        warnings.warn(
            "The optimal value found for dimension 0 of parameter k0__k2__length_scale "
            "is close to the specified upper bound 10.0. Increasing the bound and "
            "calling fit again may find a better value.",
            ConvergenceWarning,
            stacklevel=2,
        )
        warnings.warn("something else", UserWarning, stacklevel=2)
        return fake

    monkeypatch.setattr(fit_module, "fit_grid_model", fit)
    _, lines = fit_module.fit_with_warnings([], [], np.zeros(1), lambda *a: None)
    at_bound = [line for line in lines if "upper" in line]
    assert len(at_bound) == 1 and at_bound[0].startswith("the fitted space length")
    assert "UserWarning: something else" in lines
