"""lamina's report sections, in report order: each a renderer ``(RunFolder) -> Section | None``
registered with :func:`register_section` (see ``html.py`` for the contract and the helpers).

A section that does not apply to the run's task returns None: a language model's report has its
samples, next-character probes and attention maps; a classifier's its hierarchy, attributions
and confusion matrix (its mistakes as images or as text, and token attributions for a text model).
"""

from __future__ import annotations

from typing import Any

from lamina.reporting import figures
from lamina.reporting.html import (
    RunFolder,
    Section,
    class_names,
    duration,
    esc,
    figures_block,
    image,
    note,
    para,
    pct,
    register_section,
    run_task,
    table,
)

LM = "language-model"
MAX_ATTENTION_BLOCKS = 12  # blocks whose attention maps are drawn at most
MAX_SAMPLE_CHARS = 2000


@register_section
def section_summary(run: RunFolder) -> Section:
    s, cfg = run.summary, run.config
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    arch = (run.json("model.json") or {}).get("arch") or {}
    shape = ", ".join(f"{k} {arch[k]}" for k in ("width", "depth", "act", "norm") if arch.get(k) not in (None, ""))
    params = f"{s['params']:,}" if isinstance(s.get("params"), int) else "—"
    if run_task(run) == LM:
        headline = ("validation bits per character", _num(s.get("val_bpc"), 3))
        examples = (f"{s.get('train_examples', '—')} training tokens, {s.get('val_tokens', '—')} validation "
                    f"tokens, windows of {s.get('context', data.get('context', '—'))}")
        loss = ("validation loss", f"{_num(s.get('val_loss'), 4)} nats per token")
    elif run_task(run) == "vae":
        headline = ("test negative ELBO", f"{_num(s.get('test_nelbo'), 1)} nats")
        examples = f"{s.get('train_examples', '—')} train, {s.get('test_examples', '—')} test"
        loss = ("test bits per dimension", _num(s.get("test_bpd"), 4))
    elif run_task(run) == "diffusion":
        headline = ("FD-lamina", f"{_num(s.get('fd_lamina'), 2)} (real: {_num(s.get('fd_train_test'), 2)})")
        examples = f"{s.get('train_examples', '—')} train, {s.get('test_examples', '—')} test"
        loss = ("test loss", _num(s.get("test_loss"), 4))
    elif run_task(run) == "dqn":  # a game run of lamina play
        headline = ("evaluation return", f"{_num(s.get('eval_return_mean'), 2)} ± {_num(s.get('eval_return_std'), 2)}")
        examples = f"{_num(s.get('frames'), 0)} frames, {_num(s.get('episodes'), 0)} training episodes"
        loss = ("updates, frames per second", f"{_num(s.get('updates'), 0)}, {_num(s.get('fps'), 0)}")
    elif "test_rmse" in s:  # a regression
        headline = ("test RMSE", _num(s.get("test_rmse"), 4))
        examples = f"{s.get('train_examples', '—')} train, {s.get('test_examples', '—')} test"
        loss = ("test MAE, R²", f"{_num(s.get('test_mae'), 4)}, {_num(s.get('test_r2'), 4)}")
    else:
        headline = ("test accuracy", pct(s.get("test_accuracy"), 2))
        examples = f"{s.get('train_examples', '—')} train, {s.get('test_examples', '—')} test"
        loss = ("test loss", _num(s.get("test_loss"), 4))
        if isinstance(s.get("test_macro_f1"), int | float):
            loss = ("test loss, macro-F1", f"{_num(s.get('test_loss'), 4)}, {_num(s['test_macro_f1'], 4)}")
    cards = [headline, ("parameters", params), ("training time", duration(s.get("train_seconds"))),
             ("epochs", s.get("epochs", "—"))]
    recipe = ", ".join(f"{k} {train[k]}" for k in ("optimizer", "lr", "schedule") if k in train)
    recipe = f"{recipe}, batch {data.get('batch_size', '—')}" if recipe else "—"
    steps = f"{s.get('steps', '—')} steps"
    if run_task(run) == "dqn":  # a game run's recipe is its rl section, its steps are updates
        rl = cfg.get("rl") or {}
        recipe = "Double DQN, " + ", ".join(f"{k} {rl[k]}" for k in ("lr", "batch_size", "gamma", "n_step", "envs")
                                            if k in rl)
        steps = f"{s.get('updates', '—')} updates"
    rows: list[tuple[str, Any]] = [
        ("dataset", s.get("dataset") or data.get("name", "—")),
        ("examples", examples),
        ("model", f"{s.get('model', '—')} ({shape})" if shape else s.get("model", "—")),
        loss,
        ("training time", f"{duration(s.get('train_seconds'))} ({steps})"),
        ("recipe", recipe),
        ("device", s.get("device", "—")), ("precision", s.get("precision", "—")),
        ("torch", s.get("torch", "—")), ("lamina", s.get("lamina", "—")),
        ("seed", s.get("seed", train.get("seed", "—"))),
    ]
    if s.get("stop_reason"):
        rows.append(("stopped early", s["stop_reason"]))
    notes = s.get("data_notes")
    if isinstance(notes, list) and notes:
        rows.insert(1, ("data", "; ".join(str(n) for n in notes)))
    ins = run.json("inspection/inspection.json")
    if isinstance(ins, dict):
        secs = ins.get("seconds") if isinstance(ins.get("seconds"), dict) else {}
        total = secs.get("total", sum(v for v in secs.values() if isinstance(v, int | float)))
        rows.append(("inspection", f"{duration(total)}, peak memory {ins.get('peak_rss_mb', '—')} MB, "
                                   f"at most {ins.get('max_examples', '—')} examples"))
        if isinstance(ins.get("skipped"), dict) and ins["skipped"]:
            rows.append(("not inspected", "; ".join(f"{k}: {v}" for k, v in ins["skipped"].items())))
    body = '<div class="cards">' + "".join(
        f"<div class=\"card\"><span>{esc(k)}</span><b>{esc(v)}</b></div>" for k, v in cards) + "</div>"
    body += table([(k, str(v)) for k, v in rows], kv=True)
    if not (run.path / "inspection").is_dir():
        body += note("No inspection yet: run lamina inspect on this folder to add what each layer learned.")
    return Section("summary", "Summary", body)


