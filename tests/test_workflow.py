"""Issue 19: the researcher's workflow — divergence ceiling, plots that never fail, data in,
results out, progress, warnings."""
import math

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import engine


def unstable_l2(m=64, d=4, seed=0):
    """A problem and a gd lr at 2.5 / lambda_max: the l2 error grows x2.25 per step, finite for
    hundreds of steps (the overflow that crashed the CLI's figure)."""
    X, y = gl.datasets.synthetic_regression(m, d, seed=seed)
    lam = np.linalg.eigvalsh(X.T @ X / m).max()
    return X, y, 2.5 / lam


def test_default_ceiling_is_relative_to_the_initial_loss():
    X, y, lr = unstable_l2()
    cfgs = [gl.Config(depth=1, lr=lr, init_scale=1.0, seed=0),
            gl.Config(depth=1, lr=lr / 10, init_scale=1.0, seed=0)]
    res = gl.train(X, y, cfgs, steps=60, log_every=1)
    assert res.diverged.tolist() == [True, False]
    t = res.diverged_at[0]
    l0 = res.loss[0, 0]
    # flagged at the first step above 1e6 x its own step-0 loss, not before
    assert res.loss[0, t] > engine.DIVERGE_FACTOR * l0 >= res.loss[0, t - 1]
    assert res.meta["diverge_factor"] == engine.DIVERGE_FACTOR
    # overridable, and inf disables it (the run then stays finite and unflagged for 60 steps)
    res10 = gl.train(X, y, cfgs, steps=60, log_every=1, diverge_factor=10.0)
    assert 0 < res10.diverged_at[0] < t
    assert res10.loss[0, res10.diverged_at[0]] > 10 * l0
    off = gl.train(X, y, cfgs, steps=60, log_every=1, diverge_above=math.inf)
    assert not off.diverged.any() and np.isfinite(off.loss).all()
    assert off.loss[0, -1] > 1e12 * l0
    absolute = gl.train(X, y, cfgs, steps=60, log_every=1, diverge_above=100 * l0)
    assert 0 < absolute.diverged_at[0] < t


def test_ceiling_survives_a_resume(tmp_path):
    X, y, lr = unstable_l2()
    cfgs = [gl.Config(depth=1, lr=lr, init_scale=1.0, seed=0)]
    ref = gl.train(X, y, cfgs, steps=60, log_every=5)
    ck = tmp_path / "run.npz"
    gl.train(X, y, cfgs, steps=5, log_every=5, checkpoint=ck, checkpoint_every=5)
    got = gl.train(X, y, cfgs, steps=60, log_every=5, checkpoint=ck, checkpoint_every=5,
                   resume=True)
    assert got.diverged_at[0] == ref.diverged_at[0] > 5


@pytest.mark.parametrize("kw, word", [(dict(diverge_above=0), "diverge_above"),
                                      (dict(diverge_factor=2.0, diverge_above=1.0), "not both"),
                                      (dict(diverge_factor=0.5), "diverge_factor"),
                                      (dict(diverge_above=1.0, diverge_factor=10.0), "not both")])
def test_ceiling_arguments_checked(kw, word):
    X, y, _ = unstable_l2()
    with pytest.raises(ValueError, match=word):
        gl.train(X, y, gl.Config(), steps=1, **kw)


def test_record_step_ceiling_for_steps_without_an_exact_one():
    """The fused CUDA step checks an absolute limit per step; the relative one is applied to
    its records (engine._flag_above_ceiling)."""
    log = np.array([[1.0, 5.0, 2e6, np.inf], [2.0, 1.0, 0.5, 0.1], [1.0, 1e7, 1e8, 1e9]])
    host = {"log": log, "diverged_at": np.array([-1, -1, 5])}
    engine._flag_above_ceiling(host, np.array([0, 10, 20, 30]), 1e6)
    assert host["diverged_at"].tolist() == [20, -1, 5]      # an earlier flag stands


