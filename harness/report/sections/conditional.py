"""Conditional flows, p(x | c): what a context costs each op against the same flow
unconditional, how time grows with the context's size, and posterior sampling (a
batch of draws for one observation) against d. Reads the rows of a sweep with
``--context`` (harness.report.load.Sources.conditional), and the fits of conditional
tasks judged at fixed observations (posterior.csv of a fit folder)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...ops import LOG_PROB, SAMPLE, SWEEP_OPS
from ...table import OK, Col
from .. import plots, tables
from ..findings import CONTEST, Finding, Value, note, ratio
from ..load import Sources, load_posterior
from . import peers

TITLE = "Conditional flows"


def _groups(src: Sources):
    """(device, batch, rows) of every flow's default algorithm, the peers' included,
    conditional and not."""
    rows = src.conditional
    if rows.empty:
        return
    main = tables.main_rows(rows)
    for device, batch in tables.groups(main):
        yield device, batch, tables.in_group(main, device, batch)


def against_peers(g: pd.DataFrame) -> list[tuple[str, int, str, int, str, Value]]:
    """(family, d, op, context, fastest peer, ours / that peer) wherever ours and a peer
    of its family both ran with a context: paired by round (one sweep times them together)."""
    ok = g[(g[Col.STATUS] == OK) & (g[Col.CONTEXT] > 0)]
    found = []
    for (family, dim, op, context), h in ok.groupby([Col.FAMILY, Col.DIM, Col.OP, Col.CONTEXT], sort=True):
        ours, rivals = h[~tables.is_peer(h) & (h[Col.MODEL] == family)], h[tables.is_peer(h)]
        if ours.empty or rivals.empty:
            continue
        fastest = rivals.sort_values(Col.MEDIAN_S).iloc[0]
        label = f"{family} {op} (d={int(dim)}, context {int(context)}) / {fastest[Col.MODEL]}"
        found.append((family, int(dim), op, int(context), fastest[Col.MODEL], ratio(ours.iloc[0], fastest, label)))
    return found


CONTESTS_TITLE = "Conditioned contests"


def contest_entries(vs: pd.DataFrame) -> list[tuple[str, int, str, int, str, Value]]:
    """(family, d, op, context, fastest peer, ours / that peer) of each conditional
    contest (``harness versus --context``): the median over interleaved rounds with its
    bootstrap interval over those rounds, or no interval where the peer was timed once."""
    found = []
    if vs.empty:
        return found
    for r in vs[(vs["role"] == "ours") & vs["ratio"].notna()].itertuples(index=False):
        family, op = str(r.contest).split(".", 1)
        low, high = peers.bound(r.ratio_low), peers.bound(r.ratio_high)
        label = f"{family} {op} (d={int(r.dim)}, context {int(r.context)}) / {r.fastest}"
        value = Value(label, float(r.ratio), low, high, how=CONTEST if low is not None else "")
        found.append((family, int(r.dim), op, int(r.context), str(r.fastest), value))
    return found


def render_contests(vs: pd.DataFrame, out: Path) -> list[str]:
    """The conditional contests' table and their forest plot."""
    if vs.empty:
        return []
    lines = [
        f"### {CONTESTS_TITLE}",
        "",
        "`python -m harness versus --context ...`: each contest of the peers' section with every contender "
        "conditioned on the same context (log_prob: a context per point; sample: one context for the batch of "
        "draws), the rivals that take one; float32, one thread, contenders alternating in one process. The "
        "ratio is the median over rounds of ours / the fastest peer of the round, with a bootstrap 95% interval "
        "over rounds (it covers those rounds, not a rerun); `ours is` faster or slower only where it excludes 1:",
        "",
        tables.markdown(peers.versus_table(vs)),
        "",
    ]
    title = "Conditioned contests: ours against the fastest peer"
    for name in peers.forest(vs, out, "conditional_contests", title)[:1]:
        lines += [f"![conditional contests]({name})", ""]
    return lines


def _at(g: pd.DataFrame, model: str, dim: int, op: str, context: int) -> pd.Series | None:
    return tables.ok_row(g[g[Col.CONTEXT] == context], model, dim, op)


def overhead(g: pd.DataFrame, model: str, dim: int, op: str, context: int, label: str = "") -> Value | None:
    """``op`` with a context of ``context`` features over the same flow unconditional:
    paired by round where both were timed in the same rounds (one sweep times every
    context of a configuration together)."""
    a, b = _at(g, model, dim, op, context), _at(g, model, dim, op, 0)
    return ratio(a, b, label) if a is not None and b is not None else None


