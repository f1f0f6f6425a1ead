"""The README's figures, written from what the examples measured.

Every row of the README's example table ends with the figures its example printed when run
with the README's command (and, where results vary by seed, with more seeds); the Quickstart
quotes the flagship's last line. They are written here from examples/results/NAME.json,
which holds for each run of an example its command, the figures picked from the metrics.json
the run wrote, its wall-clock and CPU time, and the machine's load average before and after
(the README gives the wall-clock time, and the range of load averages the runs saw).
tests/test_readme_figures.py fails when the README and those files disagree.

    python tools/readme_figures.py                  # rewrite the README's figures from examples/results
    python tools/readme_figures.py --run NAME ...   # re-measure: run NAME's commands one at a time (with
                                                    # --no-progress and a temporary --out), save
                                                    # examples/results/NAME.json, rewrite the README
    python tools/readme_figures.py --run all        # every example: minutes on two idle cores, far longer
                                                    # on a busy machine

What is kept of each run and how it reads in the README is defined per example below
(EXAMPLES): when an example's metrics or message change, change its entry and re-run it.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "examples" / "results"
TABLE_ROW = "table row"  # a slot: the last cell of the example's row in the README's example table


class Example:
    """runs: label -> extra command-line arguments (the label "default" is the README command);
    figures: metrics.json's dict -> the figures to keep (JSON); slots: where the figures go in the
    README (TABLE_ROW, or a regex whose group `text` is the place) -> function(runs) -> that text."""

    def __init__(self, runs, figures, slots):
        self.runs, self.figures, self.slots = runs, figures, slots


def command(name, args=()):
    return " ".join(["python", f"examples/{name}.py", *args])


def sci(x, digits):
    """x in scientific notation without padded exponents: 1.7e-7, not 1.7e-07."""
    mantissa, exponent = f"{x:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def took(runs, label="default"):
    return f"{runs[label]['seconds']:.0f} s"


def load_range(results):
    loads = [load for result in results.values() for run in result["runs"].values() for load in run["load_average"]]
    return f"{min(loads):.1f}–{max(loads):.1f}"


# ---- each example: what is kept, and how it reads ------------------------------------------------

def char_lm_cell(runs):
    f = runs["default"]["figures"]
    return (f"validation **{f['val_bpc']:.2f} bits/char** vs unigram {f['unigram_bpc']:.2f} and bigram "
            f"{f['bigram_bpc']:.2f} (computed by the script on the same split); {took(runs)}")


def char_lm_last_line(runs):
    f = runs["default"]["figures"]
    verdict = "beats" if f["val_bpc"] < f["bigram_bpc"] else "does NOT beat"
    return (f"val bpc {f['val_bpc']:.3f} (unigram {f['unigram_bpc']:.3f}, bigram {f['bigram_bpc']:.3f}): "
            f"the LSTM {verdict} the bigram")


def sentiment_cell(runs):
    acc = {label: run["figures"]["test_acc"] for label, run in runs.items()}
    return (f"held-out accuracy **{acc['default']:.1%}** (600 sentences; {acc['seed 1']:.1%} and "
            f"{acc['seed 2']:.1%} with `--seed 1`, `2`), beside {runs['default']['figures']['bow_acc']:.1%} "
            f"for a bag-of-words logistic regression trained with the same framework; {took(runs)}")


def seq2seq_figures(metrics):
    return dict(steps=metrics["steps"], beam_width=metrics["beam_width"],
                **{f"{model}_{how}": metrics["models"][model][f"{how}_acc"]
                   for model in ("plain", "attention") for how in ("greedy", "beam")})


def seq2seq_cell(runs):
    f = runs["default"]["figures"]

    def both(run, model):
        return f"{run['figures'][model + '_greedy']:.1%} / {run['figures'][model + '_beam']:.1%}"
    seeds = "; ".join(f"`--seed {label[-1]}`: attention {both(runs[label], 'attention')}, plain "
                      f"{both(runs[label], 'plain')}" for label in ("seed 1", "seed 2"))
    return (f"after {f['steps']} steps each, exact match on 2,000 held-out dates (greedy / beam of width "
            f"{f['beam_width']}): attention **{both(runs['default'], 'attention')}**, plain "
            f"{both(runs['default'], 'plain')} ({seeds}); {took(runs)}")


def binary_figures(metrics):
    return dict(seeds=metrics["seeds"], solved_at=metrics["solved_at"],
                results={cell: {model: dict(accuracy=e["accuracy"], solved=e["solved"]) for model, e in row.items()}
                         for cell, row in metrics["results"].items()})


def binary_cell(runs):
    def counts(run, cell, means=True):
        f = run["figures"]
        row = f["results"][cell]
        return ", ".join(f"{model} {e['solved']}/{f['seeds']}"
                         + (f" ({sum(e['accuracy']) / len(e['accuracy']):.2f})" if means else "")
                         for model, e in row.items())
    default, more = runs["default"], runs["more seeds"]
    return (f"recall at N=50, seeds solved (held-out accuracy ≥ {default['figures']['solved_at']:g}; mean "
            f"accuracy): {counts(default, 'recall 50')}; over "
            f"{more['figures']['seeds']} more seeds (`{' '.join(BINARY_MORE_SEEDS)}`): "
            f"{counts(more, 'recall 50', means=False)}; parity L=4: {counts(default, 'parity 4', means=False)}; "
            f"{took(runs)} (the {more['figures']['seeds']} seeds: {took(runs, 'more seeds')})")


def vanishing_figures(metrics):
    kept = {key: flow[0] / flow[-1] for key, flow in metrics["flows"].items()}  # the share reaching t = 0
    runs = metrics["exploding"]
    clipped = next(name for name in runs if name.startswith("clip"))
    return dict(kept=kept, accuracy=metrics["trained_accuracy"],
                max_update={name: max(run["update_norm"]) for name, run in runs.items()},
                final_loss={name: sum(run["loss"][-10:]) / 10 for name, run in runs.items()}, clipped=clipped)


def vanishing_cell(runs):
    f = runs["default"]["figures"]
    kept, acc, clipped = f["kept"], f["accuracy"], f["clipped"]
    return (f"at init the gradient reaching t=0 is {sci(kept['init RNN'], 0)} of the last step's for the RNN; after "
            f"training {sci(kept['trained RNN'], 1)} (RNN, accuracy {acc['RNN']:.2f}) vs {kept['trained LSTM']:.2f} "
            f"(LSTM, accuracy {acc['LSTM']:.2f}) and {kept['trained GRU']:.1f} (GRU, accuracy {acc['GRU']:.2f}); "
            f"`{clipped}` keeps every update ≤ {f['max_update'][clipped]:.2g} where the unclipped run takes a step "
            f"of {f['max_update']['no clipping']:.1f} and ends at loss {f['final_loss']['no clipping']:.2f} "
            f"instead of {f['final_loss'][clipped]:.3f}; {took(runs)}")


def curvature_figures(metrics):
    keys = ("stability_edge", "peak_sharpness", "first_loss", "final_loss", "final_accuracy")
    return dict({key: metrics[key] for key in keys}, first=metrics["sharpness"][0], last=metrics["sharpness"][-1],
                last_step=metrics["sharpness_steps"][-1])


def curvature_cell(runs):
    f = runs["default"]["figures"]
    return (f"λ_max goes from {f['first']:.2f} at step 0 to a peak of {f['peak_sharpness']:.2f} (2/lr = "
            f"{f['stability_edge']:g}) and ends at {f['last']:.2f} at step {f['last_step']}, the task solved "
            f"(accuracy {f['final_accuracy']:.2f}, loss {f['first_loss']:.3f} → {f['final_loss']:.4f}); {took(runs)}")


def custom_cell_figures(metrics):
    return {n: dict(accuracy=r["accuracy"], steps=r["steps"]) for n, r in metrics["recall"].items()}


def custom_cell_cell(runs):
    f = runs["default"]["figures"]
    return "; ".join(f"recall at N={n}: accuracy {r['accuracy']:.2f} after {r['steps']} steps"
                     for n, r in f.items()) + f"; {took(runs)}"


def pick(*keys):
    return lambda metrics: {key: metrics[key] for key in keys}


BINARY_MORE_SEEDS = ("--seeds", "10", "--seed", "3", "--tasks", "recall", "--recall-lengths", "50")
EXAMPLES = {
    "char_lm": Example({"default": ()}, pick("val_bpc", "unigram_bpc", "bigram_bpc"),
                       {TABLE_ROW: char_lm_cell, r"`(?P<text>val bpc [^`\n]*)`": char_lm_last_line}),
    "sentiment": Example({"default": (), "seed 1": ("--seed", "1"), "seed 2": ("--seed", "2")},
                         pick("test_acc", "bow_acc"), {TABLE_ROW: sentiment_cell}),
    "seq2seq": Example({"default": (), "seed 1": ("--seed", "1"), "seed 2": ("--seed", "2")}, seq2seq_figures,
                       {TABLE_ROW: seq2seq_cell}),
    "binary_sequences": Example({"default": (), "more seeds": BINARY_MORE_SEEDS}, binary_figures,
                                {TABLE_ROW: binary_cell}),
    "vanishing_gradients": Example({"default": ()}, vanishing_figures, {TABLE_ROW: vanishing_cell}),
    "curvature": Example({"default": ()}, curvature_figures, {TABLE_ROW: curvature_cell}),
    "custom_cell": Example({"default": ()}, custom_cell_figures, {TABLE_ROW: custom_cell_cell}),
}
ALL_RESULTS = {r"nothing else running \(load average (?P<text>[^)\n]*), the examples. own\)": load_range}  # slots written from every result


# ---- the README ----------------------------------------------------------------------------------

def load_results():
    return {name: json.loads((RESULTS / f"{name}.json").read_text()) for name in EXAMPLES
            if (RESULTS / f"{name}.json").exists()}


def render(text, results):
    """`text` (the README) with every example's figures written from `results` (name -> its results file)."""
    for name, example in EXAMPLES.items():
        if name not in results:
            raise ValueError(f"no results for {name}: run python tools/readme_figures.py --run {name}")
        runs = results[name]["runs"]
        for label, args in example.runs.items():
            if label not in runs or runs[label]["command"] != command(name, args):
                raise ValueError(f"examples/results/{name}.json has no run of `{command(name, args)}` ({label}): "
                                 f"run python tools/readme_figures.py --run {name}")
        for slot, write in example.slots.items():
            pattern = (rf"^\| `{name}\.py`[^\n]*\| (?P<text>[^|\n]*) \|$" if slot == TABLE_ROW else slot)
            text = _write(text, pattern, write(runs), f"{name}'s {slot!r}")
    for pattern, write in ALL_RESULTS.items():
        text = _write(text, pattern, write(results), repr(pattern))
    return text