def test_plot_never_fails_on_huge_or_non_positive_gaps(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    steps = np.arange(0, 50, 10)
    loss = np.array([[1.0, 0.5, 0.2, 0.1, 0.1],              # gap 0 from step 30: clipped low
                     [1.0, 9e287, np.inf, np.nan, np.nan],   # huge finite then non-finite
                     [1.0, 1e30, 1e300, 1.7e308, 1.7e308]])  # huge, never flagged
    res = gl.Result(configs=[gl.Config(lr=v) for v in (1e-3, 1.0, 2.0)], steps=steps, loss=loss,
                    diverged_at=np.array([-1, 20, -1]), end_to_end=np.zeros((3, 1, 2)))
    ax = res.plot(optimal=0.1, path=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(n.startswith("clipped: gap <= 0") for n in names)
    assert any(n.startswith("clipped: above") for n in names)
    lo, hi = ax.get_ylim()
    assert 0 < lo and hi < 1e10


def test_progress_bar_is_tqdm_and_silent_off_a_terminal(capsys):
    X, y, _ = unstable_l2()
    gl.train(X, y, gl.grid(lr=[1e-3, 1e-2]), steps=1000, log_every=500)   # pytest: no TTY
    assert capsys.readouterr().err == ""
    gl.train(X, y, gl.grid(lr=[1e-3, 1e-2]), steps=1000, log_every=500, progress=True)
    err = capsys.readouterr().err
    assert "2 configs x 1,000 steps" in err and "2.00k/2.00k" in err and "\r" in err


# -- data in ---------------------------------------------------------------------------------

def _table(m=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, 3)) * np.array([1.0, 100.0, 0.01])
    y = X @ np.array([1.0, 0.01, 50.0]) + 0.1 * rng.normal(size=m)
    return X, y


def _write_like_pandas(path, X, y, names=("a", "b", "c"), target="y"):
    """What DataFrame.to_csv writes by default: a header row with an unnamed index column."""
    lines = [",".join(["", *names, target])]
    lines += [",".join([str(i), *(repr(float(v)) for v in row), repr(float(t))])
              for i, (row, t) in enumerate(zip(X, y))]
    path.write_text("\n".join(lines) + "\n")


def test_load_csv_reads_a_default_dataframe_csv(tmp_path):
    X, y = _table()
    path = tmp_path / "d.csv"
    _write_like_pandas(path, X, y)
    gX, gy = gl.datasets.load_csv(path)                       # header, index column: auto
    np.testing.assert_array_equal(gX, X)
    np.testing.assert_array_equal(gy, y)
    gX, gy = gl.datasets.load_csv(path, target="b")           # a named target
    np.testing.assert_array_equal(gy, X[:, 1])
    np.testing.assert_array_equal(gX, np.column_stack([X[:, 0], X[:, 2], y]))
    _, gY = gl.datasets.load_csv(path, target=["a", "y"])
    assert gY.shape == (40, 2)
    plain = tmp_path / "plain.csv"                           # no header: the first row is data
    np.savetxt(plain, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
    gX, gy = gl.datasets.load_csv(plain)
    np.testing.assert_array_equal(gX, X)
    assert len(gy) == 40


def test_load_csv_zscore_and_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = _table()
    df = pd.DataFrame(np.column_stack([X, y]), columns=["a", "b", "c", "y"])
    gX, gy = gl.datasets.load_csv(df, target="y")
    np.testing.assert_array_equal(gX, X)
    zX, _ = gl.datasets.load_csv(df, target="y", preprocess="zscore")
    np.testing.assert_allclose(zX.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(zX.std(axis=0), 1, rtol=1e-12)
    df["name"] = ["x"] * len(df)
    with pytest.raises(ValueError, match="column 'name' is not numeric"):
        gl.datasets.load_csv(df, target="y")


@pytest.mark.parametrize("text, kw, match", [
    ("a,b,y\n1,2,3\n4,oops,6\n", {}, r"line 3: column 'b' holds 'oops'"),
    ("a,b,y\n1,2,3\n4,,6\n", {}, r"column 'b' has 1 empty"),
    ("a,b,y\n1,2,3\n", dict(target="z"), r"no column 'z'; columns: \['a', 'b', 'y'\]"),
    ("a,b,y\n1,2,3\n", dict(preprocess="minmax"), r"preprocess: unknown 'minmax'"),
    ("1,2\n3,4,5\n", {}, r"line 2: 3 fields"),
])
def test_load_csv_errors_name_the_line_and_column(tmp_path, text, kw, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        gl.datasets.load_csv(path, **kw)


def test_cli_takes_a_header_csv_and_says_what_was_done_to_it(tmp_path, capsys):
    from gpulinear.cli import main
    X, y = _table()
    path = tmp_path / "d.csv"
    _write_like_pandas(path, X, y)
    base = ["train", "--data", str(path), "--depth", "1", "--lr", "1e-5", "--loss", "l2",
            "--steps", "20", "--log-every", "10", "--backend", "numpy", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "raw")]) == 0
    res = gl.Result.load(tmp_path / "raw")
    assert res.meta["preprocess"] == "none"
    assert main(base + ["--out", str(tmp_path / "z"), "--preprocess", "zscore"]) == 0
    assert gl.Result.load(tmp_path / "z").meta["preprocess"] == "zscore"
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(base + ["--out", str(tmp_path / "m"), "--preprocess", "maxabs"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--preprocess: unknown 'maxabs' for a CSV file" in err


# -- results out -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grid_result():
    X, y = gl.datasets.synthetic_regression(200, 6, seed=0)
    cfgs = gl.grid(depth=[1, 2, 3], init=["normal", "identity"], lr=[1e-3, 1e-2, 1e-1, 10.0])
    return gl.train(X, y, cfgs, loss="l4", steps=300, log_every=50, target=0.05)


def test_repr_fits_one_screen_and_html_has_a_figure(grid_result):
    text = repr(grid_result)
    assert text.startswith("Result: 24 configs x 7 records")
    assert len(text.splitlines()) <= 24 and max(map(len, text.splitlines())) <= 100
    assert "swept: depth [1, 2, 3]; init [identity, normal]; lr [0.001, 0.01, 0.1, 10]" in text
    assert f"diverged: {int(grid_result.diverged.sum())} of 24" in text
    html = grid_result._repr_html_()
    assert "<pre>" in html and "data:image/png;base64," in html
    big = gl.Result(configs=gl.grid(lr=[float(v) for v in np.geomspace(1e-4, 1, 500)]),
                    steps=np.arange(0, 30001, 100), loss=np.ones((500, 301)),
                    diverged_at=np.full(500, -1), end_to_end=np.zeros((500, 1, 50)))
    assert len(repr(big)) < 2000


def test_table_is_always_a_dataframe_with_nan_for_never(grid_result):
    pd = pytest.importorskip("pandas")
    df = grid_result.table()
    assert isinstance(df, pd.DataFrame) and len(df) == 24
    never = grid_result.steps_to_target < 0
    assert never.any() and df["steps_to_target"][never].isna().all()
    np.testing.assert_array_equal(df["steps_to_target"][~never],
                                  grid_result.steps_to_target[~never])
    assert (df["reached"] == ~never).all()
    assert df["diverged_at"].isna().sum() == (~grid_result.diverged).sum()
    assert (df["loss"] == "l4").all()              # the loss given to train(), not None
    assert df["steps_to_target"].min() == grid_result.steps_to_target[~never].min()
    rows = grid_result.records()
    assert rows[int(np.flatnonzero(never)[0])]["steps_to_target"] is None


def test_long_format(grid_result):
    pytest.importorskip("pandas")
    long = grid_result.to_pandas(long=True)
    assert len(long) == 24 * 7
    assert list(long.columns[:5]) == ["config", "depth", "init", "lr", "step"]   # grid order
    one = long[long.config == 5]
    np.testing.assert_array_equal(one["loss"], grid_result.loss[5])
    np.testing.assert_array_equal(one["step"], grid_result.steps)


def test_to_xarray_labels_every_swept_field_and_round_trips(grid_result, tmp_path):
    xr = pytest.importorskip("xarray")
    ds = grid_result.to_xarray()
    assert ds.loss.dims == ("config", "step")
    for name in ("depth", "lr", "init"):
        assert ds[name].dims == ("config",)
    assert ds.end_to_end.shape == (24, 1, 6)
    np.testing.assert_array_equal(ds.loss.values, grid_result.loss)
    i = int(np.flatnonzero((ds.depth == 2).values & (ds.lr == 0.1).values
                           & (ds.init == "identity").values)[0])
    assert grid_result.configs[i] == gl.Config(depth=2, lr=0.1, init="identity")
    assert np.isnan(ds.steps_to_target.values[grid_result.steps_to_target < 0]).all()
    assert ds.attrs["loss"] == "l4" and "depth" in ds.attrs["swept_config_fields"]
    cube = grid_result.to_xarray(unstack=True)
    assert cube.loss.dims == ("depth", "init", "lr", "step")
    np.testing.assert_array_equal(cube.loss.sel(depth=2, lr=0.1, init="identity").values,
                                  grid_result.loss[i])
    path = tmp_path / "r.nc"
    try:
        ds.to_netcdf(path)
    except (ImportError, ValueError) as exc:       # no netCDF engine installed
        pytest.skip(f"no netCDF writer: {exc}")
    back = xr.load_dataset(path)
    np.testing.assert_array_equal(back.loss.values, ds.loss.values)
    np.testing.assert_array_equal(back.init.values, ds.init.values)
    np.testing.assert_array_equal(back.diverged.values, ds.diverged.values)
    assert back.attrs["fixed_config_fields"] == ds.attrs["fixed_config_fields"]


def test_load_accepts_the_cli_out_folder(grid_result, tmp_path):
    out = tmp_path / "runs" / "x"
    out.mkdir(parents=True)
    grid_result.save(out / "result")
    back = gl.Result.load(out)
    np.testing.assert_array_equal(back.loss, grid_result.loss)


# -- warnings where a default changes the science ---------------------------------------------

def test_identity_init_below_the_input_size_warns():
    X, y = gl.datasets.synthetic_regression(50, 6, seed=0)
    with pytest.warns(gl.ScienceWarning, match=r"identity init at depth 3 with hidden width 1 "
                                               r"< 6 inputs.*a 1 on feature 0"):
        gl.train(X, y, gl.Config(depth=3, init="identity"), steps=1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gl.train(X, y, gl.Config(depth=3, width=6, init="identity"), steps=1)
        gl.train(X, y, gl.Config(depth=3, init="normal"), steps=1)


def test_a_target_below_lstar_warns():
    X, y = gl.datasets.synthetic_regression(50, 6, seed=0)
    lstar = gl.optimal_loss(X, y, "l4")
    with pytest.warns(gl.ScienceWarning, match=r"below L\* = .* of l4 for 2 of 2 configs"):
        gl.train(X, y, gl.grid(lr=[1e-3, 1e-2]), loss="l4", steps=1, target=0.9 * lstar)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gl.train(X, y, gl.grid(lr=[1e-3, 1e-2]), loss="l4", steps=1, target=1.01 * lstar)


def test_best_lr_at_the_grid_edge_warns(grid_result):
    X, y = gl.datasets.synthetic_regression(100, 4, seed=0)
    res = gl.train(X, y, gl.grid(depth=[1, 2], lr=[1e-4, 1e-3, 1e-2]), loss="l2", steps=50)
    with pytest.warns(gl.ScienceWarning, match=r"best lr 0.01 of 'depth 1, lr 0.01' \(and 1 more "
                                               r"groups\) is the largest tried.*extend the grid "
                                               r"upward"):
        res.best()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repr(res)                        # the summary picks the best too, silently
        # the grid of grid_result brackets every live best (0.1 inside 1e-3..10)
        grid_result.best()


# -- the CLI's outputs -----------------------------------------------------------------------

def test_cli_grid_order_table_and_best_figure(tmp_path, capsys):
    from gpulinear.cli import main
    X, y = _table(m=60)
    data = tmp_path / "d.csv"
    _write_like_pandas(data, X, y)
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'[grid]\nlr = [1e-4, 1e-3]\ndepth = [1, 2]\n\n[train]\ndata = "{data}"\n'
                     'preprocess = "zscore"\nloss = "l2"\nsteps = 40\nlog_every = 10\n'
                     'target = 0.2\n')
    out = tmp_path / "out"
    assert main(["train", "--sweep", str(sweep), "--out", str(out), "--backend", "numpy",
                 "--no-progress"]) == 0
    res = gl.Result.load(out)
    # [grid] as written: lr slowest, depth fastest
    assert [(c.lr, c.depth) for c in res.configs] == [(1e-4, 1), (1e-4, 2), (1e-3, 1), (1e-3, 2)]
    import csv
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert {r["loss"] for r in rows} == {"l2"}
    assert {"steps_to_target", "reached", "diverged", "diverged_at", "target"} <= set(rows[0])
    for r, s in zip(rows, res.steps_to_target):
        assert r["steps_to_target"] == ("" if s < 0 else str(s))
    text = capsys.readouterr().out
    assert "best lr per model (by steps to reach and stay at the target" in text
    assert "speed-up vs depth 1" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("  depth ")]
    assert [ln.split()[:2] for ln in lines] == [["depth", "1"], ["depth", "2"]]
    assert (out / "loss.png").stat().st_size > 0


@pytest.mark.parametrize("toml, match", [
    ('[train]\ntarget = "1.01*optimal"\n', r"train --target: target must be a number .*"
                                            r"target_gap = 0.01"),
    ('[train]\ntarget_gap = -1\n', r"train --target: gl.rel\(gap\): gap must be a number > 0"),
    ('[grid]\nlr = ["fast"]\n', r"\[grid\]: lr must be a finite number > 0, got 'fast'"),
    ('[train]\ndiverge_above = -1\n', r"--diverge-above: diverge_above must be a loss level"),
    ('[train]\nsteps = "many"\n', r"train --steps: steps must be an int"),
])
def test_cli_sweep_values_fail_in_one_line_naming_the_key(tmp_path, capsys, toml, match):
    from gpulinear.cli import main
    sweep = tmp_path / "s.toml"
    sweep.write_text(toml)
    with pytest.raises(SystemExit) as info:
        main(["train", "--sweep", str(sweep), "--out", str(tmp_path / "o"), "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    import re
    assert re.search(match, err), err


# -- analysis through the Result (gpulinear.analysis decides) -------------------------------------

def _hand_result(loss, lrs=None, depths=None, target=None, lstar=0.0):
    n, r = np.shape(loss)
    depths = depths or [1] * n
    lrs = lrs or [1e-3 * (i + 1) for i in range(n)]
    return gl.Result(configs=[gl.Config(depth=d, lr=lr) for d, lr in zip(depths, lrs)],
                     steps=np.arange(r) * 10, loss=np.asarray(loss, dtype=float),
                     diverged_at=np.full(n, -1), end_to_end=np.zeros((n, 1, 2)),
                     steps_to_target=None if target is None else np.full(n, -1),
                     target=None if target is None else np.full(n, target),
                     meta={"loss": "l2", "optimal_loss": {"l2": lstar}})


def test_reach_and_stay_is_not_first_touched():
    """The issue's case: a run that touches the target, bounces and ends above it."""
    bounce = [2.0, 1.5, 1.005, 1.2, 1.09, 1.09]          # touches 1.01 x L* at step 20
    steady = [2.0, 1.6, 1.3, 1.02, 1.008, 1.004]          # reaches it at step 40 and stays
    res = _hand_result([bounce, steady], lstar=1.0)
    level = gl.rel(0.01)
    np.testing.assert_array_equal(res.steps_to(level, stay=False), [20, 40])
    np.testing.assert_array_equal(res.steps_to(level), [np.nan, 40])     # stay=True default
    assert res.best(by="steps_to", level=level).configs[0].lr == 1e-3
    assert res.best(by="reach_and_stay", level=level).configs[0].lr == 2e-3
    np.testing.assert_array_equal(res.gaps()[1], np.array(steady) - 1.0)


def test_speedups_per_depth_against_depth_one():
    base = [1.0, 0.5, 0.2, 0.05, 0.005, 0.001]      # reaches 0.01 from step 40
    fast = [1.0, 0.2, 0.004, 0.002, 0.001, 0.001]   # from step 20
    never = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    res = _hand_result([base, fast, never], depths=[1, 2, 3])
    table = res.speedups(level=0.01)
    assert list(table["depth"]) == [1, 2, 3]
    np.testing.assert_allclose(table["speedup"][:2], [1.0, 2.0])
    assert list(table["text"]) == ["1x", "2x", "<0.8x"]        # 40 / 50 steps: a bound
    assert np.isnan(table["steps"][2])
    run = res.speedups(level="run")          # the baseline's gaps at 10/25/50/100 % of the run
    assert run["text"][1].endswith("(median over levels)") and run["speedup"][1] > 1


def test_rel_targets_per_loss_and_meta():
    X, y = gl.datasets.synthetic_regression(100, 4, seed=1)
    cfgs = gl.grid(loss=["l2", "l4"], lr=[1e-2, 1e-1])
    res = gl.train(X, y, cfgs, steps=100, target=gl.rel(0.05))
    lstar = {name: gl.optimal_loss(X, y, name) for name in ("l2", "l4")}
    assert res.meta["optimal_loss"] == pytest.approx(lstar, rel=1e-12)
    np.testing.assert_allclose(res.target, [lstar["l2"] * 1.05] * 2 + [lstar["l4"] * 1.05] * 2)
    mixed = gl.train(X, y, cfgs, steps=10, target={"l2": gl.rel(0.05), "l4": 0.5})
    np.testing.assert_allclose(mixed.target[2:], 0.5)
    with pytest.raises(ValueError, match=r"no entry for loss\(es\) \['l4'\]"):
        gl.train(X, y, cfgs, steps=1, target={"l2": gl.rel(0.05)})
    with pytest.raises(ValueError, match=r"gl.rel\(gap\): gap must be a number > 0"):
        gl.rel(0)


def test_grid_sweeps_a_tuple_such_as_lr_grid_but_not_a_width_tuple():
    cfgs = gl.grid(depth=[1, 2], lr=gl.LR_GRID)         # the README's line
    assert len(cfgs) == 2 * len(gl.LR_GRID) and cfgs[1].lr == gl.LR_GRID[1]
    assert [c.widths for c in gl.grid(depth=3, width=(4, 2))] == [(4, 2)]


def test_to_xarray_with_loss_swept():
    pytest.importorskip("xarray")
    X, y = gl.datasets.synthetic_regression(60, 3, seed=0)
    res = gl.train(X, y, gl.grid(loss=["l2", "l4"], depth=[1, 2]), steps=5)
    ds = res.to_xarray()
    assert ds.loss.dims == ("config", "step") and list(ds.loss_fn.values) == ["l2"] * 2 + ["l4"] * 2
    cube = res.to_xarray(unstack=True)
    assert cube.loss.dims == ("loss_fn", "depth", "step")
    np.testing.assert_array_equal(cube.loss.sel(loss_fn="l4", depth=2).values, res.loss[3])


def test_features_of_very_different_scales_warn(tmp_path):
    X, y = _table()                                   # stds ~1, 100, 0.01: 1e4 apart
    with pytest.warns(gl.ScienceWarning,
                      match=r"standard deviations span 9.8e\+03x \(0.0083 to 81.8\).*zscore"):
        gl.train(X, y, gl.Config(), steps=1)
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
    Xz, yz = gl.datasets.load_csv(path, preprocess="zscore")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gl.train(Xz, yz, gl.Config(), steps=1)


@pytest.mark.parametrize("kw", [dict(diverge_above="big"), dict(diverge_above=True),
                                dict(diverge_factor="1e3")])
def test_ceiling_numbers_that_are_not_numbers_are_refused(kw):
    X, y, _ = unstable_l2()
    with pytest.raises(TypeError, match=f"{next(iter(kw))} must be a number"):
        gl.train(X, y, gl.Config(), steps=1, **kw)