def table(g: pd.DataFrame) -> pd.DataFrame:
    """Per flow, d, op and context size: the median [IQR] in ms, the contexts per call
    and the ratio to the unconditional flow [95% CI]."""
    rows = []
    conditional = g[g[Col.CONTEXT] > 0]
    keys = conditional[[Col.MODEL, Col.DIM, Col.OP]].drop_duplicates()
    order = {op: i for i, op in enumerate(SWEEP_OPS)}
    keys = keys.assign(o=keys[Col.OP].map(order)).sort_values([Col.MODEL, Col.DIM, "o"])
    for model, dim, op in keys[[Col.MODEL, Col.DIM, Col.OP]].itertuples(index=False, name=None):
        for context in sorted(g[(g[Col.MODEL] == model) & (g[Col.DIM] == dim) & (g[Col.OP] == op)][Col.CONTEXT]):
            r = g[(g[Col.MODEL] == model) & (g[Col.DIM] == dim) & (g[Col.OP] == op) & (g[Col.CONTEXT] == context)]
            r = r.iloc[0]
            shown = tables.timed(g[g[Col.CONTEXT] == context], model, dim, op)
            v = overhead(g, model, dim, op, int(context)) if context else None
            rows.append(
                {
                    Col.MODEL: model,
                    "d": int(dim),
                    Col.OP: op,
                    Col.CONTEXT: int(context),
                    "contexts per call": "" if not context else tables.fmt(r[Col.CONTEXTS_PER_CALL]),
                    "ms [IQR]": shown,
                    "/ unconditional [95% CI]": v.show() if v is not None else ("1 (itself)" if not context else ""),
                }
            )
    return pd.DataFrame(rows)