def _write(text, pattern, value, what):
    """`text` with the group `text` of the one match of `pattern` replaced by `value`."""
    found = list(re.finditer(pattern, text, re.M))
    if len(found) != 1:
        raise ValueError(f"README.md: {len(found)} places for {what}, expected exactly one")
    start, end = found[0].span("text")
    return text[:start] + value + text[end:]


# ---- measuring -----------------------------------------------------------------------------------

def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name):
    """Run each of `name`'s commands, one after the other, and keep its figures; returns the results."""
    example, runs = EXAMPLES[name], {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for label, args in example.runs.items():
        with tempfile.TemporaryDirectory() as out:
            print(f"\n$ {command(name, args)}", flush=True)
            load, start, cpu = os.getloadavg()[0], time.perf_counter(), _children_cpu()
            subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), *args, "--no-progress",
                            "--out", out], cwd=ROOT, env=env, check=True)
            seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
            metrics = json.loads((Path(out) / "metrics.json").read_text())
        runs[label] = dict(command=command(name, args), figures=example.figures(metrics), cpu_seconds=round(cpu, 1),
                           seconds=round(seconds, 1), load_average=[round(load, 2), round(os.getloadavg()[0], 2)])
    return dict(runs=runs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs="+", metavar="NAME", choices=[*EXAMPLES, "all"],
                   help="re-run these examples' commands first (all: every example)")
    args = p.parse_args(argv)
    for name in EXAMPLES if args.run and "all" in args.run else args.run or ():
        results = measure(name)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {RESULTS / f'{name}.json'}")
    text = README.read_text()
    updated = render(text, load_results())
    README.write_text(updated)
    print("README.md: " + ("figures rewritten" if updated != text else "figures already up to date"))


if __name__ == "__main__":
    main()