def _num(x: Any, digits: int) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) and not isinstance(x, bool) else "—"


@register_section
def section_learning_curves(run: RunFolder) -> Section | None:
    records = run.jsonl("metrics.jsonl")
    if not records:
        return None
    epochs = [r for r in records if r.get("kind") == "epoch"]
    lm = run_task(run) == LM
    metric, name = {LM: ("bpc", "bits per character"), "vae": ("kl", "KL term"),
                    "diffusion": ("loss", "loss"), "dqn": ("return", "episode return")}.get(
                        run_task(run), ("accuracy", "accuracy"))
    text = ""
    vals = [(r[f"val_{metric}"], r.get("epoch")) for r in epochs if isinstance(r.get(f"val_{metric}"), float)]
    if vals:
        higher = metric in ("accuracy", "return")
        best, at = (max if higher else min)(vals, key=lambda v: v[0])
        shown = pct(best) if metric == "accuracy" else f"{best:.3f}"
        text = f"Best validation {name} {shown} after epoch {at} of {len(epochs)}."
    fig = image(figures.learning_curves(records, metric=metric, label=name), f"loss and {name} against training step",
                "Grey: every logged training step; dots: epoch means on the training and validation sets."
                + (" Loss in nats per token; bits per character: lower is better." if lm else ""))
    return Section("learning-curves", "Learning curves", para(text) + figures_block(fig))


@register_section
def section_samples(run: RunFolder) -> Section | None:
    samples = run.jsonl("samples.jsonl") if run_task(run) == LM else None
    if not samples:
        return None
    body = para("Text the model wrote from scratch at the end of these epochs (temperature 0.8, top 40 tokens, "
                "the same seed each time), so the samples show what it learned as training went on.")
    for r in samples:
        text = str(r.get("text", ""))
        cut = "…" if len(text) > MAX_SAMPLE_CHARS else ""
        body += (f'<p class="sub">epoch {esc(r.get("epoch", "?"))}, step {esc(r.get("step", "?"))}</p>'
                 f'<pre class="text">{esc(text[:MAX_SAMPLE_CHARS] + cut)}</pre>')
    return Section("samples", "Samples written during training", body)