def figure(g: pd.DataFrame, device: str, batch: int, out: Path) -> list[str]:
    """Time against the context's size at the largest d of each flow (one panel per op),
    and sample's time (batch draws for one context) against d at the largest context."""
    ok = g[g[Col.STATUS] == OK]
    ops = [op for op in SWEEP_OPS if op in set(ok[Col.OP])]
    if not ops or ok[Col.CONTEXT].nunique() < 2:
        return []
    style = plots.styles(ok)
    fig, axes = plots.grid(1, len(ops) + (SAMPLE in ops), 4.2, 3.2)
    for ax, op in zip(axes[0], ops):
        for model, m in ok[ok[Col.OP] == op].groupby(Col.MODEL, sort=False):
            at = m[m[Col.DIM] == m[Col.DIM].max()].sort_values(Col.CONTEXT)
            half = at[Col.IQR_S].fillna(0) / 2
            ax.errorbar(
                at[Col.CONTEXT],
                at[Col.MEDIAN_S],
                yerr=half,
                label=f"{model} (d={int(at[Col.DIM].iloc[0])})",
                capsize=2,
                **style.get(model, {}),
            )
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=1)
        sizes = sorted(int(c) for c in ok[Col.CONTEXT].unique())
        ax.set_xticks(sizes, [str(c) for c in sizes], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlim(-0.3, max(sizes) * 1.3)
        ax.set_xlabel("context features (0: unconditional)")
        ax.set_ylabel("median seconds per call")
        ax.set_title(f"{op} against the context", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        plots.legend(ax)
    if SAMPLE in ops:
        ax = axes[0][len(ops)]
        top = int(ok[Col.CONTEXT].max())
        for model, m in ok[(ok[Col.OP] == SAMPLE) & (ok[Col.CONTEXT] == top)].groupby(Col.MODEL, sort=False):
            plots.curve(ax, m, model, **style.get(model, {}))
        plots.log_axes(ax, f"{int(batch)} draws for one observation (context {top})", "seconds per observation")
        plots.legend(ax)
    fig.suptitle(f"Conditional flows on {device}, batch {int(batch)}", fontsize=11)
    return plots.save(fig, out, f"conditional_{device}_b{int(batch)}")


POSTERIOR_TITLE = "Conditional fits: the posterior at fixed observations"


def over_seeds(values: pd.Series) -> str:
    """'0.121 [0.094, 0.182]': the median of one value per seed [their min, max]; the
    value alone from one seed."""
    shown = f"{values.median():.3f}"
    return shown + (f" [{values.min():.3f}, {values.max():.3f}]" if len(values) > 1 else "")


def posterior_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per task and model: at each fixed observation the gap mean(log p - log q) over
    draws from its exact posterior (an estimate of KL, nats), the median over seeds
    [their min, max]; and the mean over the observations."""
    rows = []
    for (data, model), g in df.groupby([Col.DATA, Col.MODEL], sort=True):
        seeds = g[Col.SEED].nunique()
        row = {Col.DATA: data, Col.MODEL: model, "seeds": seeds}
        for k, at in g.groupby(Col.OBSERVATION, sort=True):
            row[f"x{int(k)}"] = over_seeds(at[Col.GAP])
        row["mean over x"] = over_seeds(g.groupby(Col.SEED)[Col.GAP].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _posteriors(src: Sources) -> list[tuple[Path, pd.DataFrame]]:
    found = [(folder, load_posterior(folder)) for folder, _, _ in src.fits]
    return [(folder, df) for folder, df in found if not df.empty]


def render_posteriors(src: Sources) -> list[str]:
    lines = []
    for folder, df in _posteriors(src):
        per_observation = int(df[Col.POINTS].max())
        lines += [
            f"### {POSTERIOR_TITLE}",
            "",
            f"From `{folder}`: each conditional flow q(theta | x) fitted to (theta, x) pairs of the joint, then "
            f"judged at the task's fixed observations x0, x1, ... on {per_observation} draws from each exact "
            "posterior: the gap mean(log p - log q) estimates KL(p(. | x) || q(. | x)) in nats (0: the truth). "
            "The median over seeds [their min, max]; the fits' NLLs, their standard errors and the paired "
            "verdict over seeds are in the quality section's table of the same folder:",
            "",
            tables.markdown(posterior_table(df)),
            "",
        ]
    return lines


def render(src: Sources, out: Path) -> list[str]:
    lines: list[str] = render_posteriors(src)
    for device, batch, everything in _groups(src):
        g = tables.flows(everything)
        shown = table(g)
        if shown.empty:
            continue
        lines += [
            f"### {TITLE} on {device}, batch {int(batch)}",
            "",
            f"Each flow conditioned on a context of `context` features, p(x | c), beside itself unconditional "
            f"(context 0), every context of a configuration timed in the same interleaved rounds. log_prob and "
            f"train_step take {int(batch)} (x, c) pairs per call; sample draws {int(batch)} points for one "
            "context (the posterior's shape: one observation, many parameters). Medians [IQR] in ms; the ratio "
            "to the unconditional flow with its 95% interval:",
            "",
            tables.markdown(shown),
            "",
        ]
        for name in figure(g, device, batch, out)[:1]:
            lines += [f"![conditional]({name})", ""]
        rivals = against_peers(everything)
        if rivals:
            shown = pd.DataFrame(
                {
                    Col.FAMILY: f,
                    "d": d,
                    Col.OP: op,
                    Col.CONTEXT: c,
                    "fastest peer": peer,
                    "ours / fastest peer [95% CI]": v.show(),
                }
                for f, d, op, c, peer, v in rivals
            )
            lines += [
                f"Ours against the fastest peer of the family on {device}, batch {int(batch)}, each with the same "
                "context (the peers' conditioners read it as ours do; below 1: ours is faster), paired by round:",
                "",
                tables.markdown(shown),
                "",
            ]
    lines += render_contests(src.contests(conditional=True), out)
    return [f"## {TITLE}", "", *lines] if lines else []


def _listing(entries: list[tuple[str, str, int, Value, str]]) -> tuple[str, int]:
    """'log_prob maf 1.87 [1.59, 2.21], ...; sample ...' of (op, model, d, value, rival)
    entries, d named only where it is not the most common one (returned)."""
    dims = [d for _, _, d, _, _ in entries]
    common = max(set(dims), key=dims.count)
    parts = []
    for op in dict.fromkeys(op for op, *_ in entries):
        shown = [
            f"{m} {v.show()}" + (f" at d={d}" if d != common else "") + (f" ({rival})" if rival else "")
            for o, m, d, v, rival in entries
            if o == op
        ]
        parts.append(f"{op} " + ", ".join(shown))
    return "; ".join(parts), common


def _fastest(entries: list[tuple[str, int, str, int, str, Value]], lead: str, where: str, about: dict) -> Finding:
    """ "Whose conditional flow is fastest?": per op and family, the shape least
    favourable to ours (the largest ours / fastest peer) with its interval, and the
    range of the medians over every shape measured."""
    per: dict[tuple[str, str], list[tuple[int, int, str, Value]]] = {}
    for family, dim, op, context, peer, v in entries:
        if op in (LOG_PROB, SAMPLE):
            per.setdefault((op, family), []).append((dim, context, peer, v))
    parts: dict[str, list[str]] = {}
    shown = []
    for (op, family), found in sorted(per.items()):
        dim, context, peer, worst = max(found, key=lambda e: e[3].value)
        medians = [v.value for *_, v in found]
        spread = f" ({tables.fmt(min(medians))}-{tables.fmt(max(medians))})" if len(found) > 1 else ""
        parts.setdefault(op, []).append(f"{family} {worst.show()} at d={dim}, c={context} vs {peer}{spread}")
        shown.append(worst)
    shapes = sorted({(d, c) for _, d, _, c, _, _ in entries})
    dims = ", ".join(str(d) for d in sorted({d for d, _ in shapes}))
    contexts = ", ".join(str(c) for c in sorted({c for _, c in shapes}))
    text = (
        f"{lead}, ours / the fastest peer at the least favourable of d {dims} and context (c) {contexts} (the "
        f"{len(shapes)} medians' range): " + "; ".join(f"{op} " + ", ".join(said) for op, said in parts.items())
    )
    return Finding("Whose conditional flow is fastest?", text, where, tuple(shown), note(shown), about)


def findings(src: Sources) -> list[Finding]:
    found = []
    for _, df in _posteriors(src):
        for data, g in df.groupby(Col.DATA, sort=True):
            per_seed = g.groupby([Col.MODEL, Col.SEED])[Col.GAP].mean().groupby(Col.MODEL)
            spread = per_seed.agg(["median", "min", "max", "count"]).sort_values("median")
            listed = ", ".join(f"{m} {over_seeds(per_seed.get_group(m))}" for m in spread.index)
            seeds = int(spread["count"].max())
            text = (
                f"on {data}, KL from the exact posterior to the flow's, averaged over {g[Col.OBSERVATION].nunique()} "
                f"fixed observations (nats; the median over {seeds} seed{'s' if seeds > 1 else ''}"
                + (" [their min, max]" if seeds > 1 else "")
                + f"): {listed}"
            )
            question = "How close is each conditional flow's posterior?"
            shown = tuple(
                Value(f"{m} gap", float(r["median"]), *((r["min"], r["max"]) if r["count"] > 1 else ()), units="nats")
                for m, r in spread.iterrows()
            )
            span = "a conditional fit's gap: [min, max] over seeds, not a confidence interval" if seeds > 1 else ""
            found.append(Finding(question, text, POSTERIOR_TITLE, shown, span, {"data": data}))
    vs = src.contests(conditional=True)
    contests = contest_entries(vs)
    if contests:
        batches = ", ".join(tables.fmt(b) for b in sorted(set(vs[Col.BATCH].astype(int))))
        found.append(_fastest(contests, f"in A/B contests, {batches} points per call", CONTESTS_TITLE, {}))
    for device, batch, everything in _groups(src):
        g = tables.flows(everything)
        ok = g[(g[Col.STATUS] == OK) & (g[Col.CONTEXT] > 0)]
        if ok.empty:
            continue
        top = int(ok[Col.CONTEXT].max())
        where = f"{TITLE} on {device}, batch {int(batch)}"
        about = dict(device=device, batch=int(batch), context=top)
        if not contests:  # the sweep's rounds answer only where no contest does
            found.append(
                _fastest(against_peers(everything), f"on {device}, {int(batch)} points per call", where, about)
            )
        entries = []
        for op in (LOG_PROB, SAMPLE):
            for model in dict.fromkeys(ok[Col.MODEL]):
                dims = ok[(ok[Col.MODEL] == model) & (ok[Col.CONTEXT] == top)][Col.DIM]
                for dim in sorted(set(dims), reverse=True):  # the largest d where both were timed
                    v = overhead(g, model, dim, op, top, f"{model} {op} (d={int(dim)})")
                    if v is not None:
                        entries.append((op, model, int(dim), v, ""))
                        break
        if entries:
            text, dim = _listing(entries)
            shown = tuple(v for *_, v, _ in entries)
            lead = f"on {device}, {int(batch)} points per call, d={dim}, context {top} over the flow unconditional: "
            found.append(Finding("What does a context cost?", lead + text, where, shown, note(shown), about))
    return found
