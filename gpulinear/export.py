"""A Result in the ecosystem: labelled arrays (xarray), tables (pandas), and a one-screen summary.

    to_xarray(result, unstack=False)   Dataset: loss(config, step) with every swept Config field
                                       as a coordinate of `config` (field `loss`: `loss_fn`);
                                       diverged, diverged_at,
                                       steps_to_target (NaN: never), final/best loss and the
                                       end-to-end matrices as variables; meta as attrs (JSON
                                       strings where netCDF cannot hold the value).
                                       unstack=True: loss(depth, lr, ..., step), one axis per
                                       swept field (every combination must be unique).
    to_pandas(result, long=False)      one row per config (table()), or long=True one row per
                                       (config, recorded step): swept fields, step, loss, gap.
    summary(result) / html(result)     the text of repr(Result) and its notebook HTML.
pandas and xarray are the optional extras `table` and `xarray`; nothing here imports them until
called.  "never" and "not diverged" are NaN in tables and datasets (the Result's arrays keep -1).
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np

from .config import Config

# the Config field `loss` is the coordinate `loss_fn` (the variable `loss` holds the curves)
COORD = {"loss": "loss_fn"}
# Config fields in the order a table shows them; `label` is presentation only
FIELDS = [f.name for f in dataclasses.fields(Config) if f.name != "label"]


def _need(module, extra):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"this needs {module}: pip install 'gpulinear[{extra}]'") from None


def field_value(result, cfg, name):
    """A Config field as a table shows it: the effective loss (the Config's own or train()'s),
    width as an int or a string like "(4, 2)" (a tuple is one value, not two columns)."""
    v = getattr(cfg, name)
    if name == "loss" and v is None:
        return result.meta.get("loss")
    if isinstance(v, tuple):
        return str(v)
    return v


def swept_fields(result) -> list:
    """Config fields that differ between the configs of `result` (the grid's axes), slowest
    varying first: for a gl.grid, the order its fields were given in."""
    out = []
    for name in FIELDS:
        values = [_key(field_value(result, c, name)) for c in result.configs]
        if len(set(values)) > 1:
            changes = sum(a != b for a, b in zip(values, values[1:]))
            out.append((changes, len(out), name))
    return [name for _, _, name in sorted(out)]


def _key(v):
    return ("nan",) if isinstance(v, float) and v != v else v


def never_nan(a):
    """An int array with -1 for "never" / "not diverged" as float with NaN there."""
    a = np.asarray(a)
    return np.where(a < 0, np.nan, a.astype(np.float64))


def config_columns(result) -> dict:
    """{column: (n,) values} per config: every Config field with the effective loss, then the
    outcome columns."""
    n = len(result.configs)
    cols = {name: [field_value(result, c, name) for c in result.configs] for name in FIELDS}
    cols["label"] = [c.describe() for c in result.configs]
    cols["final_loss"] = result.final_loss
    cols["best_loss"] = result.best_loss
    cols["diverged"] = result.diverged
    cols["diverged_at"] = never_nan(result.diverged_at)
    if result.steps_to_target is not None:
        cols["target"] = np.asarray(result.target, dtype=float) if result.target is not None \
            else np.full(n, np.nan)
        cols["steps_to_target"] = never_nan(result.steps_to_target)
        cols["reached"] = result.steps_to_target >= 0
        from .measures import steps_to
        opt = optimal_per_config(result)
        # reach-and-stay (analysis.steps_to, at the recorded steps): the first record from which
        # the loss stays <= the target to the end; L* only shifts both sides (0 where unknown)
        cols["steps_to_target_stay"] = steps_to(result, None, True,
                                                0.0 if opt is None else opt)
    return cols


def to_pandas(result, long=False):
    """A DataFrame: one row per config (long=False), or per (config, recorded step)."""
    pd = _need("pandas", "table")
    cols = config_columns(result)
    if not long:
        return pd.DataFrame(cols)
    n, r = result.loss.shape
    swept = swept_fields(result)
    data = {"config": np.repeat(np.arange(n), r)}
    for name in swept:
        data[name] = np.repeat(np.asarray(cols[name], dtype=object), r)
    data["step"] = np.tile(result.steps, n)
    data["loss"] = result.loss.reshape(-1)
    opt = optimal_per_config(result)
    if opt is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            data["gap"] = (result.loss - opt[:, None]).reshape(-1)
    dead = result.diverged[:, None] & (result.steps[None, :] >= result.diverged_at[:, None])
    data["diverged"] = dead.reshape(-1)
    df = pd.DataFrame(data)
    for name in swept:                          # numbers stay numbers
        try:
            df[name] = pd.to_numeric(df[name])
        except (ValueError, TypeError):
            pass
    return df


def optimal_per_config(result):
    """(n,) L* of each config's loss where meta["optimal_loss"] holds it ({loss name: L*}, as
    the CLI writes it), else None."""
    lstars = result.meta.get("optimal_loss")
    if not isinstance(lstars, dict):
        return None
    names = [field_value(result, c, "loss") for c in result.configs]
    if not all(n in lstars for n in names):
        return None
    return np.array([float(lstars[n]) for n in names])


def _attr(v):
    """A netCDF-safe attribute: numbers and strings as they are, the rest as JSON."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, float, str, np.integer, np.floating)):
        return v
    from .result import json_default
    return json.dumps(v, default=json_default)