@register_section
def section_next_character(run: RunFolder) -> Section | None:
    probes = run.json("inspection/probes.json") if run_task(run) == LM else None
    if not isinstance(probes, dict) or not probes.get("stages"):
        return None
    rows = sorted(probes["stages"], key=lambda p: p["depth"])
    base = probes.get("baseline")
    best = max(rows, key=lambda p: float(p["accuracy"]))
    classes = ", ".join(str(c) for c in probes.get("classes", []))
    text = (f"A linear probe on the features of each stage, position by position, predicts the class of the "
            f"character that comes next ({classes}). The best stage is {best['stage']}, "
            f"{pct(best['accuracy'])} on held-out positions of the validation tail")
    if isinstance(base, int | float):
        text += f"; always answering the most common class ({probes.get('majority', '?')}) scores {pct(base)}."
    else:
        text += "."
    n = probes.get("positions") or {}
    fig = image(figures.probe_accuracy(rows, baseline=base if isinstance(base, int | float) else None,
                                       title="Next-character class by depth"),
                "next-character-class probe accuracy against depth",
                f"Fit on {n.get('train', '?')} positions of the training text, scored on {n.get('test', '?')} "
                "of the validation tail. Dashed: the majority class.")
    table_rows = [(p["stage"], pct(p["accuracy"]),
                   f"{100.0 * (float(p['accuracy']) - float(base)):+.1f}" if isinstance(base, int | float) else "—")
                  for p in rows]
    return Section("next-character", "What each block learned", para(text) + figures_block(fig)
                   + table(table_rows, ["stage", "probe accuracy", "points over the majority class"]))


@register_section
def section_attention(run: RunFolder) -> Section | None:
    doc = run.json("inspection/attention.json") if run_task(run) == LM else None
    if not isinstance(doc, dict) or not doc.get("stages"):
        return None
    tokens = [str(t) for t in doc.get("tokens", [])]
    stages = doc["stages"]
    body = para(f"The attention weights of every head on the first {len(tokens)} tokens of the validation tail:")
    body += f'<pre class="text">{esc("".join(tokens))}</pre>'
    figs = [image(figures.attention_heads(st["stage"], tokens, st["heads"]), f"attention maps of {st['stage']}",
                  "Row: a token; column: a token it attends to. Each row spreads one token's attention over "
                  "itself and the tokens before it "
                  "(colour: square root of the weight; · is a space, ↵ a new line).")
            for st in stages[:MAX_ATTENTION_BLOCKS]]
    if len(stages) > MAX_ATTENTION_BLOCKS:
        body += note(f"Only the first {MAX_ATTENTION_BLOCKS} of {len(stages)} blocks are drawn.")
    return Section("attention", "Attention maps", body + figures_block(*figs))


def _probe_sentence(probes: list[dict[str, Any]]) -> str:
    probes = sorted(probes, key=lambda p: p["depth"])
    first, last = probes[0], probes[-1]
    if len(probes) == 1:
        return f"Only one stage was probed: {first['stage']} reaches {pct(first['accuracy'])}."
    gain = 100.0 * (float(last["accuracy"]) - float(first["accuracy"]))
    trend = ("so deeper features are more linearly separable" if gain > 1 else
             "so depth adds little linear separability here" if gain > -1 else "so separability falls with depth")
    return (f"A linear classifier on the first stage ({first['stage']}) reaches {pct(first['accuracy'])}; "
            f"on the deepest ({last['stage']}) {pct(last['accuracy'])}, {gain:+.1f} points, {trend}.")


