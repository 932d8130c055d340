"""Critique stats (readable verdicts, lengths, label spread) and the trivial baselines."""

from __future__ import annotations

from deepcritic.critique_stats import critique_stats, trivial_baselines

ANSWERED = "**Critique of Step 1**\nok\n\n**Judgement**: \\boxed{1}\n\n**Answer**: \\boxed{-1}"


def _row(text: str, label: int, prediction: int | None, finish: str = "stop") -> dict:
    return {"outputs": [text], "finish_reasons": [finish], "completion_tokens": 10,
            "label": label, "prediction": prediction}  # fmt: skip


def test_stats_separate_strict_answers_from_official_fallback_reads() -> None:
    rows = [
        _row(ANSWERED, -1, -1),
        _row("the last box is \\boxed{2}", 1, 1),  # official reading only: no **Answer**: marker
        _row("**Critique of Step 1**\nhmm", 0, None, finish="length"),
        _row("**Answer**: \\boxed{3}", 2, 2),
    ]
    st = critique_stats(rows)
    assert st.n == 4 and st.answer_rate == 50.0 and st.parse_rate == 75.0
    assert st.truncation_rate == 25.0 and st.mean_tokens == 10.0
    assert st.histogram == {"-1": 1, "2": 1, "3": 1, "unreadable": 1}
    assert st.label_histogram == {"-1": 1, "1": 1, "2": 1, "3": 1}
    assert set(st.scalars()) == {"n", "answer_rate", "parse_rate", "truncation_rate", "mean_tokens"}


def test_trivial_baselines_score_zero_f1_but_show_one_sided_accuracy() -> None:
    labels = [-1, -1, 1, 1, 3]
    base = trivial_baselines(labels)
    assert set(base) == {"always_-1", "always_step_2"}
    assert base["always_-1"].acc_correct == 100.0 and base["always_-1"].f1 == 0.0
    assert round(base["always_step_2"].acc_error, 1) == 66.7 and base["always_step_2"].f1 == 0.0
    assert trivial_baselines([-1, -1])["always_step_1"].n == 2  # no erroneous item at all