def to_xarray(result, unstack=False):
    """The Result as an xarray.Dataset (module docstring)."""
    xr = _need("xarray", "xarray")
    cols = config_columns(result)
    swept = swept_fields(result)
    n = len(result.configs)
    coords = {"config": np.arange(n), "step": np.asarray(result.steps)}
    for name in swept:
        values = cols[name]
        coords[COORD.get(name, name)] = ("config", np.asarray(["none" if v is None else v
                                                                for v in values]))
    coords["label"] = ("config", np.asarray(cols["label"]))
    loss_attrs = {"long_name": "training loss"}
    if "loss" not in swept:
        loss_attrs["loss"] = str(result.meta.get("loss"))
    data = {"loss": (("config", "step"), np.asarray(result.loss, dtype=np.float64), loss_attrs),
            "diverged": ("config", np.asarray(result.diverged)),
            "diverged_at": ("config", cols["diverged_at"], {"note": "NaN: did not diverge"}),
            "final_loss": ("config", cols["final_loss"]),
            "best_loss": ("config", cols["best_loss"]),
            "end_to_end": (("config", "output", "input"), np.asarray(result.end_to_end))}
    if "steps_to_target" in cols:
        data["steps_to_target"] = ("config", cols["steps_to_target"], {"note": "NaN: never"})
        data["target"] = ("config", cols["target"])
    opt = optimal_per_config(result)
    if opt is not None:
        data["optimal_loss"] = ("config", opt)
    fixed = {name: field_value(result, result.configs[0], name) for name in FIELDS
             if name not in swept}
    attrs = {k: _attr(v) for k, v in result.meta.items() if v is not None}
    if "loss" in swept:             # train()'s default, not what each config used (loss_fn)
        attrs.pop("loss", None)
    attrs["fixed_config_fields"] = _attr(fixed)
    attrs["swept_config_fields"] = _attr(swept)
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    if unstack and swept:
        dims = [COORD.get(name, name) for name in swept]
        ds = ds.drop_vars("label").set_index(config=dims).unstack("config")
        ds = ds.transpose(*dims, "step", ...)
    return ds


# -- the one-screen summary --------------------------------------------------------------------

def _values(vals, most=6) -> str:
    vals = sorted(set(vals), key=lambda v: (str(type(v)), v))
    if len(vals) <= most:
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) + "]"
    lo, hi = vals[0], vals[-1]
    fmt = (lambda v: f"{v:g}") if isinstance(lo, float) else str
    return f"{len(vals)} values {fmt(lo)} .. {fmt(hi)}"


def summary(result, best_rows=8) -> str:
    """What repr(Result) shows: fits one screen whatever the size of the grid."""
    n, r = result.loss.shape
    m = result.meta
    steps = result.steps
    head = (f"Result: {n} configs x {r} records (steps {int(steps[0]) if r else 0}.."
            f"{int(steps[-1]) if r else 0})")
    swept = swept_fields(result)
    where = ", ".join(str(m[k]) for k in ("loss", "backend", "dtype")
                      if m.get(k) and not (k == "loss" and "loss" in swept))
    lines = [head + (f", {where}" if where else "")]
    if m.get("data") is not None:
        lines.append(f"  data: {m['data']} (preprocess: {m.get('preprocess', 'as given')})")
    if swept:
        lines.append("  swept: " + "; ".join(
            f"{name} {_values([field_value(result, c, name) for c in result.configs])}"
            for name in swept))
    nd = int(result.diverged.sum())
    lines.append(f"  diverged: {nd} of {n}")
    if result.steps_to_target is not None:
        reached = int((result.steps_to_target >= 0).sum())
        lines.append(f"  target: reached by {reached} of {n} (steps_to_target: NaN = never)")
    try:
        best = result.best_indices(warn=False)
    except Exception:               # a Result built by hand with odd configs: no best rows
        best = []
    if best:
        lines.append(f"  best final loss per group ({len(best)} groups):")
        for i in best[:best_rows]:
            lines.append(f"    {result.configs[i].describe():<44s} {result.final_loss[i]:.6g}")
        if len(best) > best_rows:
            lines.append(f"    ... {len(best) - best_rows} more (res.best().table())")
    return "\n".join(lines)


def html(result) -> str:
    """repr for Jupyter: the summary and a small figure of the best config per group."""
    import html as _html
    text = f"<pre>{_html.escape(summary(result))}</pre>"
    try:
        import matplotlib
        from matplotlib.figure import Figure
        fig = Figure(figsize=(5.0, 3.0))
        ax = fig.add_subplot()
        best = result.subset(result.best_indices(warn=False)[:12])
        opt = optimal_per_config(best)
        best.plot(ax=ax, optimal=0.0 if opt is None else opt)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        del matplotlib
        img = base64.b64encode(buf.getvalue()).decode()
        text += f'<img src="data:image/png;base64,{img}" alt="best config per group"/>'
    except Exception as exc:        # a summary without its figure rather than no repr at all
        text += f"<p>(no figure: {_html.escape(type(exc).__name__)})</p>"
    return text