@register_section
def section_hierarchy(run: RunFolder) -> Section | None:
    probes, cka = run.json("inspection/probes.json"), run.json("inspection/cka.json")
    if not isinstance(probes, list):  # a language model's probes (a mapping) have their own section
        probes = None
    filt, top = run.json("inspection/filters.json"), run.json("inspection/top_activations.json")
    if not any(x is not None for x in (probes, cka, filt, top)):
        return None
    texts, figs = [], []
    if probes:
        texts.append(_probe_sentence(probes))
        figs.append(image(figures.probe_accuracy(probes), "linear probe accuracy against stage depth",
                          "Held-out accuracy of a linear classifier on each stage's pooled features."))
    extra = ""
    if cka:
        figs.append(image(figures.cka_heatmap(cka["stages"], cka["matrix"]), "CKA heatmap between stages",
                          "Linear CKA: near 1, two stages represent the test examples alike; near 0, unrelated."))
        if cka.get("same_stage"):
            other = cka.get("other_run", "a run with another seed")
            extra = para(f"CKA of each stage with the same stage of {other}:") + table(
                [(st, round(float(v), 3)) for st, v in zip(cka["stages"], cka["same_stage"], strict=False)],
                ["stage", "CKA"])
    if filt:
        figs.append(image(figures.filters_grid(filt["shape"], filt["values"]), "first-layer convolution filters",
                          "Weights of the first layer, each filter scaled on its own (grey = 0)."))
    if top:
        png = figures.top_activations(top)
        if png is not None:
            figs.append(image(png, f"test examples that most activate channels of {top.get('stage', '')}",
                              "Each row: the test examples that most activate one channel.", wide=True))
    body = "".join(para(t) for t in texts) + figures_block(*figs) + extra
    return Section("hierarchy", "Hierarchy: what each stage learned", body)


@register_section
def section_activations(run: RunFolder) -> Section | None:
    stats = run.json("inspection/activations.json")
    if not stats:
        return None
    rows = [(st, round(float(v["mean"]), 4), round(float(v["std"]), 4), pct(v.get("dead_fraction")),
             pct(v["saturation"]) if v.get("saturation") is not None else "—") for st, v in stats.items()]
    fig = image(figures.activation_stats(stats), "dead and saturated units per stage",
                "Dead: units that never activate on the sampled test examples.")
    return Section("activations", "Activations", figures_block(fig) +
                   table(rows, ["stage", "mean", "std", "dead", "saturated"]))


@register_section
def section_gradient_flow(run: RunFolder) -> Section | None:
    records = run.jsonl("gradients.jsonl") or run.jsonl("inspection/gradients.jsonl")
    if not records:
        return None
    last = [x for x in records[-1]["layers"] if isinstance(x.get("grad_norm"), int | float)]
    text = ""
    if last:
        lo, hi = min(last, key=lambda x: x["grad_norm"]), max(last, key=lambda x: x["grad_norm"])
        text = (f"At the last recorded step ({records[-1]['step']}) the gradient norm ranges from "
                f"{lo['grad_norm']:.3g} ({lo['name']}) to {hi['grad_norm']:.3g} ({hi['name']}).")
    fig = image(figures.gradient_flow(records), "per-layer gradient norm and update ratio over steps",
                "Update / weight: how much one optimizer step changes each layer; about 1e-3 is typical.")
    return Section("gradient-flow", "Gradient flow", para(text) + figures_block(fig))


@register_section
def section_attributions(run: RunFolder) -> Section | None:
    attr = run.json("inspection/attributions.json")
    if not attr or not attr.get("methods"):
        return None
    fig = image(figures.attributions(attr, classes=class_names(run)), "input attributions: saliency, integrated gradients, Grad-CAM",
                "Rows: test examples, labelled true → predicted. Brighter: pixels that move the predicted "
                "class's score more.", wide=True)
    return Section("attributions", "Attributions", figures_block(fig))


def _attribution_colour(v: float) -> str:
    """Red for a token that raises the predicted class's score, blue for one that lowers it; ``v`` in [-1, 1]."""
    alpha = round(min(1.0, abs(v)) * 0.75, 3)
    return f"rgba(220,38,38,{alpha})" if v >= 0 else f"rgba(37,99,235,{alpha})"


