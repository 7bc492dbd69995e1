"""`atmanrl saliency` / `atmanrl explain` and the heatmap."""

import json

from atmanrl.cli import main
from atmanrl.heatmap import heatmap_html

GOOD = {
    "id": "a",
    "prompt": "Tom has 3 apples and buys 4.",
    "reasoning": "Tom has 3. He buys 4, so 3 + 4 = 7.",
    "answer": "\n#### 7",
}


def write_traces(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_saliency_cli_scores_good_rows_and_skips_bad_ones(tiny_qwen_dir, tmp_path, capsys, caplog):
    bad_rows = [
        "{not json",
        {"id": "b", "prompt": "p", "reasoning": "r"},  # missing answer
        {"id": "c", "prompt": "p", "reasoning": "", "answer": "#### 1"},  # empty reasoning
        {"id": "d", "prompt": "p", "reasoning": "so", "answer": "no number"},  # no parseable answer
        {"id": "e", "prompt": ["p"], "reasoning": "so", "answer": "#### 1"},  # wrong type
    ]
    traces = write_traces(
        tmp_path / "t.jsonl", [GOOD, *bad_rows, GOOD | {"id": "f", "answer": "\nAnswer: b"}]
    )
    out, page = tmp_path / "s.jsonl", tmp_path / "s.html"
    rc = main(
        [
            "saliency",
            "--model",
            str(tiny_qwen_dir),
            "--input",
            str(traces),
            "--output",
            str(out),
            "--methods",
            "learned,attention_gradient,random",
            "--steps",
            "2",
            "--html",
            str(page),
        ]
    )
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "f"]
    r = rows[0]
    assert set(r["scores"]) == {"learned", "attention_gradient", "random"}
    assert all(len(s) == len(r["tokens"]) for s in r["scores"].values())
    assert "".join(GOOD["reasoning"][t["start"] : t["end"]] for t in r["tokens"]).replace(" ", "") == GOOD[
        "reasoning"
    ].replace(" ", "")
    assert {"salient_fraction", "concentration"} <= set(r["rewards"])
    captured = capsys.readouterr()
    assert "scored=2 skipped=5" in captured.out
    for msg in (
        "malformed JSON",
        "missing field 'answer'",
        "'reasoning' is empty",
        "no parseable answer",
        "'prompt' must be a string",
    ):
        assert msg in caplog.text
    assert page.read_text().count("class='card'") == 6


def test_saliency_cli_all_bad_is_an_error(tiny_qwen_dir, tmp_path, capsys):
    traces = write_traces(tmp_path / "t.jsonl", ["{oops"])
    rc = main(
        [
            "saliency",
            "--model",
            str(tiny_qwen_dir),
            "--input",
            str(traces),
            "--output",
            str(tmp_path / "o.jsonl"),
        ]
    )
    assert rc == 2 and "no usable rows" in capsys.readouterr().err


def test_unknown_method_lists_valid_ones(tiny_qwen_dir, tmp_path, capsys):
    traces = write_traces(tmp_path / "t.jsonl", [GOOD])
    rc = main(
        [
            "saliency",
            "--model",
            str(tiny_qwen_dir),
            "--input",
            str(traces),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--methods",
            "learned,magic",
        ]
    )
    assert rc == 2 and "attention_gradient" in capsys.readouterr().err


def test_heatmap_escapes_model_text_and_loads_nothing_external():
    from atmanrl.saliency import Saliency, Token

    evil = "<script>alert(1)</script>"
    sal = Saliency([Token(evil, 0, len(evil))], [0.5], -0.1, "learned", reasoning=evil + " 3 + 4")
    row = {"id": evil, "prompt": evil, "answer": "#### 7 " + evil, "saliency": {evil: sal}}
    page = heatmap_html([row])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page


def test_explain_end_to_end(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    # a random tiny model never writes an answer line; patch generation to return a well-formed one
    import atmanrl.generate as gen

    monkeypatch.setattr(
        gen, "sample", lambda model, tok, prompts, cfg, n, d="": ["2 + 3 = 5.\n#### 5"] * len(prompts)
    )
    page = tmp_path / "e.html"
    rc = main(
        [
            "explain",
            "--model",
            str(tiny_qwen_dir),
            "--task",
            "arith",
            "--limit",
            "2",
            "--html",
            str(page),
            "--saliency-steps",
            "2",
        ]
    )
    assert rc == 0
    assert "explained=2" in capsys.readouterr().out
    # 2 traces x the default methods (learned, attention_gradient, random: the same in every command)
    assert page.read_text().count("class='card'") == 6


def test_one_renderer_draws_every_heatmap_the_same_way():
    """`Saliency.show` (reports, notebooks) and the command heatmaps (`heatmap_html`) share one colour rule:
    strength |score| / max content |score|, red for positive, blue for negative, sinks unscaled and dotted."""
    from atmanrl.heatmap import heatmap_html, render_cot
    from atmanrl.saliency import Saliency, Token

    reasoning = "So 6 * 7 = 42."
    tokens = [
        Token("So", 0, 2),
        Token(" 6", 2, 4),
        Token(" *", 4, 6),
        Token(" 42", 10, 13),
        Token(".", 13, 14),
    ]
    scores = [0.1, -0.5, 0.3, 1.0, 9.0]
    sal = Saliency(tokens, scores, -0.1, "learned", reasoning=reasoning)
    fragment = render_cot(reasoning, tokens, scores)
    assert fragment in sal.show()
    row = {"id": "x", "prompt": "p", "answer": "42", "saliency": {"learned": sal}}
    assert fragment in heatmap_html([row])
    assert "rgba(200,30,30,1.00)" in fragment  # " 42": the largest content score
    assert "rgba(40,90,220,0.50)" in fragment  # " 6": negative, half of it
    assert 'class="sink" title="9"' in fragment  # ".": a sink, not scaled although its score is the largest