@register_section
def section_token_attributions(run: RunFolder) -> Section | None:
    attr = run.json("inspection/attributions.json")
    if not isinstance(attr, dict) or attr.get("kind") != "tokens" or not attr.get("examples"):
        return None
    names = class_names(run) or []

    def lab(c: Any) -> str:
        return names[c] if isinstance(c, int) and 0 <= c < len(names) else str(c)

    body = para("Integrated gradients on the token embedding, from padding to each token: red tokens raise the "
                "score of the class the model predicted, blue ones lower it; the stronger the colour, the larger "
                "the token's share (scaled per example). Hover a token for its value.")
    for ex in attr["examples"]:
        values = [float(v) for v in ex["values"]]
        top = max((abs(v) for v in values), default=0.0) or 1.0
        spans = "".join(f'<span style="background:{_attribution_colour(v / top)}" title="{v:+.4f}">{esc(t)}</span>'
                        for t, v in zip(ex["tokens"], values, strict=True))
        body += (f'<p class="sub">test example {esc(ex.get("index", "?"))}: true {esc(lab(ex.get("label")))}, '
                 f'predicted {esc(lab(ex.get("predicted")))}</p><div class="tokens">{spans}</div>')
    return Section("token-attributions", "Token attributions", body)


@register_section
def section_confusion(run: RunFolder) -> Section | None:
    conf, classes = run.json("inspection/confusion.json"), class_names(run)
    matrix = conf["matrix"] if isinstance(conf, dict) else run.summary.get("confusion")
    mistakes = run.json("inspection/misclassified.json")
    if not matrix and not mistakes:
        return None
    names = classes or [str(i) for i in range(len(matrix or []))]
    intro, figs, tail = "", [], ""
    if matrix:
        off = [(v, i, j) for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and v > 0]
        if off:
            v, i, j = max(off)
            intro = para(f"Most frequent mistake: {names[i]} taken for {names[j]} "
                         f"({v} of {sum(matrix[i])} test examples of {names[i]}).")
        figs.append(image(figures.confusion_matrix(names, matrix), "confusion matrix",
                          "Each row: where the test examples of one true class went, in %."))
    if mistakes:
        png = figures.misclassified_grid(mistakes, classes=classes)
        if png is not None:
            figs.append(image(png, "most confidently misclassified test examples", wide=True))
        else:
            def lab(c: Any) -> str:
                return names[c] if isinstance(c, int) and 0 <= c < len(names) else str(c)

            if any("text" in m for m in mistakes):
                tail = para("The most confident mistakes:") + table(
                    [(m["index"], lab(m["true"]), lab(m["predicted"]), pct(m["confidence"]), _clip(m.get("text", "")))
                     for m in mistakes[:10]], ["test index", "true", "predicted", "confidence", "text"])
            else:
                tail = para("The most confident mistakes:") + table(
                    [(m["index"], lab(m["true"]), lab(m["predicted"]), pct(m["confidence"])) for m in mistakes[:10]],
                    ["test index", "true", "predicted", "confidence"])
    return Section("confusion", "Confusion & mistakes", intro + figures_block(*figs) + _per_class_table(run) + tail)


def _per_class_table(run: RunFolder) -> str:
    """Precision, recall, F1 and support per class (from summary.json), largest classes first: with
    unbalanced classes the accuracy hides the small ones, the macro-F1 does not."""
    rows = run.summary.get("per_class")
    if not isinstance(rows, dict) or not rows:
        return ""
    items = sorted(((str(k), v) for k, v in rows.items() if isinstance(v, dict)),
                   key=lambda kv: -int(kv[1].get("support", 0)))
    macro = run.summary.get("test_macro_f1")
    head = para(f"Per class on the test split (macro-F1 {_num(macro, 4)}: the unweighted mean of the F1 column).")
    return head + table([(k, v.get("support", "—"), pct(v.get("precision")), pct(v.get("recall")), _num(v.get("f1"), 3))
                         for k, v in items[:40]], ["class", "test examples", "precision", "recall", "F1"])


def _clip(text: Any, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
